//! The database behind the service, chosen by its URL: the embedded SQLite store (a file, or
//! memory) or PostgreSQL. Above this module the service sees core traits and [`Queries`].

use std::sync::Arc;

use cqrs_core::{
    CheckpointStore, DeadLetterStore, Error, EventStore, Fingerprint, Leases, Result, Runner,
    RunnerConfig, SnapshotStore, Subscriber,
};
use cqrs_postgres::{PgConfig, PgDatabase, PgLeases};
use cqrs_sqlite::SqliteDatabase;
use sqlx::{Database, Executor, IntoArguments, Postgres, Sqlite};
use uuid::Uuid;

use crate::error::BankError;
use crate::idempotency::{self, refusal};
use crate::readmodel::{Queries, ReadModel, SqlProjection};

/// The default database: the embedded store in `./bank.db`.
pub const DEFAULT_DATABASE: &str = "sqlite:bank.db?mode=rwc";

/// An open database: the event store and its companions, and the read models' queries.
#[derive(Clone)]
pub struct Backend {
    events: Arc<dyn EventStore>,
    snapshots: Arc<dyn SnapshotStore>,
    checkpoints: Arc<dyn CheckpointStore>,
    dead_letters: Arc<dyn DeadLetterStore>,
    leases: Option<Arc<dyn Leases>>,
    queries: Arc<dyn Queries>,
    db: Db,
}

/// What only the database's own types do: run a transactional projector, write through
/// SQLite's one writer, close.
#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqliteDatabase),
    // NOTE: the runner's leases fence the projectors: a projector's commit checks the epoch
    // these hold.
    Postgres(PgDatabase, PgLeases),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the database at `url`: `postgres://...` (or `postgresql://`) for PostgreSQL,
    /// anything else the embedded store (`sqlite::memory:`, a `sqlite:` URL, a file path).
    /// Creates the read-model tables.
    pub async fn open(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pg = PgDatabase::connect(url, PgConfig::default()).await?;
            let mut tx = pg.pool().begin().await.map_err(Error::backend)?;
            // NOTE: processes starting together would race on CREATE TABLE IF NOT EXISTS.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bank-read-models'))")
                .execute(&mut *tx)
                .await
                .map_err(Error::backend)?;
            create_tables::<Postgres>(&mut tx).await?;
            tx.commit().await.map_err(Error::backend)?;
            let leases = pg.leases();
            return Ok(Backend {
                events: Arc::new(pg.events()),
                snapshots: Arc::new(pg.snapshots()),
                checkpoints: Arc::new(pg.checkpoints()),
                dead_letters: Arc::new(pg.dead_letters()),
                leases: Some(Arc::new(leases.clone())),
                queries: Arc::new(pg.pool().clone()),
                db: Db::Postgres(pg, leases),
            });
        }
        let db = SqliteDatabase::open(url).await?;
        let mut tx = db.begin_write().await?;
        create_tables::<Sqlite>(&mut tx).await?;
        tx.commit().await.map_err(Error::backend)?;
        Ok(Backend {
            events: Arc::new(db.events()),
            snapshots: Arc::new(db.snapshots()),
            checkpoints: Arc::new(db.checkpoints()),
            dead_letters: Arc::new(db.dead_letters()),
            leases: db.leases().map(|l| Arc::new(l) as Arc<dyn Leases>),
            queries: Arc::new(db.pool().clone()),
            db: Db::Sqlite(db),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(..) => "postgres",
        }
    }

    /// The event store.
    pub fn events(&self) -> Arc<dyn EventStore> {
        self.events.clone()
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        self.snapshots.clone()
    }

    /// The checkpoint store (of subscribers that are not transactional).
    pub fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        self.checkpoints.clone()
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.dead_letters.clone()
    }

    /// Leases, so that several processes on one database run each subscriber once: advisory
    /// locks on PostgreSQL, lock files beside a SQLite file; `None` in memory (one process).
    pub fn leases(&self) -> Option<Arc<dyn Leases>> {
        self.leases.clone()
    }

    /// A runner of subscribers on this database, with its leases.
    pub fn runner(&self, config: RunnerConfig) -> Runner {
        let runner = Runner::new(self.events(), self.dead_letters()).with_config(config);
        match self.leases() {
            Some(leases) => runner.with_leases(leases),
            None => runner,
        }
    }

    /// The read models' queries.
    pub fn queries(&self) -> &dyn Queries {
        &*self.queries
    }

    /// The transactional subscriber maintaining `model`; on PostgreSQL it commits only while
    /// this backend's [`leases`](Self::leases) hold its lease.
    pub fn read_model(&self, model: ReadModel) -> Arc<dyn Subscriber> {
        match &self.db {
            Db::Sqlite(db) => Arc::new(db.transactional(SqlProjection(model))),
            Db::Postgres(pg, leases) => Arc::new(
                pg.transactional(SqlProjection(model))
                    .fenced_by(leases.clone()),
            ),
        }
    }

    /// The refusal remembered for idempotency key `id` sent with the request of
    /// `fingerprint`, after remembering `refused` if the key has none yet.
    pub(crate) async fn refusal(
        &self,
        id: Uuid,
        fingerprint: Fingerprint,
        refused: Option<&BankError>,
    ) -> Result<Option<BankError>> {
        match &self.db {
            Db::Sqlite(db) => {
                // NOTE: SQLite has one write lock: write in a transaction of the store's
                // writer, queued behind the store's own writes.
                let mut tx = db.begin_write().await?;
                let first = refusal::<Sqlite>(&mut tx, id, fingerprint, refused).await?;
                tx.commit().await.map_err(Error::backend)?;
                Ok(first)
            }
            Db::Postgres(pg, _) => {
                let mut conn = pg.pool().acquire().await.map_err(Error::backend)?;
                refusal::<Postgres>(&mut conn, id, fingerprint, refused).await
            }
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(pg, _) => pg.pool().close().await,
        }
    }
}

/// Creates the read-model tables and the refused keys' table, if missing.
async fn create_tables<DB>(conn: &mut DB::Connection) -> Result<()>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    // NOTE: earlier versions kept refused keys in `idempotent_refusals`.
    let retired = "DROP TABLE IF EXISTS idempotent_refusals";
    let tables = ReadModel::ALL.map(ReadModel::schema);
    for ddl in tables.into_iter().chain([idempotency::SCHEMA, retired]) {
        sqlx::query(ddl)
            .execute(&mut *conn)
            .await
            .map_err(Error::backend)?;
    }
    Ok(())
}
