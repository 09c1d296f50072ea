//! `statement`: one line per movement of money, with the balance after it.

use chrono::SecondsFormat;
use cqrs_core::{BoxError, RecordedEvent};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::bigint;
use crate::domain::account::{Account, AccountEvent};

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS statement (account_id TEXT NOT NULL, \
     version BIGINT NOT NULL, position BIGINT NOT NULL, kind TEXT NOT NULL, amount BIGINT NOT NULL, \
     balance BIGINT NOT NULL, transfer_id TEXT, recorded_at TEXT NOT NULL, \
     PRIMARY KEY (account_id, version))";

/// A line per event: the key (account, version) makes a repeat a no-op.
const LINE: &str = "INSERT INTO statement \
     (account_id, version, position, kind, amount, balance, transfer_id, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, version) DO NOTHING";

/// A line of `statement`: one movement and the balance after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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

/// Writes the line `event` adds to its account's statement, if it moved money.
pub(crate) async fn project<DB>(
    conn: &mut DB::Connection,
    event: &RecordedEvent,
) -> Result<(), BoxError>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB>,
{
    let Some(e) = event.decode_for::<Account>()? else {
        return Ok(());
    };
    let (kind, amount, balance, transfer) = match e.payload {
        AccountEvent::Deposited { amount, balance } => ("deposit", bigint(amount)?, balance, None),
        AccountEvent::Withdrawn { amount, balance } => {
            ("withdrawal", -bigint(amount)?, balance, None)
        }
        AccountEvent::TransferDebited {
            transfer_id,
            amount,
            balance,
        } => ("transfer_out", -bigint(amount)?, balance, Some(transfer_id)),
        AccountEvent::TransferCredited {
            transfer_id,
            amount,
            balance,
        } => ("transfer_in", bigint(amount)?, balance, Some(transfer_id)),
        AccountEvent::TransferRefunded {
            transfer_id,
            amount,
            balance,
        } => ("refund", bigint(amount)?, balance, Some(transfer_id)),
        _ => return Ok(()),
    };
    sqlx::query(LINE)
        .bind(event.stream.id.clone())
        .bind(bigint(event.stream_version)?)
        .bind(bigint(event.position())?)
        .bind(kind.to_owned())
        .bind(amount)
        .bind(bigint(balance)?)
        .bind(transfer.map(|t| t.to_string()))
        .bind(
            event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        )
        .execute(&mut *conn)
        .await?;
    Ok(())
}
