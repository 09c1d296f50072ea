//! Transactional projectors: the read model and the checkpoint commit together.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{BoxError, Cursor, RecordedEvent, Result, Subscriber};
use sqlx::{PgConnection, PgPool};

use crate::checkpoint;
use crate::lease::PgLeases;
use crate::rows::to_i64;

/// A projector whose read model lives in PostgreSQL: its handlers run in the transaction that
/// also writes its checkpoint. Run it with [`PgTransactional`].
///
/// ```no_run
/// use cqrs_core::{BoxError, RecordedEvent};
/// use cqrs_postgres::PgProjector;
/// use sqlx::PgConnection;
///
/// #[derive(Debug)]
/// struct EventCounts;
///
/// #[async_trait::async_trait]
/// impl PgProjector for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///     async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO event_counts (event_type, n) VALUES ($1, 1) \
///                      ON CONFLICT (event_type) DO UPDATE SET n = event_counts.n + 1")
///             .bind(&event.event_type)
///             .execute(tx)
///             .await?;
///         Ok(())
///     }
///     async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("DELETE FROM event_counts").execute(tx).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait PgProjector: Send + Sync {
    /// The stable name, the key of the checkpoint, the dead letters and the lease.
    fn name(&self) -> &str;
    /// Handles one event inside the open transaction `tx`.
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError>;
    /// Handles events in order inside `tx`; by default one by one. Override it to write a batch
    /// with fewer statements in fast replays.
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        for e in events {
            self.handle(tx, e).await?;
        }
        Ok(())
    }
    /// Empties the read model inside `tx` before a rebuild. The default does nothing.
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
}

#[async_trait]
impl<P: PgProjector + ?Sized> PgProjector for Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        (**self).handle(tx, event).await
    }
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        (**self).handle_batch(tx, events).await
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        (**self).reset(tx).await
    }
}

/// Never moves a checkpoint backwards: the runner may hand a parked event back with the
/// current cursor, or an empty batch.
const SAVE: &str = "INSERT INTO checkpoints (name, tx, position) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
     SET tx = EXCLUDED.tx, position = EXCLUDED.position, updated_at = now() \
     WHERE (checkpoints.tx, checkpoints.position) < (EXCLUDED.tx, EXCLUDED.position)";

/// [`SAVE`] only while the lease row still has our epoch, locking the row against a takeover
/// until the transaction ends; returns 0 rows when fenced out.
const SAVE_FENCED: &str = "WITH fence AS (SELECT epoch FROM leases WHERE name = $1 AND epoch = $4 FOR SHARE), \
     up AS (INSERT INTO checkpoints (name, tx, position) SELECT $1, $2, $3 FROM fence ON CONFLICT (name) DO UPDATE \
     SET tx = EXCLUDED.tx, position = EXCLUDED.position, updated_at = now() \
     WHERE (checkpoints.tx, checkpoints.position) < (EXCLUDED.tx, EXCLUDED.position)) \
     SELECT epoch FROM fence";

/// Runs a [`PgProjector`] as a [`Subscriber`]: each batch is handled and checkpointed in one
/// transaction, so a crash at any point neither loses nor repeats an effect.
#[derive(Debug)]
pub struct PgTransactional<P> {
    pool: PgPool,
    projector: P,
    fence: Option<PgLeases>,
}

impl<P: PgProjector> PgTransactional<P> {
    /// Runs `projector` with its read model and checkpoint in `pool`'s database (and schema).
    pub fn new(pool: PgPool, projector: P) -> Self {
        PgTransactional {
            pool,
            projector,
            fence: None,
        }
    }

    /// Commits a batch only while this process holds the projector's lease in `leases` (give
    /// the runner the same `leases`): a holder that lost the lease is fenced out.
    ///
    /// A batch fenced out is rolled back and reported to the runner as done, so that the
    /// runner does not retry and park its events: the new holder handles them from the saved
    /// checkpoint, and this runner stops at its next lease renewal. Until then its status may
    /// show those events as passed. Without the lease at all, batches fail.
    pub fn fenced_by(mut self, leases: PgLeases) -> Self {
        self.fence = Some(leases);
        self
    }

    /// The projector.
    pub fn projector(&self) -> &P {
        &self.projector
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn save(&self, conn: &mut PgConnection, to: Cursor) -> Result<(), BoxError> {
        let name = self.projector.name();
        let (tx, position) = (
            to_i64(to.tx, "cursor transaction id")?,
            to_i64(to.position, "cursor position")?,
        );
        match &self.fence {
            None => {
                sqlx::query(SAVE)
                    .bind(name)
                    .bind(tx)
                    .bind(position)
                    .execute(conn)
                    .await?;
            }
            Some(leases) => {
                let epoch = leases
                    .epoch(name)
                    .ok_or_else(|| format!("the lease on {name} is not held by this process"))?;
                let kept: Option<i64> = sqlx::query_scalar(SAVE_FENCED)
                    .bind(name)
                    .bind(tx)
                    .bind(position)
                    .bind(epoch)
                    .fetch_optional(conn)
                    .await?;
                if kept.is_none() {
                    return Err(Box::new(FencedOut {
                        name: name.to_owned(),
                        epoch,
                    }));
                }
            }
        }
        Ok(())
    }
}

impl<P: PgProjector> PgTransactional<P> {
    /// One try of a batch; on failure, the error and whether it came from the COMMIT.
    async fn attempt(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), (BoxError, bool)> {
        let before = |e: BoxError| (e, false);
        if events.is_empty() {
            // NOTE: one statement commits on its own; no transaction needed to move the cursor.
            let mut conn = self.pool.acquire().await.map_err(|e| before(e.into()))?;
            return self.save(&mut conn, to).await.map_err(before);
        }
        let mut tx = self.pool.begin().await.map_err(|e| before(e.into()))?;
        self.projector
            .handle_batch(&mut tx, events)
            .await
            .map_err(before)?;
        self.save(&mut tx, to).await.map_err(before)?;
        tx.commit().await.map_err(|e| (e.into(), true))
    }
}

/// A fenced batch found that another process took the lease over.
#[derive(Debug)]
struct FencedOut {
    name: String,
    epoch: i64,
}

impl std::fmt::Display for FencedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the lease on {} was taken over (epoch {} is stale); batch rolled back",
            self.name, self.epoch
        )
    }
}

impl std::error::Error for FencedOut {}

impl<P: PgProjector> PgTransactional<P> {
    /// Ends a batch rolled back by the fence.
    ///
    /// NOTE: a normal batch is reported as done, though nothing of it was committed: the new
    /// holder handles these events from the saved checkpoint, and the runner finds the lease
    /// lost at its next renewal and stops. An error would make the runner retry the events and
    /// then park them one by one, each as a false dead letter. A parked event handed back
    /// (`to` past it) gets the error, so that it stays parked.
    fn fenced_out(
        &self,
        name: &str,
        epoch: i64,
        events: &[RecordedEvent],
        to: Cursor,
        err: BoxError,
    ) -> Result<(), BoxError> {
        if let Some(leases) = &self.fence {
            leases.forget(name, epoch);
        }
        if events.last().is_some_and(|e| e.cursor != to) {
            return Err(err);
        }
        tracing::warn!(
            subscriber = name,
            epoch,
            "lease taken over; batch rolled back and left to the new holder"
        );
        Ok(())
    }
}

/// Whether `err` (or its source) says the connection failed rather than the statement.
fn is_connection_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(sqlx_err) = e.downcast_ref::<sqlx::Error>() {
            return match sqlx_err {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => true,
                // Class 08: connection exception; 57P01-57P03: the server shuts the session down.
                sqlx::Error::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03")
                }),
                _ => false,
            };
        }
        cur = e.source();
    }
    false
}

#[async_trait]
impl<P: PgProjector> Subscriber for PgTransactional<P> {
    fn name(&self) -> &str {
        self.projector.name()
    }

    async fn checkpoint(&self) -> Result<Cursor> {
        checkpoint::load(&self.pool, self.projector.name()).await
    }

    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        // A dead pool connection (the server restarted, a session was terminated) must not
        // count as a failure of the handler, or the runner would park good events: retry on
        // another connection as long as nothing can have been committed. Each dead idle
        // connection fails once, so the bound covers a pool full of them.
        let retries = self.pool.options().get_max_connections() + 2;
        let mut attempt = 0;
        loop {
            let (err, at_commit) = match self.attempt(events, to).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if let Some((name, epoch)) = err
                .downcast_ref::<FencedOut>()
                .map(|f| (f.name.clone(), f.epoch))
            {
                return self.fenced_out(&name, epoch, events, to, err);
            }
            if attempt >= retries || !is_connection_error(&*err) {
                return Err(err);
            }
            // NOTE: a batch whose COMMIT got no answer may have committed. Its checkpoint tells:
            // the batch ends at `to` and starts past the saved checkpoint, so the checkpoint
            // reaches `to` only by this commit. A parked event handed back at the current
            // checkpoint cannot be told apart this way and is left to the runner.
            if at_commit {
                if events.last().is_none_or(|e| e.cursor != to) {
                    return Err(err);
                }
                match checkpoint::load(&self.pool, self.projector.name()).await {
                    Ok(saved) if saved >= to => return Ok(()),
                    Ok(_) => {}
                    Err(_) => return Err(err),
                }
            }
            attempt += 1;
            tracing::debug!(subscriber = self.projector.name(), error = %err, attempt, "connection lost; retrying the batch");
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(20)))).await;
        }
    }

    async fn reset(&self) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        self.projector.reset(&mut tx).await?;
        sqlx::query("DELETE FROM checkpoints WHERE name = $1")
            .bind(self.projector.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
