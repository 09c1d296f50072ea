//! Leases: a session advisory lock per subscriber name, and an epoch that fences out a holder
//! that lost its lock (see [`PgLeases`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{Lease, Leases, Result};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::error::backend;

/// How long a renewal may take before the lease counts as lost.
const RENEW_TIMEOUT: Duration = Duration::from_secs(5);

/// Takes the lock of `$1` (in the session's schema) without waiting.
const TRY_LOCK: &str = "SELECT pg_try_advisory_lock(hashtextextended('cqrs-lease:' || current_schema() || ':' || $1, 0))";

/// [`Leases`] on PostgreSQL advisory locks, one connection per held lease.
///
/// What it guarantees:
/// - At most one session holds the advisory lock of a name (per schema) at a time; the runner
///   runs a subscriber only while its lease renews, and a renewal runs a query on the lease's
///   connection, so a lost connection is noticed at the next batch.
/// - A holder that exits, crashes or is killed frees the lock at once (its session ends); one
///   whose host vanishes frees it when the server's TCP keepalive gives up (about 11 s: these
///   sessions set `tcp_keepalives_idle` 5 s, `tcp_keepalives_interval` 2 s, count 3). The next
///   runner takes over at its next try (the runner's `lease_interval`).
/// - Fencing, with [`PgTransactional::fenced_by`](crate::PgTransactional::fenced_by): each
///   acquisition increments the lease row's `epoch`, and a fenced batch writes its checkpoint
///   only while the row still has this holder's epoch, holding the row `FOR SHARE` until it
///   commits. A holder that lost its lock but is still working (a network partition, a long
///   pause) therefore cannot commit once the next holder has taken the lease: either its
///   commit comes first and the next holder starts from its checkpoint, or it meets the new
///   epoch and rolls back. Without fencing (a [`Checkpointed`](cqrs_core::Checkpointed)
///   projector) a stale holder may still handle a batch the new holder handles too
///   (at-least-once).
///
/// Cloning shares the leases; `fenced_by` takes a clone to learn the epochs of the leases this
/// process holds.
#[derive(Clone)]
pub struct PgLeases {
    inner: Arc<Shared>,
}

struct Shared {
    options: PgConnectOptions,
    holder: String,
    /// Epochs of the leases held through this value, by name.
    held: Mutex<HashMap<String, i64>>,
    /// A connection kept for the next attempt, so that waiting for a lease opens no new ones.
    spare: tokio::sync::Mutex<Option<PgConnection>>,
}

impl std::fmt::Debug for PgLeases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLeases")
            .field("holder", &self.inner.holder)
            .field("held", &self.inner.held)
            .finish()
    }
}

impl PgLeases {
    /// Leases in the schema of `pool`'s sessions; each held lease opens a connection of its own
    /// with the pool's connect options.
    pub fn new(pool: &PgPool) -> Self {
        let options = (*pool.connect_options())
            .clone()
            .application_name("cqrs-postgres-lease")
            // NOTE: the server's keepalive decides how fast a vanished holder's lock is freed
            // (the default waits two hours); these are per-session settings. The lock timeout
            // bounds the wait of a takeover for a stale holder's batch (it holds the lease row);
            // a takeover that times out drops its connection, lock included, and tries again.
            .options([
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
                ("lock_timeout", "5s"),
            ]);
        let holder = format!("pid {} / {}", std::process::id(), Uuid::new_v4());
        PgLeases {
            inner: Arc::new(Shared {
                options,
                holder,
                held: Mutex::new(HashMap::new()),
                spare: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// This process's holder name, as recorded in the `leases` table.
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// The epoch of the lease on `name` if this value holds it now.
    pub fn epoch(&self, name: &str) -> Option<i64> {
        self.inner
            .held
            .lock()
            .expect("lease map")
            .get(name)
            .copied()
    }

    /// Forgets the lease on `name` if it still has `epoch` (it was found taken over).
    pub(crate) fn forget(&self, name: &str, epoch: i64) {
        let mut held = self.inner.held.lock().expect("lease map");
        if held.get(name) == Some(&epoch) {
            held.remove(name);
        }
    }

    async fn lock(&self, conn: &mut PgConnection, name: &str) -> Result<Option<i64>> {
        let got: bool = sqlx::query_scalar(TRY_LOCK)
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
        if !got {
            return Ok(None);
        }
        let epoch: i64 = sqlx::query_scalar(
            "INSERT INTO leases (name, epoch, holder) VALUES ($1, 1, $2) ON CONFLICT (name) DO UPDATE \
             SET epoch = leases.epoch + 1, holder = EXCLUDED.holder, acquired_at = now() RETURNING epoch",
        )
        .bind(name)
        .bind(&self.inner.holder)
        .fetch_one(&mut *conn)
        .await
        .map_err(backend)?;
        Ok(Some(epoch))
    }
}

#[async_trait]
impl Leases for PgLeases {
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>> {
        let mut spare = self.inner.spare.lock().await;
        let mut conn = match spare.take() {
            Some(c) => c,
            None => PgConnection::connect_with(&self.inner.options)
                .await
                .map_err(backend)?,
        };
        // NOTE: on an error the connection is dropped, which also frees a lock it may have got.
        match self.lock(&mut conn, name).await? {
            None => {
                *spare = Some(conn);
                Ok(None)
            }
            Some(epoch) => {
                self.inner
                    .held
                    .lock()
                    .expect("lease map")
                    .insert(name.to_owned(), epoch);
                tracing::info!(lease = name, epoch, holder = %self.inner.holder, "lease acquired");
                Ok(Some(Box::new(PgLease {
                    conn: Some(conn),
                    name: name.to_owned(),
                    epoch,
                    shared: self.inner.clone(),
                })))
            }
        }
    }
}

/// A held lease: its connection holds the advisory lock.
struct PgLease {
    /// `None` once the lease is lost.
    conn: Option<PgConnection>,
    name: String,
    epoch: i64,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PgLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLease")
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .field("lost", &self.conn.is_none())
            .finish()
    }
}

impl PgLease {
    fn forget(&self) {
        let mut held = self.shared.held.lock().expect("lease map");
        if held.get(&self.name) == Some(&self.epoch) {
            held.remove(&self.name);
        }
    }
}

#[async_trait]
impl Lease for PgLease {
    async fn renew(&mut self) -> Result<bool> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(false);
        };
        // A live session still holds its lock; the epoch tells whether a takeover happened
        // anyway (the row is only bumped by a session that got the lock).
        let check = sqlx::query_scalar::<_, i64>("SELECT epoch FROM leases WHERE name = $1")
            .bind(&self.name)
            .fetch_optional(conn);
        let held = matches!(tokio::time::timeout(RENEW_TIMEOUT, check).await, Ok(Ok(Some(e))) if e == self.epoch);
        if !held {
            tracing::warn!(lease = %self.name, epoch = self.epoch, "lease lost");
            self.forget();
            self.conn = None;
        }
        Ok(held)
    }
}

impl Drop for PgLease {
    fn drop(&mut self) {
        self.forget();
        // NOTE: dropping the connection closes the session, which frees the advisory lock.
    }
}
