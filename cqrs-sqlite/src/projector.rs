//! Transactional projectors: read-model writes and the checkpoint commit in one SQLite
//! transaction, so each event takes effect exactly once, crash or not.

use async_trait::async_trait;
use cqrs_core::{
    BoxError, Cursor, DeadLetter, DeadLetterStore, Error, RecordedEvent, Result, Subscriber,
};
use sqlx::SqliteConnection;
use tokio::sync::OnceCell;

use crate::checkpoints::{delete_checkpoint, load_checkpoint, save_checkpoint};
use crate::database::SqliteDatabase;
use crate::dead_letters;
use crate::error::{Failure, retry_busy};
use crate::lease::SqliteLeases;

/// Runs `$body` (an async block given `$conn`, the connection) in a `BEGIN IMMEDIATE`
/// transaction of `$db` and commits it; the whole is retried while another process holds the
/// write lock.
macro_rules! in_write_tx {
    ($db:expr, |$conn:ident| $body:expr) => {{
        let db: &SqliteDatabase = $db;
        retry_busy!(&db.inner.config, async {
            let mut tx = db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
            let $conn: &mut SqliteConnection = &mut tx;
            let () = $body.await?;
            tx.commit().await?;
            Ok(())
        })
    }};
}

/// A projector whose read model is a set of tables in the store's SQLite database.
///
/// Every method gets the connection of an open write transaction: write the read model through
/// it and nothing else. [`SqliteTransactional`] commits those writes together with the
/// checkpoint, or rolls both back when a handler fails, so the read model never counts an event
/// twice or misses one. Handlers run while the database's one writer is held: keep them to
/// read-model SQL, and append no events from them (a process manager that issues commands is a
/// [`cqrs_core::Projector`] run with [`cqrs_core::Checkpointed`]).
///
/// ```
/// use cqrs_core::{BoxError, RecordedEvent};
/// use cqrs_sqlite::SqliteProjector;
/// use sqlx::SqliteConnection;
///
/// #[derive(Debug)]
/// struct EventCounts;
///
/// #[async_trait::async_trait]
/// impl SqliteProjector for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///     async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("CREATE TABLE IF NOT EXISTS event_counts (event_type TEXT PRIMARY KEY, n INTEGER NOT NULL)")
///             .execute(conn).await?;
///         Ok(())
///     }
///     async fn handle(&self, conn: &mut SqliteConnection, event: &RecordedEvent) -> Result<(), BoxError> {
///         sqlx::query("INSERT INTO event_counts VALUES (?, 1) ON CONFLICT (event_type) DO UPDATE SET n = n + 1")
///             .bind(&event.event_type)
///             .execute(conn).await?;
///         Ok(())
///     }
///     async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
///         sqlx::query("DELETE FROM event_counts").execute(conn).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait SqliteProjector: Send + Sync {
    /// The stable name: the key of the checkpoint and of the dead letters.
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

    /// Creates the read model's tables if they do not exist (`CREATE TABLE IF NOT EXISTS`).
    /// Runs once per [`SqliteTransactional`], before anything else: the runner runs it when it
    /// starts, before it delivers the first event ([`cqrs_core::Subscriber::setup`]; wait for
    /// it with [`cqrs_core::RunnerHandle::ready`]), and so does a replay. The default does
    /// nothing.
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        let _ = conn;
        Ok(())
    }

    /// Applies one event to the read model.
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError>;

    /// Applies events in order; by default one by one. Override it to write a batch at once in
    /// fast replays.
    async fn handle_batch(
        &self,
        conn: &mut SqliteConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        for e in events {
            self.handle(conn, e).await?;
        }
        Ok(())
    }

    /// Empties the read model, to rebuild it from the first event.
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError>;
}

#[async_trait]
impl<P: SqliteProjector + ?Sized> SqliteProjector for std::sync::Arc<P> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        (**self).setup(conn).await
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        (**self).handle(conn, event).await
    }
    async fn handle_batch(
        &self,
        conn: &mut SqliteConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        (**self).handle_batch(conn, events).await
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        (**self).reset(conn).await
    }
}

/// Runs a [`SqliteProjector`] as a [`Subscriber`]: each batch is handled and checkpointed in
/// one `BEGIN IMMEDIATE` transaction (exactly-once effect). Build it with
/// [`SqliteDatabase::transactional`] and hand it to a [`cqrs_core::Runner`].
///
/// The checkpoint never moves backwards. A call whose `to` lies at or before the checkpoint is a
/// parked event retried, and is handled as given.
///
/// Its dead letters live in the same database: a letter is parked in the transaction that moves
/// the checkpoint past its event, and a retried letter is removed in the transaction that
/// applies its event. Give the runner the same database's
/// [`SqliteDeadLetterStore`](crate::SqliteDeadLetterStore).
///
/// Run each subscriber in one runner at a time: a second runner of the same subscriber (in
/// another process on the same file) could apply a batch the first one has just committed.
/// Runners given [`SqliteDatabase::leases`] take turns instead.
#[derive(Debug)]
pub struct SqliteTransactional<P> {
    db: SqliteDatabase,
    projector: P,
    ready: OnceCell<()>,
    fence: Option<SqliteLeases>,
}

impl<P: SqliteProjector> SqliteTransactional<P> {
    /// Pairs `projector` with the database holding its tables and checkpoint.
    pub fn new(db: SqliteDatabase, projector: P) -> Self {
        SqliteTransactional {
            db,
            projector,
            ready: OnceCell::new(),
            fence: None,
        }
    }

    /// Commits only while this process holds the projector's lease in `leases` (give the
    /// runner a clone of the same `leases`): inside each write transaction, before anything is
    /// written, the lease is checked; a lost one (its lock file removed or replaced, another
    /// holder on the new file) rolls the transaction back with
    /// [`cqrs_core::Error::FencedOut`], and the runner goes back to acquiring the lease without
    /// parking anything.
    ///
    /// NOTE: the check runs under the database's write lock, so the new holder's first batch
    /// commits after this one if at all, and skips what this one committed.
    pub fn fenced_by(mut self, leases: SqliteLeases) -> Self {
        self.fence = Some(leases);
        self
    }

    /// [`Error::FencedOut`] unless the fence (if any) still holds the lease.
    fn check_fence(&self) -> Result<(), Failure> {
        match &self.fence {
            Some(leases) if !leases.holds(self.projector.name()) => Err(Error::FencedOut {
                subscriber: self.projector.name().to_owned(),
                reason: "its lock file is no longer held by this process".to_owned(),
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// The projector.
    pub fn projector(&self) -> &P {
        &self.projector
    }

    /// The database of the read model, for queries.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// Runs the projector's [`setup`](SqliteProjector::setup) (once; later calls return at
    /// once). The runner calls it when it starts (see [`cqrs_core::RunnerHandle::ready`]);
    /// call it yourself only to query the read model without a runner.
    pub async fn setup(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                in_write_tx!(&self.db, |conn| async {
                    self.projector
                        .setup(conn)
                        .await
                        .map_err(|e| self.handler_error(e))
                })
            })
            .await?;
        Ok(())
    }

    /// The cursor after the last event whose effect is committed.
    pub async fn checkpoint(&self) -> Result<Cursor> {
        let reader = &self.db.inner.reader;
        let name = self.projector.name();
        retry_busy!(&self.db.inner.config, async {
            load_checkpoint(&mut *reader.acquire().await?, name).await
        })
    }

    pub(crate) fn handler_error(&self, source: BoxError) -> Failure {
        Failure::Core(Error::Handler {
            handler: self.projector.name().to_owned(),
            source,
        })
    }
}

/// Takes the handler's own error back out of the wrapper, so that the runner records it as the
/// handler wrote it.
pub(crate) fn unwrap_handler(e: Error) -> BoxError {
    match e {
        Error::Handler { source, .. } => source,
        other => Box::new(other),
    }
}

#[async_trait]
impl<P: SqliteProjector> Subscriber for SqliteTransactional<P> {
    fn name(&self) -> &str {
        self.projector.name()
    }

    fn sequenced(&self) -> bool {
        self.projector.sequenced()
    }

    fn segment(&self) -> Option<cqrs_core::Segment> {
        self.projector.segment()
    }
    /// Runs the projector's [`SqliteProjector::setup`] (once).
    async fn setup(&self) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        Ok(())
    }

    async fn checkpoint(&self) -> Result<Cursor> {
        SqliteTransactional::setup(self).await?;
        SqliteTransactional::checkpoint(self).await
    }

    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        let name = self.projector.name();
        in_write_tx!(&self.db, |conn| async {
            self.check_fence()?;
            let current = load_checkpoint(conn, name).await?;
            // NOTE: `to` at or before the checkpoint is a parked event retried: handle it as
            // given. Otherwise a batch never reaches back before the checkpoint when one runner
            // drives this subscriber; skipping what is committed is only a cheap guard.
            let fresh = if to > current {
                &events[events.partition_point(|e| e.cursor <= current)..]
            } else {
                events
            };
            if !fresh.is_empty() {
                self.projector
                    .handle_batch(conn, fresh)
                    .await
                    .map_err(|e| self.handler_error(e))?;
            }
            if to > current {
                save_checkpoint(conn, name, to).await?;
            }
            Ok::<(), Failure>(())
        })
        .map_err(unwrap_handler)
    }

    async fn reset(&self) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        let name = self.projector.name();
        in_write_tx!(&self.db, |conn| async {
            self.projector
                .reset(conn)
                .await
                .map_err(|e| self.handler_error(e))?;
            delete_checkpoint(conn, name).await
        })
        .map_err(unwrap_handler)
    }

    /// Parks the letter in the transaction that moves the checkpoint past its event.
    async fn park(
        &self,
        letter: DeadLetter,
        to: Cursor,
        _dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        let name = self.projector.name();
        in_write_tx!(&self.db, |conn| async {
            self.check_fence()?;
            dead_letters::park(conn, &letter).await?;
            if to > load_checkpoint(conn, name).await? {
                save_checkpoint(conn, name, to).await?;
            }
            Ok::<(), Failure>(())
        })
        .map_err(unwrap_handler)
    }

    /// Applies the letter's event and removes the letter in one transaction; a letter already
    /// gone (retried or skipped meanwhile) is not applied again.
    async fn retry(
        &self,
        letter: &DeadLetter,
        _current: Cursor,
        _dead_letters: &dyn DeadLetterStore,
    ) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        in_write_tx!(&self.db, |conn| async {
            self.check_fence()?;
            if dead_letters::remove(conn, letter.id).await? {
                self.projector
                    .handle(conn, &letter.event)
                    .await
                    .map_err(|e| self.handler_error(e))?;
            }
            Ok::<(), Failure>(())
        })
        .map_err(unwrap_handler)
    }

    /// Resets the read model and the checkpoint and removes the dead letters, in one
    /// transaction.
    async fn reset_all(&self, _dead_letters: &dyn DeadLetterStore) -> Result<(), BoxError> {
        SqliteTransactional::setup(self).await?;
        let name = self.projector.name();
        in_write_tx!(&self.db, |conn| async {
            self.projector
                .reset(conn)
                .await
                .map_err(|e| self.handler_error(e))?;
            delete_checkpoint(conn, name).await?;
            dead_letters::clear(conn, name).await.map(|_| ())
        })
        .map_err(unwrap_handler)
    }
}
