//! Rows of the read models, as the API returns them.

use serde::Serialize;

/// A row of `accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// The account id.
    pub id: String,
    /// The owner's name.
    pub owner: String,
    /// Available balance in minor units.
    pub balance: i64,
    /// `open` or `closed`.
    pub status: String,
    /// The account stream's version this row reflects.
    pub version: i64,
}

/// A line of `statement`: one movement and the balance after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementLine {
    /// The account stream's version of the movement.
    pub version: i64,
    /// Its global position.
    pub position: i64,
    /// `deposit`, `withdrawal`, `transfer_out`, `transfer_in` or `refund`.
    pub kind: String,
    /// Signed amount in minor units (negative when money left).
    pub amount: i64,
    /// The balance after it.
    pub balance: i64,
    /// The transfer it belongs to, if any.
    pub transfer_id: Option<String>,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
}

/// A row of `transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    /// The transfer id.
    pub id: String,
    /// The source account.
    pub from: String,
    /// The target account.
    pub to: String,
    /// Amount in minor units.
    pub amount: i64,
    /// `started`, `debited`, `credit_failed`, `completed` or `failed`.
    pub status: String,
    /// Why it failed, when it did.
    pub reason: Option<String>,
    /// The transfer stream's version this row reflects.
    pub version: i64,
}

/// A row of `large_withdrawals`, the flag raised on each large withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LargeWithdrawalView {
    /// The account.
    pub account_id: String,
    /// The account stream's version of the withdrawal.
    pub version: i64,
    /// Amount in minor units.
    pub amount: i64,
    /// Its global position.
    pub position: i64,
    /// When it was recorded (RFC 3339).
    pub recorded_at: String,
}

pub(crate) type AccountRow = (String, String, i64, String, i64);
pub(crate) type StatementRow = (i64, i64, String, i64, i64, Option<String>, String);
pub(crate) type TransferRow = (String, String, String, i64, String, Option<String>, i64);
pub(crate) type LargeWithdrawalRow = (String, i64, i64, i64, String);

impl From<AccountRow> for AccountView {
    fn from((id, owner, balance, status, version): AccountRow) -> Self {
        AccountView {
            id,
            owner,
            balance,
            status,
            version,
        }
    }
}

impl From<StatementRow> for StatementLine {
    fn from(
        (version, position, kind, amount, balance, transfer_id, recorded_at): StatementRow,
    ) -> Self {
        StatementLine {
            version,
            position,
            kind,
            amount,
            balance,
            transfer_id,
            recorded_at,
        }
    }
}

impl From<TransferRow> for TransferView {
    fn from((id, from, to, amount, status, reason, version): TransferRow) -> Self {
        TransferView {
            id,
            from,
            to,
            amount,
            status,
            reason,
            version,
        }
    }
}

impl From<LargeWithdrawalRow> for LargeWithdrawalView {
    fn from((account_id, version, amount, position, recorded_at): LargeWithdrawalRow) -> Self {
        LargeWithdrawalView {
            account_id,
            version,
            amount,
            position,
            recorded_at,
        }
    }
}
