//! `accounts`: one row per account, its owner, balance, status and the version it reflects.

use std::collections::HashMap;

use cqrs_core::{BoxError, RecordedEvent};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, IntoArguments, Type};

use super::bigint;
use crate::domain::account::{Account, AccountEvent};

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, \
     owner TEXT NOT NULL, balance BIGINT NOT NULL, status TEXT NOT NULL, version BIGINT NOT NULL)";

/// An account opened within the batch: its whole row.
const UPSERT: &str = "INSERT INTO accounts (id, owner, balance, status, version) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, \
     balance = excluded.balance, status = excluded.status, version = excluded.version \
     WHERE accounts.version < excluded.version";

/// An account opened before the batch: what changed (NULL leaves a column as it is).
const UPDATE: &str = "UPDATE accounts SET balance = COALESCE($1, balance), \
     status = COALESCE($2, status), version = $3 WHERE id = $4 AND version < $3";

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

/// What a batch does to one account.
#[derive(Debug, Default)]
struct Change {
    opened_by: Option<String>,
    balance: Option<u64>,
    closed: bool,
    version: u64,
}

/// Writes what `events` do to `accounts`: one statement per account touched (its net
/// change), which makes replays fast. A single event is a batch of one.
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
    // NOTE: kept in order of first appearance, so that a batch's SQL is deterministic.
    let mut order: Vec<&str> = Vec::new();
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
        c.version = event.stream_version;
        match e.payload {
            AccountEvent::Opened { owner } => c.opened_by = Some(owner),
            AccountEvent::Deposited { balance, .. }
            | AccountEvent::Withdrawn { balance, .. }
            | AccountEvent::TransferDebited { balance, .. }
            | AccountEvent::TransferCredited { balance, .. }
            | AccountEvent::TransferRefunded { balance, .. } => c.balance = Some(balance),
            AccountEvent::TransferSettled { .. } => {}
            AccountEvent::Closed => c.closed = true,
        }
    }
    for id in order {
        let c = &changes[id];
        let version = bigint(c.version)?;
        let query = match &c.opened_by {
            Some(owner) => sqlx::query(UPSERT)
                .bind(id.to_owned())
                .bind(owner.clone())
                .bind(bigint(c.balance.unwrap_or(0))?)
                .bind(if c.closed { "closed" } else { "open" }.to_owned())
                .bind(version),
            None => sqlx::query(UPDATE)
                .bind(c.balance.map(bigint).transpose()?)
                .bind(c.closed.then(|| "closed".to_owned()))
                .bind(version)
                .bind(id.to_owned()),
        };
        query.execute(&mut *conn).await?;
    }
    Ok(())
}
