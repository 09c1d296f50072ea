//! `transfers`: one row per transfer, its accounts, amount and how far it got.

use cqrs_core::{BoxError, RecordedEvent};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::bigint;
use crate::domain::transfer::{Transfer, TransferEvent};

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS transfers (id TEXT PRIMARY KEY, \
     from_account TEXT NOT NULL, to_account TEXT NOT NULL, amount BIGINT NOT NULL, \
     status TEXT NOT NULL, reason TEXT, version BIGINT NOT NULL)";

const STARTED: &str = "INSERT INTO transfers (id, from_account, to_account, amount, status, reason, version) \
     VALUES ($1, $2, $3, $4, 'started', NULL, $5) ON CONFLICT (id) DO NOTHING";

/// A later step, if newer than the row.
const STATUS: &str = "UPDATE transfers SET status = $1, reason = $2, version = $3 \
     WHERE id = $4 AND version < $3";

/// A row of `transfers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TransferView {
    /// The transfer id.
    pub id: String,
    /// The source account.
    #[sqlx(rename = "from_account")]
    pub from: String,
    /// The target account.
    #[sqlx(rename = "to_account")]
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

/// Writes what `event` does to its transfer's row.
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
    let Some(e) = event.decode_for::<Transfer>()? else {
        return Ok(());
    };
    let (id, version) = (event.stream.id.clone(), bigint(event.stream_version)?);
    let (status, reason) = match e.payload {
        TransferEvent::Started { from, to, amount } => {
            sqlx::query(STARTED)
                .bind(id)
                .bind(from.to_string())
                .bind(to.to_string())
                .bind(bigint(amount)?)
                .bind(version)
                .execute(&mut *conn)
                .await?;
            return Ok(());
        }
        TransferEvent::Debited => ("debited", None),
        TransferEvent::Completed => ("completed", None),
        TransferEvent::CreditFailed { reason } => ("credit_failed", Some(reason)),
        TransferEvent::Failed { reason, .. } => ("failed", Some(reason)),
    };
    sqlx::query(STATUS)
        .bind(status.to_owned())
        .bind(reason)
        .bind(version)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
