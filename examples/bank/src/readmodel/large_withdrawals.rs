//! `large_withdrawals`: the choreographed reaction, a flag raised on every large withdrawal.

use chrono::SecondsFormat;
use cqrs_core::{BoxError, RecordedEvent};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::bigint;
use crate::domain::account::{Account, AccountEvent};

/// Withdrawals of at least this many minor units are flagged (10,000.00).
pub const LARGE_WITHDRAWAL: u64 = 1_000_000;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS large_withdrawals (\
     account_id TEXT NOT NULL, version BIGINT NOT NULL, amount BIGINT NOT NULL, \
     position BIGINT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (account_id, version))";

/// A flag per event: the key (account, version) makes a repeat a no-op.
const FLAG: &str = "INSERT INTO large_withdrawals (account_id, version, amount, position, recorded_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, version) DO NOTHING";

/// A row of `large_withdrawals`, the flag raised on each large withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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

/// Flags `event` if it is a large withdrawal.
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
{
    let Some(e) = event.decode_for::<Account>()? else {
        return Ok(());
    };
    let AccountEvent::Withdrawn { amount, .. } = e.payload else {
        return Ok(());
    };
    if amount < LARGE_WITHDRAWAL {
        return Ok(());
    }
    sqlx::query(FLAG)
        .bind(event.stream.id.clone())
        .bind(bigint(event.stream_version)?)
        .bind(bigint(amount)?)
        .bind(bigint(event.position())?)
        .bind(
            event
                .recorded_at
                .to_rfc3339_opts(SecondsFormat::Micros, true),
        )
        .execute(&mut *conn)
        .await?;
    Ok(())
}
