//! Diagnostics: which subscriber is behind, and which transaction holds the all-stream back.

use chrono::{DateTime, Utc};
use cqrs_core::{Cursor, Result};
use serde::Serialize;
use sqlx::PgPool;

use crate::error::backend;
use crate::rows::to_u64;

/// A snapshot of the store's health, from [`diagnose`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PgDiagnostics {
    /// The highest position appended (committed) so far.
    pub head_position: u64,
    /// The all-stream watermark, as a full transaction id: the oldest transaction in flight that
    /// may write to this database (see the migration `events_watermark()`). Events written by
    /// this transaction or later ones are not readable by subscribers yet.
    pub watermark: u64,
    /// Committed events held back by the watermark (written by transactions at or above it).
    pub held_back: u64,
    /// Every subscriber with a checkpoint in this schema, furthest behind first.
    pub subscribers: Vec<SubscriberLag>,
    /// The in-flight writing transactions of the cluster, prepared (two-phase) ones included,
    /// oldest first (those of other databases, live or prepared, do not hold the watermark).
    /// While `held_back` is above zero, [`blocker`](Self::blocker) is the one holding every
    /// subscriber back: a prepared one holds it until `COMMIT PREPARED` or `ROLLBACK PREPARED`
    /// names its [`gid`](OpenTransaction::gid).
    pub open_transactions: Vec<OpenTransaction>,
    /// The lease rows of this schema.
    pub leases: Vec<LeaseHolder>,
}

impl PgDiagnostics {
    /// The transaction the watermark waits for, when events are held back.
    pub fn blocker(&self) -> Option<&OpenTransaction> {
        if self.held_back == 0 {
            None
        } else {
            self.open_transactions.iter().find(|t| t.holds_watermark)
        }
    }
}

/// How far one subscriber is.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SubscriberLag {
    /// The subscriber's name.
    pub name: String,
    /// Its checkpoint.
    pub cursor: Cursor,
    /// Committed events after its checkpoint (readable or held back).
    pub behind: u64,
    /// When its checkpoint last moved.
    pub updated_at: DateTime<Utc>,
}

/// A transaction that has written something and not ended: it holds the snapshot xmin.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct OpenTransaction {
    /// The backend's process id (`None` for a prepared transaction, which has no backend).
    pub pid: Option<i32>,
    /// The global id a prepared (two-phase) transaction was given by `PREPARE TRANSACTION`
    /// (`None` for a live one): `COMMIT PREPARED` or `ROLLBACK PREPARED` with it ends it.
    pub gid: Option<String>,
    /// The transaction id (32 bits, as `pg_stat_activity.backend_xid` shows it).
    pub xid: u64,
    /// Whether this is the transaction the watermark waits for.
    pub holds_watermark: bool,
    /// The database it runs in.
    pub database: Option<String>,
    /// Its `application_name`, or the gid of a prepared transaction.
    pub application: Option<String>,
    /// The session state (`active`, `idle in transaction`, ...).
    pub state: Option<String>,
    /// When the transaction started (or was prepared).
    pub since: Option<DateTime<Utc>>,
    /// Its current or last statement.
    pub query: Option<String>,
}

/// Who holds (or last held) a lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LeaseHolder {
    /// The lease (subscriber) name.
    pub name: String,
    /// The acquisition count, the fencing token.
    pub epoch: i64,
    /// The holder's description (process id and a random id).
    pub holder: String,
    /// When it was acquired.
    pub acquired_at: DateTime<Utc>,
}

type TxRow = (
    Option<i32>,
    Option<String>,
    i64,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
);

/// Reports the head, the watermark, the subscribers' checkpoints, the open transactions and the
/// leases of the schema of `pool`'s sessions.
///
/// Counting `behind` and `held_back` scans the events after each checkpoint: cheap for
/// subscribers that keep up, a full index scan for one starting from zero.
pub async fn diagnose(pool: &PgPool) -> Result<PgDiagnostics> {
    let (head, watermark, held_back): (Option<i64>, i64, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(position) FROM events), \
                events_watermark()::text::int8, \
                (SELECT COUNT(*) FROM events WHERE tx_id >= events_watermark())",
    )
    .fetch_one(pool)
    .await
    .map_err(backend)?;
    let subs: Vec<(String, i64, i64, i64, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.name, c.tx, c.position, \
                (SELECT COUNT(*) FROM events e WHERE (e.tx_id, e.position) > (c.tx::text::xid8, c.position)), \
                c.updated_at \
         FROM checkpoints c ORDER BY 4 DESC, c.name",
    )
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    // NOTE: prepared transactions of this database hold the watermark too, and have no backend.
    let txs: Vec<TxRow> = sqlx::query_as(
        "WITH t AS ( \
             SELECT pid, NULL AS gid, backend_xid::text::int8 AS xid, age(backend_xid) AS age, \
                    datname::text AS db, application_name AS app, state, xact_start AS since, query \
             FROM pg_stat_activity WHERE backend_xid IS NOT NULL \
             UNION ALL \
             SELECT NULL, gid, transaction::text::int8, age(transaction), database::text, gid, \
                    'prepared', prepared, NULL \
             FROM pg_prepared_xacts) \
         SELECT pid, gid, xid, xid = (events_watermark()::text::int8 % 4294967296), \
                db, app, state, since, query \
         FROM t ORDER BY age DESC",
    )
    .fetch_all(pool)
    .await
    .map_err(backend)?;
    let leases: Vec<(String, i64, String, DateTime<Utc>)> =
        sqlx::query_as("SELECT name, epoch, holder, acquired_at FROM leases ORDER BY name")
            .fetch_all(pool)
            .await
            .map_err(backend)?;
    Ok(PgDiagnostics {
        head_position: head.map_or(0, to_u64),
        watermark: to_u64(watermark),
        held_back: to_u64(held_back),
        subscribers: subs
            .into_iter()
            .map(|(name, tx, position, behind, updated_at)| SubscriberLag {
                name,
                cursor: Cursor::new(to_u64(tx), to_u64(position)),
                behind: to_u64(behind),
                updated_at,
            })
            .collect(),
        open_transactions: txs
            .into_iter()
            .map(
                |(pid, gid, xid, holds_watermark, database, application, state, since, query)| {
                    OpenTransaction {
                        pid,
                        gid,
                        xid: to_u64(xid),
                        holds_watermark,
                        database,
                        application,
                        state,
                        since,
                        query,
                    }
                },
            )
            .collect(),
        leases: leases
            .into_iter()
            .map(|(name, epoch, holder, acquired_at)| LeaseHolder {
                name,
                epoch,
                holder,
                acquired_at,
            })
            .collect(),
    })
}
