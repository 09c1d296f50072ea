//! The database hub: one pool, one schema and one wake-up listener, handing out the stores.

use std::str::FromStr;
use std::sync::Arc;

use cqrs_core::{Error, Result};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::append_conns::AppendConns;
use crate::config::{PgConfig, check_schema, migrate, open_pool, schema_options};
use crate::diagnostics::{PgDiagnostics, diagnose};
use crate::error::backend;
use crate::notify::Notifier;
use crate::{
    PgCheckpointStore, PgDeadLetterStore, PgEventStore, PgLeases, PgProjector, PgSnapshotStore,
    PgTransactional,
};

/// A PostgreSQL database (one schema of it) holding the event store and its companions. Cheap
/// to clone: clones share the pool and the wake-up listener.
///
/// Every store of the crate is a view of one hub, as in `cqrs-sqlite`:
///
/// ```no_run
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// use cqrs_postgres::{PgConfig, PgDatabase};
///
/// let db = PgDatabase::connect(&std::env::var("DATABASE_URL")?, PgConfig::with_schema("bank")).await?;
/// let (events, snapshots) = (db.events(), db.snapshots());
/// let (checkpoints, dead_letters) = (db.checkpoints(), db.dead_letters());
/// # let _ = (events, snapshots, checkpoints, dead_letters);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct PgDatabase {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: PgPool,
    pub(crate) schema: String,
    pub(crate) notifier: Notifier,
    pub(crate) appends: AppendConns,
    /// The group appender, when [`PgConfig::group_appends`] is on.
    pub(crate) group: Option<crate::group::Grouper>,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("schema", &self.inner.schema)
            .finish_non_exhaustive()
    }
}

impl PgDatabase {
    /// Connects to `url` with `config`: opens a pool whose sessions use `config.schema`, creates
    /// the schema and runs the migrations (unless `config.migrate` is off), and starts the
    /// wake-up listener. Call it within a tokio runtime.
    pub async fn connect(url: &str, config: PgConfig) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(Error::backend)?;
        Self::connect_with(options, config).await
    }

    /// Like [`connect`](Self::connect), from connect options (any `search_path` in them is
    /// replaced by `config.schema`).
    pub async fn connect_with(options: PgConnectOptions, config: PgConfig) -> Result<Self> {
        if config.migrate {
            migrate(&options, &config.schema).await?;
        }
        let pool = open_pool(schema_options(options, &config.schema)?, &config).await?;
        Self::hub(pool, config.group_appends).await
    }

    /// A hub on an existing pool. The tables are those of the pool sessions' current schema
    /// (set it with [`schema_options`]); the migrations must have run there. Appends are
    /// grouped as [`PgConfig::default`] says.
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Self::hub(pool, PgConfig::default().group_appends).await
    }

    async fn hub(pool: PgPool, group_appends: bool) -> Result<Self> {
        let schema: Option<String> = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(backend)?;
        let schema = schema.ok_or_else(|| {
            Error::Invalid("the pool's search_path names no existing schema".into())
        })?;
        let notifier = Notifier::start(&pool, &schema);
        Ok(PgDatabase {
            inner: Arc::new(Inner {
                appends: AppendConns::new(&pool),
                group: group_appends.then(crate::group::Grouper::default),
                pool,
                schema,
                notifier,
            }),
        })
    }

    /// The pool, shared by every store of this hub.
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// The event store.
    pub fn events(&self) -> PgEventStore {
        PgEventStore { db: self.clone() }
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> PgSnapshotStore {
        PgSnapshotStore::new(self.inner.pool.clone())
    }

    /// The checkpoint store.
    pub fn checkpoints(&self) -> PgCheckpointStore {
        PgCheckpointStore::new(self.inner.pool.clone())
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> PgDeadLetterStore {
        PgDeadLetterStore::new(self.inner.pool.clone())
    }

    /// Leases in this schema (each held lease opens a connection of its own).
    pub fn leases(&self) -> PgLeases {
        PgLeases::new(&self.inner.pool)
    }

    /// Runs `projector` transactionally on this hub's pool.
    pub fn transactional<P: PgProjector>(&self, projector: P) -> PgTransactional<P> {
        PgTransactional::new(self.inner.pool.clone(), projector)
    }

    /// Checkpoints against the head, the watermark and what holds it back; see [`diagnose`].
    pub async fn diagnostics(&self) -> Result<PgDiagnostics> {
        diagnose(&self.inner.pool).await
    }

    /// Drops this hub's schema with every table in it (`DROP SCHEMA ... CASCADE`), then closes
    /// the pool: the end of a [`PgConfig::throwaway`] schema. Stop the runners using it first.
    /// Refuses the `public` schema with [`Error::Invalid`].
    pub async fn drop_schema(self) -> Result<()> {
        let schema = self.inner.schema.clone();
        check_schema(&schema)?;
        if schema == "public" {
            return Err(Error::Invalid(
                "drop_schema refuses the public schema".into(),
            ));
        }
        // NOTE: the name was checked to be a plain identifier, so it is safe to splice in.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&self.inner.pool)
        .await
        .map_err(Error::backend)?;
        self.inner.pool.close().await;
        Ok(())
    }

    /// How many appends wait for a group now (always 0 with grouping off). For tests that
    /// gather a group on purpose; not a stable API.
    #[doc(hidden)]
    pub fn queued_appends(&self) -> usize {
        self.inner.group.as_ref().map_or(0, |g| g.queued())
    }

    /// Wakes subscribers here and in other processes: appends do it themselves; call it after
    /// committing events written by [`PgEventStore::append_in`].
    pub fn wake(&self) {
        self.inner.notifier.appended();
    }
}
