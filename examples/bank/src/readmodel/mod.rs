//! Read models: SQL tables kept by transactional projectors, one file per table.
//!
//! Each table's code is written once, generic over the sqlx database, and runs on PostgreSQL
//! and SQLite alike: `accounts.rs` says how an event changes a row of `accounts`, and
//! [`SqlProjection`] hands it the connection of the transaction that also moves the
//! checkpoint. The SQL is what both dialects agree on (`TEXT` and `BIGINT` columns, `$n`
//! parameters, `ON CONFLICT`, `RETURNING`).
//!
//! A row never goes backwards: each row keeps the stream version it reflects, and an update
//! applies only when its event is newer (`WHERE version < $v`), so an event delivered again or
//! late leaves the row as it is.

pub(crate) mod accounts;
pub(crate) mod large_withdrawals;
mod projection;
mod queries;
pub(crate) mod statement;
pub(crate) mod transfers;

pub use accounts::AccountView;
pub use large_withdrawals::{LARGE_WITHDRAWAL, LargeWithdrawalView};
pub use projection::SqlProjection;
pub use queries::Queries;
pub use statement::StatementLine;
pub use transfers::TransferView;

/// The read models the service keeps, each a projector of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModel {
    /// `accounts`: id, owner, balance, status, version.
    Accounts,
    /// `statement`: one line per movement with the balance after it.
    Statement,
    /// `transfers`: id, from, to, amount, status.
    Transfers,
    /// `large_withdrawals`: the choreographed reaction, a flag on every large withdrawal.
    LargeWithdrawals,
}

impl ReadModel {
    /// Every read model.
    pub const ALL: [ReadModel; 4] = [
        ReadModel::Accounts,
        ReadModel::Statement,
        ReadModel::Transfers,
        ReadModel::LargeWithdrawals,
    ];

    /// The projector's name (its checkpoint key), which is also its table's name.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Accounts => "accounts",
            ReadModel::Statement => "statement",
            ReadModel::Transfers => "transfers",
            ReadModel::LargeWithdrawals => "large_withdrawals",
        }
    }

    /// The read model called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The `CREATE TABLE IF NOT EXISTS` of its table.
    pub(crate) fn schema(self) -> &'static str {
        match self {
            ReadModel::Accounts => accounts::SCHEMA,
            ReadModel::Statement => statement::SCHEMA,
            ReadModel::Transfers => transfers::SCHEMA,
            ReadModel::LargeWithdrawals => large_withdrawals::SCHEMA,
        }
    }
}

/// A BIGINT column's value, from an unsigned event field.
pub(crate) fn bigint(n: u64) -> Result<i64, cqrs_core::BoxError> {
    Ok(i64::try_from(n).map_err(|_| format!("{n} does not fit a BIGINT column"))?)
}

#[cfg(test)]
mod tests;
