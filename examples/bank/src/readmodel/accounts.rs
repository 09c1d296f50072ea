//! `accounts`: one row per account, its owner, balance, status and the version it reflects.

use std::collections::HashMap;

use cqrs_core::{BoxError, RecordedEvent};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::bigint;
use crate::domain::account::{Account, AccountEvent};

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, \
     owner TEXT NOT NULL, balance BIGINT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL)";

/// A row of `accounts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
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

/// What a batch does to one account: `None` leaves a column as it is.
#[derive(Debug, Default)]
struct Change {
    owner: Option<String>,
    balance: Option<i64>,
    status: Option<String>,
    version: i64,
}

/// Writes what `events` do to `accounts`: one statement per account touched, its net change,
/// which makes replays fast. A single event is a batch of one.
pub(crate) async fn project<DB>(
    conn: &mut DB::Connection,
    events: &[RecordedEvent],
) -> Result<(), BoxError>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    Option<String>: for<'q> Encode<'q, DB>,
    Option<i64>: for<'q> Encode<'q, DB>,
{
    // NOTE: in order of first appearance, so that a batch's SQL is deterministic.
    let mut order = Vec::new();
    let mut changes: HashMap<&str, Change> = HashMap::new();
    for event in events {
        let Some(e) = event.decode_for::<Account>()? else {
            continue;
        };
        let id = event.stream.id.as_str();
        let c = changes.entry(id).or_insert_with(|| {
            order.push(id);
            Change::default()
        });
        c.version = bigint(event.stream_version)?;
        match e.payload {
            AccountEvent::Opened { owner } => c.owner = Some(owner),
            AccountEvent::Deposited { balance, .. }
            | AccountEvent::Withdrawn { balance, .. }
            | AccountEvent::TransferDebited { balance, .. }
            | AccountEvent::TransferCredited { balance, .. }
            | AccountEvent::TransferRefunded { balance, .. } => c.balance = Some(bigint(balance)?),
            AccountEvent::TransferSettled { .. } => {}
            AccountEvent::Closed => c.status = Some("closed".to_owned()),
        }
    }
    for id in order {
        let c = changes.remove(id).unwrap_or_default();
        let query = match c.owner {
            // Opened within the batch: the whole row.
            Some(owner) => sqlx::query(
                "INSERT INTO accounts (id, owner, balance, status, version) \
                 VALUES ($1, $2, COALESCE($3, 0), COALESCE($4, 'open'), $5) \
                 ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, \
                 balance = excluded.balance, status = excluded.status, version = excluded.version \
                 WHERE accounts.version < excluded.version",
            )
            .bind(id.to_owned())
            .bind(owner),
            // Opened before: what changed, if newer than the row.
            None => sqlx::query(
                "UPDATE accounts SET owner = COALESCE($2, owner), \
                 balance = COALESCE($3, balance), status = COALESCE($4, status), version = $5 \
                 WHERE id = $1 AND version < $5",
            )
            .bind(id.to_owned())
            .bind(None::<String>),
        };
        let query = query.bind(c.balance).bind(c.status).bind(c.version);
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
