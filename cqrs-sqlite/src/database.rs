//! The database handle: connections, pragmas, migrations, and the single writer.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::{Error, Result};
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite, Transaction};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::{Failure, is_busy, retry_busy};
use crate::group::AppendQueue;
use crate::lease::SqliteLeases;
use crate::raw_read::RawReaders;
use crate::watcher;
use crate::{
    SqliteCheckpointStore, SqliteDeadLetterStore, SqliteEventStore, SqliteProjector,
    SqliteSnapshotStore, SqliteTransactional,
};

/// The migrations of the store's tables, embedded in the crate. [`SqliteDatabase::open`] runs
/// them; run them yourself only when you open connections by other means.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Waits for a pooled connection have no deadline of their own: writers of this process queue for
/// the one write connection, and a write is never failed for waiting its turn.
const FOREVER: Duration = Duration::from_secs(60 * 60 * 24 * 365);

/// How a [`SqliteDatabase`] opens its connections.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// How long a connection waits for another process's write lock before the store retries
    /// (SQLite's busy timeout).
    pub busy_timeout: Duration,
    /// How long, in all, a write keeps retrying while the database stays locked by another
    /// process, before it fails with [`Error::Timeout`]. Writers of this process never see a
    /// lock: they queue for the one write connection.
    pub write_patience: Duration,
    /// Connections for reads (file databases only; an in-memory database has one connection).
    pub readers: u32,
    /// Whether each commit waits for the disk (`synchronous = FULL`): a committed event then
    /// survives a power cut, not only a crash of the process. Off means `NORMAL`, faster, and
    /// still safe against a crash of the process.
    pub durable: bool,
    /// How often to look for commits made by other connections to the file (other processes,
    /// or other handles in this one), to wake subscribers of this handle; `None` leaves them
    /// to their polling. This handle's own appends wake its subscribers at once regardless.
    pub watch_interval: Option<Duration>,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            busy_timeout: Duration::from_secs(5),
            write_patience: Duration::from_secs(60),
            readers: 4,
            durable: true,
            watch_interval: Some(Duration::from_millis(100)),
        }
    }
}

/// An open SQLite database holding the event store and its companions. Cheap to clone: clones
/// share the connections.
///
/// One connection writes and the others read: SQLite allows one writer at a time, so writers of
/// this process queue for that connection instead of racing for the file lock, and readers
/// never wait for writers (WAL mode). Every store of the crate is a view of one handle:
///
/// ```
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// use cqrs_sqlite::SqliteDatabase;
///
/// let db = SqliteDatabase::open("sqlite::memory:").await?;
/// let (events, snapshots) = (db.events(), db.snapshots());
/// let (checkpoints, dead_letters) = (db.checkpoints(), db.dead_letters());
/// # let _ = (events, snapshots, checkpoints, dead_letters);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SqliteDatabase {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) reader: SqlitePool,
    pub(crate) writer: SqlitePool,
    pub(crate) wake: watch::Sender<u64>,
    pub(crate) config: SqliteConfig,
    /// Direct reads of the all-stream (file databases only).
    pub(crate) raw: Option<Arc<RawReaders>>,
    /// Appends waiting to be written together.
    pub(crate) appends: AppendQueue,
    /// NOTE: an in-memory database lives as long as one connection to it; this one never runs a
    /// statement, so the data outlives any recycling of the pool's connection.
    keeper: Mutex<Option<SqliteConnection>>,
    watcher: Mutex<Option<AbortHandle>>,
    memory: bool,
    /// The database file (`None` in memory).
    path: Option<std::path::PathBuf>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = self.watcher.get_mut().ok().and_then(Option::take) {
            w.abort();
        }
    }
}

impl std::fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteDatabase")
            .field("memory", &self.inner.memory)
            .field("readers", &self.inner.reader.size())
            .field("config", &self.inner.config)
            .finish()
    }
}

impl SqliteDatabase {
    /// Opens (creating it if missing) the database at `location` with the default
    /// [`SqliteConfig`], and runs the migrations.
    ///
    /// `location` is `sqlite::memory:` for a private in-memory database, a `sqlite:` URL
    /// (`sqlite:bank.db`, `sqlite:///var/lib/bank.db?mode=rwc`), or a plain file path.
    pub async fn open(location: &str) -> Result<Self> {
        Self::open_with(location, SqliteConfig::default()).await
    }

    /// Opens the database at `location` with `config`. See [`open`](Self::open).
    pub async fn open_with(location: &str, config: SqliteConfig) -> Result<Self> {
        if location.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(location).map_err(Error::backend)?;
            let memory =
                location.starts_with("sqlite::memory:") || location.contains("mode=memory");
            Self::connect(options, memory, config).await
        } else {
            Self::open_path(location, config).await
        }
    }

    /// Opens (creating it if missing) the database file at `path`.
    pub async fn open_path(path: impl AsRef<Path>, config: SqliteConfig) -> Result<Self> {
        let options = SqliteConnectOptions::new().filename(path);
        Self::connect(options, false, config).await
    }

    /// A fresh, private in-memory database: gone when the last clone of the handle drops.
    pub async fn in_memory() -> Result<Self> {
        Self::open("sqlite::memory:").await
    }

    async fn connect(
        options: SqliteConnectOptions,
        memory: bool,
        config: SqliteConfig,
    ) -> Result<Self> {
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout)
            .synchronous(if config.durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            });
        let (reader, writer, keeper) = if memory {
            // One connection for reads and writes: a shared-cache in-memory database has
            // table-level locks that fail instead of waiting, so only one connection works it.
            let keeper = options.connect().await.map_err(Error::backend)?;
            let pool = single_connection(options.clone());
            (pool.clone(), pool, Some(keeper))
        } else {
            let options = options.clone().journal_mode(SqliteJournalMode::Wal);
            let writer = single_connection(options.clone());
            // NOTE: the writer connects first, so the file exists and is in WAL mode before a
            // reader opens it. Switching a new file to WAL takes a lock SQLite does not wait
            // for, hence the retry when another process opens the same new file.
            retry_busy!(&config, async { Ok(writer.acquire().await.map(drop)?) })?;
            let reader = SqlitePoolOptions::new()
                .max_connections(config.readers.max(1))
                .acquire_timeout(FOREVER)
                .test_before_acquire(false)
                .connect_lazy_with(options);
            (reader, writer, None)
        };
        let path = (!memory).then(|| options.get_filename().to_path_buf());
        let raw = path.as_ref().map(|p| {
            Arc::new(RawReaders::new(
                p.clone(),
                config.busy_timeout,
                config.readers as usize,
            ))
        });
        let watcher_conn = match (memory, config.watch_interval) {
            (false, Some(_)) => Some(options.connect().await.map_err(Error::backend)?),
            _ => None,
        };
        let db = SqliteDatabase {
            inner: Arc::new(Inner {
                reader,
                writer,
                wake: watch::channel(0).0,
                config,
                raw,
                appends: AppendQueue::default(),
                keeper: Mutex::new(keeper),
                watcher: Mutex::new(None),
                memory,
                path,
            }),
        };
        retry_busy!(&db.inner.config, migrate(&db.inner.writer))?;
        if let (Some(conn), Some(every)) = (watcher_conn, db.inner.config.watch_interval) {
            let handle = watcher::spawn(Arc::downgrade(&db.inner), conn, every);
            *db.inner.watcher.lock().expect("watcher lock") = Some(handle);
        }
        Ok(db)
    }

    /// Leases between the processes that open this database file, so that each subscriber
    /// runs in one of them at a time (see [`SqliteLeases`]); `None` for an in-memory database,
    /// which one process alone can open.
    pub fn leases(&self) -> Option<SqliteLeases> {
        self.inner.path.as_ref().map(SqliteLeases::beside)
    }

    /// The event store.
    pub fn events(&self) -> SqliteEventStore {
        SqliteEventStore { db: self.clone() }
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> SqliteSnapshotStore {
        SqliteSnapshotStore { db: self.clone() }
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> SqliteCheckpointStore {
        SqliteCheckpointStore { db: self.clone() }
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> SqliteDeadLetterStore {
        SqliteDeadLetterStore { db: self.clone() }
    }

    /// Runs `projector` as a transactional subscriber of this database: its read-model writes
    /// and its checkpoint commit together.
    pub fn transactional<P: SqliteProjector>(&self, projector: P) -> SqliteTransactional<P> {
        SqliteTransactional::new(self.clone(), projector)
    }

    /// The pool for queries of read-model tables (and of the store's tables).
    ///
    /// Write through [`begin_write`](Self::begin_write) instead: a write on this pool races the
    /// store's writer for SQLite's one write lock and can fail with `database is locked`.
    pub fn pool(&self) -> &SqlitePool {
        &self.inner.reader
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`) on the store's one write connection,
    /// queuing behind the store's own writes. Commit it with `tx.commit().await`; dropping it
    /// rolls back.
    ///
    /// Keep it short: appends wait while it is open. Do not append events or use
    /// [`pool`](Self::pool) for writes while holding it; on an in-memory database, do not
    /// query through [`pool`](Self::pool) either (it is the same connection).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        let writer = &self.inner.writer;
        retry_busy!(&self.inner.config, async {
            Ok(writer.begin_with("BEGIN IMMEDIATE").await?)
        })
    }

    /// Closes every connection, waiting for those in use to be returned. Later calls fail.
    pub async fn close(&self) {
        if let Some(w) = self.inner.watcher.lock().expect("watcher lock").take() {
            w.abort();
        }
        self.inner.writer.close().await;
        self.inner.reader.close().await;
        if let Some(raw) = &self.inner.raw {
            raw.close();
        }
        let keeper = self.inner.keeper.lock().expect("keeper lock").take();
        if let Some(conn) = keeper {
            let _ = conn.close().await;
        }
    }

    /// Tells this process's subscribers that events were appended.
    pub(crate) fn notify(&self) {
        self.inner.wake.send_modify(|n| *n += 1);
    }
}

/// Runs the migrations that are not applied yet.
///
/// NOTE: SQLite has no migration lock in sqlx, so two processes opening a new file at once
/// would both try to create the tables. Running the whole migrator in one `BEGIN IMMEDIATE`
/// transaction (its own transactions become savepoints) makes the second wait for the first,
/// then find everything applied.
async fn migrate(writer: &SqlitePool) -> Result<(), Failure> {
    let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
    // NOTE: `Migrator::run` is generic over `Acquire`, which keeps its future from being
    // proven `Send` (sqlx issue #2016); `run_direct` is sqlx's own way around that.
    MIGRATOR
        .run_direct(None, &mut *tx, false)
        .await
        .map_err(|e| match e {
            MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) if is_busy(&e) => {
                Failure::Db(e)
            }
            e => Failure::Core(Error::backend(e)),
        })?;
    tx.commit().await?;
    Ok(())
}

/// A pool of one connection that is never recycled, whose waiters queue without a deadline.
///
/// NOTE: pools of this crate do not ping a connection before handing it out (sqlx's default):
/// a connection to a file cannot be hung up on, and the ping is one more trip to SQLite's
/// worker thread for every statement or transaction.
fn single_connection(options: SqliteConnectOptions) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(FOREVER)
        .test_before_acquire(false)
        .connect_lazy_with(options)
}
