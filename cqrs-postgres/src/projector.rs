//! Transactional projectors: the read model and the checkpoint commit together.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{
    BoxError, Cursor, DeadLetter, DeadLetterStore, Error, RecordedEvent, Result, Subscriber,
    is_fenced_out,
};
use sqlx::{PgConnection, PgPool};
use tokio::sync::OnceCell;

use crate::error::is_connection_lost;
use crate::lease::PgLeases;
use crate::rows::to_i64;
use crate::{checkpoints, dead_letters};

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
///     async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, n BIGINT NOT NULL)")
///             .execute(tx)
///             .await?;
///         Ok(())
///     }
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
    /// Whether a parked event holds back the rest of its stream; see
    /// [`Subscriber::sequenced`](cqrs_core::Subscriber::sequenced). The default is `true`.
    fn sequenced(&self) -> bool {
        true
    }
    /// The segment of a partitioned projector this one is, if any; see
    /// [`Subscriber::segment`](cqrs_core::Subscriber::segment). The default is none.
    fn segment(&self) -> Option<cqrs_core::Segment> {
        None
    }
    /// Creates the read model's tables if they do not exist (`CREATE TABLE IF NOT EXISTS`),
    /// inside `tx`. Runs once per [`PgTransactional`], before anything else: the runner runs it
    /// when it starts, before it delivers the first event ([`cqrs_core::Subscriber::setup`];
    /// wait for it with [`cqrs_core::RunnerHandle::ready`]), and so does a replay. Processes
    /// starting together take turns (a transaction-scoped advisory lock per schema and
    /// projector), so `CREATE TABLE IF NOT EXISTS` never races itself. The default does
    /// nothing.
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        let _ = tx;
        Ok(())
    }
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
    async fn setup(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        (**self).setup(tx).await
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
/// current cursor, or an empty batch. Returns the transaction's id and the session's backend,
/// which tell the fate of a COMMIT that got no answer.
const SAVE: &str = "WITH up AS (INSERT INTO checkpoints (name, tx, position) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
     SET tx = EXCLUDED.tx, position = EXCLUDED.position, updated_at = now() \
     WHERE (checkpoints.tx, checkpoints.position) < (EXCLUDED.tx, EXCLUDED.position)) \
     SELECT pg_current_xact_id()::text, pg_backend_pid()";

/// [`SAVE`] only while the lease row still has our epoch, locking the row against a takeover
/// until the transaction ends; returns no row when fenced out.
const SAVE_FENCED: &str = "WITH fence AS (SELECT epoch FROM leases WHERE name = $1 AND epoch = $4 FOR SHARE), \
     up AS (INSERT INTO checkpoints (name, tx, position) SELECT $1, $2, $3 FROM fence ON CONFLICT (name) DO UPDATE \
     SET tx = EXCLUDED.tx, position = EXCLUDED.position, updated_at = now() \
     WHERE (checkpoints.tx, checkpoints.position) < (EXCLUDED.tx, EXCLUDED.position)) \
     SELECT pg_current_xact_id()::text, pg_backend_pid() FROM fence";

/// The id of a transaction and the backend running it.
type TxId = (String, i32);

/// Runs a [`PgProjector`] as a [`Subscriber`]: each batch is handled and checkpointed in one
/// transaction, so a crash at any point neither loses nor repeats an effect.
///
/// Its dead letters live in the `dead_letters` table of the same database (and schema): a
/// letter is parked in the transaction that moves the checkpoint past its event, and a retried
/// letter is removed in the transaction that applies its event. Give the runner that
/// database's [`PgDeadLetterStore`](crate::PgDeadLetterStore).
#[derive(Debug)]
pub struct PgTransactional<P> {
    pool: PgPool,
    projector: P,
    fence: Option<PgLeases>,
    ready: OnceCell<()>,
}

impl<P: PgProjector> PgTransactional<P> {
    /// Runs `projector` with its read model and checkpoint in `pool`'s database (and schema).
    pub fn new(pool: PgPool, projector: P) -> Self {
        PgTransactional {
            pool,
            projector,
            fence: None,
            ready: OnceCell::new(),
        }
    }

    /// Runs the projector's [`setup`](PgProjector::setup) in a transaction (once; later calls
    /// return at once). The runner calls it when it starts; call it yourself only to query the
    /// read model without a runner.
    pub async fn setup(&self) -> Result<(), BoxError> {
        self.ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin().await?;
                // NOTE: CREATE TABLE IF NOT EXISTS is not safe against itself (two sessions
                // may both find the name free): processes set up one at a time, per schema and
                // projector. The lock ends with the transaction.
                sqlx::query(
                    "SELECT pg_advisory_xact_lock(hashtextextended('cqrs-postgres-setup:' || current_schema() || ':' || $1, 0))",
                )
                .bind(self.projector.name())
                .execute(&mut *tx)
                .await?;
                self.projector.setup(&mut tx).await?;
                tx.commit().await?;
                Ok::<(), BoxError>(())
            })
            .await?;
        Ok(())
    }

    /// Commits a batch only while this process holds the projector's lease in `leases` (give
    /// the runner the same `leases`): a holder that lost the lease is fenced out.
    ///
    /// A batch fenced out is rolled back and fails with [`cqrs_core::Error::FencedOut`]: the
    /// runner then parks nothing, counts nothing, leaves its cursor and goes back to acquiring
    /// the lease; the new holder handles the batch from the saved checkpoint. Without the lease
    /// at all, batches fail the same way.
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

    fn fenced_out(&self, reason: String) -> BoxError {
        Box::new(Error::FencedOut {
            subscriber: self.projector.name().to_owned(),
            reason,
        })
    }

    /// Moves the checkpoint to `to` (never backwards) in `conn`'s transaction, checking the
    /// fence; returns the transaction's id.
    async fn save(&self, conn: &mut PgConnection, to: Cursor) -> Result<TxId, BoxError> {
        let name = self.projector.name();
        let (tx, position) = (
            to_i64(to.tx, "cursor transaction id")?,
            to_i64(to.position, "cursor position")?,
        );
        match &self.fence {
            None => Ok(sqlx::query_as(SAVE)
                .bind(name)
                .bind(tx)
                .bind(position)
                .fetch_one(conn)
                .await?),
            Some(leases) => {
                let epoch = leases
                    .epoch(name)
                    .ok_or_else(|| self.fenced_out("no lease is held".to_owned()))?;
                let kept: Option<TxId> = sqlx::query_as(SAVE_FENCED)
                    .bind(name)
                    .bind(tx)
                    .bind(position)
                    .bind(epoch)
                    .fetch_optional(conn)
                    .await?;
                kept.ok_or_else(|| {
                    leases.forget(name, epoch);
                    self.fenced_out(format!(
                        "the lease was taken over (epoch {epoch} is stale); batch rolled back"
                    ))
                })
            }
        }
    }

    /// One try of a batch; on failure, the error and, if it came from the COMMIT, the id of
    /// the transaction committed.
    async fn attempt(
        &self,
        events: &[RecordedEvent],
        to: Cursor,
    ) -> Result<(), (BoxError, Option<TxId>)> {
        let before = |e: BoxError| (e, None);
        if events.is_empty() {
            // NOTE: one statement commits on its own; no transaction needed to move the cursor,
            // and moving it again is harmless.
            let mut conn = self.pool.acquire().await.map_err(|e| before(e.into()))?;
            return self.save(&mut conn, to).await.map(|_| ()).map_err(before);
        }
        let mut tx = self.pool.begin().await.map_err(|e| before(e.into()))?;
        self.projector
            .handle_batch(&mut tx, events)
            .await
            .map_err(before)?;
        let id = self.save(&mut tx, to).await.map_err(before)?;
        tx.commit().await.map_err(|e| (e.into(), Some(id)))
    }

    /// Whether the transaction `id`, whose COMMIT got no answer, committed: asked of the
    /// server on another connection until it is decided. A transaction still open with its
    /// session idle never got the COMMIT: that session is ended, which rolls it back. `None`
    /// when the server cannot tell (unreachable for long, or the id too old).
    async fn committed(&self, (xid, pid): &TxId) -> Option<bool> {
        let give_up = tokio::time::Instant::now() + FATE_PATIENCE;
        let mut nap = Duration::from_millis(5);
        while tokio::time::Instant::now() < give_up {
            let fate: Result<(Option<String>, Option<String>), sqlx::Error> = sqlx::query_as(
                "SELECT pg_xact_status($1::text::xid8), \
                 (SELECT state FROM pg_stat_activity WHERE pid = $2)",
            )
            .bind(xid)
            .bind(pid)
            .fetch_one(&self.pool)
            .await;
            match fate {
                Ok((Some(status), _)) if status == "committed" => return Some(true),
                Ok((Some(status), _)) if status == "aborted" => return Some(false),
                Ok((Some(_), Some(state))) if state.starts_with("idle in transaction") => {
                    // NOTE: the COMMIT never reached the session (or is still on the wire):
                    // ending the session rolls the transaction back, unless the COMMIT wins
                    // the race; the status asked next tells which.
                    let _ = sqlx::query("SELECT pg_terminate_backend($1)")
                        .bind(pid)
                        .execute(&self.pool)
                        .await;
                }
                Ok((Some(_), _)) => {}
                Ok((None, _)) => return None,
                Err(e) => tracing::debug!(error = %e, "cannot ask for a transaction's fate yet"),
            }
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(200));
        }
        None
    }
}

/// How long the fate of a COMMIT with no answer is asked for before the batch fails.
const FATE_PATIENCE: Duration = Duration::from_secs(60);

/// Whether `err` (or its source) says the connection failed rather than the statement.
fn is_connection_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(sqlx_err) = e.downcast_ref::<sqlx::Error>() {
            return is_connection_lost(sqlx_err);
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

    fn sequenced(&self) -> bool {
        self.projector.sequenced()
    }

    fn segment(&self) -> Option<cqrs_core::Segment> {
        self.projector.segment()
    }
    /// Runs the projector's [`PgProjector::setup`] (once).
    async fn setup(&self) -> Result<(), BoxError> {
        PgTransactional::setup(self).await
    }

    async fn checkpoint(&self) -> Result<Cursor> {
        checkpoints::load(&self.pool, self.projector.name()).await
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
            if is_fenced_out(&*err) || attempt >= retries || !is_connection_error(&*err) {
                return Err(err);
            }
            // NOTE: a COMMIT with no answer may have committed, or may still be committing:
            // its fate is decided for certain before anything is tried again, or the batch
            // would be applied twice.
            if let Some(id) = at_commit {
                match self.committed(&id).await {
                    Some(true) => return Ok(()),
                    Some(false) => {}
                    None => return Err(err),
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

    /// Parks the letter in the transaction that moves the checkpoint past its event.
    async fn park(
        &self,
        letter: DeadLetter,
        to: Cursor,
        _dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        // NOTE: both steps are idempotent (one letter per event, a checkpoint that never goes
        // back), so a COMMIT with no answer is simply tried again.
        let mut tx = self.pool.begin().await?;
        dead_letters::park(&mut *tx, &letter).await?;
        self.save(&mut tx, to).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Applies the letter's event and removes the letter in one transaction; a letter already
    /// gone (retried or skipped meanwhile) is not applied again.
    async fn retry(
        &self,
        letter: &DeadLetter,
        current: Cursor,
        _dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        if !dead_letters::remove(&mut *tx, letter.id).await? {
            return Ok(());
        }
        self.projector
            .handle_batch(&mut tx, std::slice::from_ref(&letter.event))
            .await?;
        // The checkpoint stays; this checks the fence.
        self.save(&mut tx, current).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Resets the read model and the checkpoint and removes the dead letters, in one
    /// transaction.
    async fn reset_all(&self, _dead_letters: &dyn DeadLetterStore) -> Result<(), BoxError> {
        let mut tx = self.pool.begin().await?;
        self.projector.reset(&mut tx).await?;
        sqlx::query("DELETE FROM checkpoints WHERE name = $1")
            .bind(self.projector.name())
            .execute(&mut *tx)
            .await?;
        dead_letters::clear(&mut *tx, self.projector.name()).await?;
        tx.commit().await?;
        Ok(())
    }
}
