//! Connecting: the configuration, the pool, the schema and the migrations.

use std::time::Duration;

use cqrs_core::{Error, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// The migrations of the event store, checkpoint, snapshot, dead-letter, lease and inbox
/// tables.
///
/// Every name in them is unqualified, so they create the tables in the schema the
/// connection's `search_path` selects; [`migrate`] runs them in a chosen schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Settings of a PostgreSQL store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgConfig {
    /// The schema holding the tables (`public` by default): lowercase ASCII letters, digits and
    /// `_`, starting with a letter or `_`, at most 48 bytes. Each schema is an independent store,
    /// so services or tenants can share one database.
    pub schema: String,
    /// Connections of the pool the store opens (10 by default). Appends keep up to as many
    /// again (at most 8) out of the pool, so that an append is one round trip: the server may
    /// see up to twice this number, plus the wake-up listener.
    pub max_connections: u32,
    /// Whether [`PgDatabase::connect`](crate::PgDatabase::connect) creates the schema and
    /// runs [`MIGRATOR`] (true by default).
    pub migrate: bool,
    /// Whether appends that arrive while others are committing are gathered and written
    /// together, in one statement and one transaction ("group append"; see
    /// [`group_appends`](Self::group_appends)). Off by default.
    pub group_appends: bool,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            schema: "public".into(),
            max_connections: 10,
            migrate: true,
            group_appends: false,
        }
    }
}

impl PgConfig {
    /// The default settings with another schema.
    pub fn with_schema(schema: impl Into<String>) -> Self {
        PgConfig {
            schema: schema.into(),
            ..Default::default()
        }
    }

    /// The default settings with a fresh schema of its own, `{prefix}_` and 12 random hex
    /// digits, for a test or a throwaway run: connecting creates and migrates it, and
    /// [`PgDatabase::drop_schema`](crate::PgDatabase::drop_schema) drops it with everything in
    /// it. Nothing drops it by itself: a test that fails before the drop leaves it behind
    /// (harmless, and easy to find by its prefix). `prefix` must be a valid schema name of at
    /// most 32 bytes, or connecting fails with [`Error::Invalid`].
    ///
    /// ```no_run
    /// use cqrs_postgres::{PgConfig, PgDatabase};
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let db = PgDatabase::connect(&std::env::var("DATABASE_URL")?, PgConfig::throwaway("inventory_test")).await?;
    /// assert!(db.schema().starts_with("inventory_test_"));
    /// // ... the test ...
    /// db.drop_schema().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn throwaway(prefix: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self::with_schema(format!("{prefix}_{}", &suffix[..12]))
    }

    /// Sets the pool size.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets whether connecting migrates the schema.
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Sets whether appends are grouped.
    ///
    /// With grouping on, an append that finds the store idle runs at once, alone, as without
    /// it. Appends that arrive while commits are in flight wait for the next group: up to 64
    /// of them, on distinct streams, are written by one statement in one transaction, so they
    /// share one commit (one WAL flush) instead of paying one each. Each keeps its own
    /// expected-version check, its own versions and positions and its own command-id check,
    /// and is answered only after the group's commit. A member that fails a check (a
    /// [`Conflict`](cqrs_core::Error::Conflict), a
    /// [`CommandIdReused`](cqrs_core::Error::CommandIdReused)) writes nothing and fails alone;
    /// its neighbours are written. The all-stream stays gap-safe (a group is one transaction)
    /// and subscribers are woken as for any append.
    ///
    /// It is meant for many writers appending at once in one process; see
    /// `cqrs-bench/RESULTS.md` for what it measured (it is off by default because it did not
    /// win everywhere there). The price: appends of this store run one statement at a time,
    /// so an append that waits on a lock (a row of the same stream inserted by a transaction
    /// of [`append_in`](crate::PgEventStore::append_in) still open) holds back every other
    /// append of the store until it ends.
    ///
    /// ```no_run
    /// use cqrs_postgres::{PgConfig, PgDatabase};
    /// # tokio::runtime::Runtime::new()?.block_on(async {
    /// let config = PgConfig::with_schema("bank").group_appends(true);
    /// let db = PgDatabase::connect(&std::env::var("DATABASE_URL")?, config).await?;
    /// # let _ = db;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn group_appends(mut self, on: bool) -> Self {
        self.group_appends = on;
        self
    }
}

/// Checks a schema name; only plain lowercase identifiers are accepted, so the name never
/// needs quoting in `search_path`, in `CREATE SCHEMA` or in a notification channel.
pub(crate) fn check_schema(schema: &str) -> Result<()> {
    let mut chars = schema.chars();
    let ok_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok_start && ok_rest && schema.len() <= 48 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "schema name {schema:?}: use lowercase letters, digits and _, at most 48 bytes"
        )))
    }
}

/// Connect options whose sessions use `schema` (and only it) as their `search_path`.
///
/// This is how the schema is chosen: every statement of this crate, and of the migrations, is
/// unqualified, and the server resolves it in the session's schema. Transactional projectors
/// writing unqualified read-model tables get them in the same schema.
pub fn schema_options(options: PgConnectOptions, schema: &str) -> Result<PgConnectOptions> {
    check_schema(schema)?;
    Ok(options.options([("search_path", schema)]))
}

/// Opens the pool the stores share.
pub(crate) async fn open_pool(options: PgConnectOptions, config: &PgConfig) -> Result<PgPool> {
    let options = if options.get_application_name().is_none() {
        options.application_name("cqrs-postgres")
    } else {
        options
    };
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        // NOTE: sqlx pings each connection when it goes back to the pool. Pinging again on
        // acquire would add a round trip to every append under load, so only a connection that
        // sat idle for a while (and may have been cut meanwhile) is pinged before use.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_millis(100) {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(Error::backend)
}

/// Creates `schema` if needed and runs [`MIGRATOR`] in it.
///
/// `options` are the plain connect options (any `search_path` in them is replaced). The
/// migrations' bookkeeping table (`_sqlx_migrations`) lives in the schema too, so each schema
/// is migrated on its own.
pub async fn migrate(options: &PgConnectOptions, schema: &str) -> Result<()> {
    check_schema(schema)?;
    let mut conn = PgConnection::connect_with(options)
        .await
        .map_err(Error::backend)?;
    // NOTE: the name was checked above to be a plain identifier, so it is safe to splice in.
    // The lock keeps processes starting together from racing on CREATE SCHEMA (not safe
    // against itself even with IF NOT EXISTS); closing the session frees it.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SELECT pg_advisory_lock(hashtextextended('cqrs-postgres-migrate', 0)); \
         CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}"
    )))
    .execute(&mut conn)
    .await
    .map_err(Error::backend)?;
    MIGRATOR.run(&mut conn).await.map_err(Error::backend)?;
    conn.close().await.map_err(Error::backend)
}
