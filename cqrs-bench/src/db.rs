//! Schemas of a run: each workload gets fresh tables in a schema of its own, dropped after.

use std::str::FromStr;

use cqrs_postgres::{PgConfig, PgEventStore, schema_options};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::BenchError;

/// Where the harness works: the database and the prefix of its schemas.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub(crate) url: String,
    prefix: String,
}

impl Db {
    pub(crate) fn new(url: &str) -> Self {
        Db {
            url: url.to_owned(),
            prefix: format!("bench_{}", std::process::id()),
        }
    }

    /// A schema name of this process for `tag` (lowercase letters, digits and `_`).
    pub(crate) fn schema(&self, tag: &str) -> String {
        format!("{}_{tag}", self.prefix)
    }

    /// A store in a new (migrated) schema, appends grouped as the store's default says.
    pub(crate) async fn store(&self, schema: &str) -> Result<PgEventStore, BenchError> {
        self.store_grouped(schema, PgConfig::default().group_appends)
            .await
    }

    /// A store in a new (migrated) schema, with group append on or off.
    pub(crate) async fn store_grouped(
        &self,
        schema: &str,
        group: bool,
    ) -> Result<PgEventStore, BenchError> {
        self.drop_schema(schema).await?;
        let config = PgConfig::with_schema(schema)
            .max_connections(16)
            .group_appends(group);
        let store = PgEventStore::connect(&self.url, config).await?;
        sqlx::query(crate::domain::CREATE_ACCOUNTS)
            .execute(store.pool())
            .await?;
        Ok(store)
    }

    /// A store on an existing schema, without migrating.
    pub(crate) async fn open(&self, schema: &str) -> Result<PgEventStore, BenchError> {
        let config = PgConfig::with_schema(schema)
            .max_connections(16)
            .migrate(false);
        Ok(PgEventStore::connect(&self.url, config).await?)
    }

    /// A plain sqlx pool whose sessions use `schema`.
    pub(crate) async fn plain_pool(&self, schema: &str, size: u32) -> Result<PgPool, BenchError> {
        let options = schema_options(PgConnectOptions::from_str(&self.url)?, schema)?;
        Ok(PgPoolOptions::new()
            .max_connections(size)
            // NOTE: as in the store's pool: a ping on every acquire would add a round trip to
            // each raw statement and flatter the framework.
            .test_before_acquire(false)
            .connect_with(options)
            .await?)
    }

    async fn admin(&self) -> Result<PgConnection, BenchError> {
        Ok(PgConnection::connect(&self.url).await?)
    }

    /// Runs one DDL statement on an admin connection.
    ///
    /// NOTE: the names spliced into these statements are built here from a pid and fixed
    /// tags, so splicing is safe.
    async fn ddl(&self, sql: String) -> Result<(), BenchError> {
        let mut conn = self.admin().await?;
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut conn).await?;
        Ok(())
    }

    /// Creates the database `name` (dropping one left by an earlier run).
    pub(crate) async fn create_database(&self, name: &str) -> Result<(), BenchError> {
        self.drop_database(name).await?;
        self.ddl(format!("CREATE DATABASE {name}")).await
    }

    /// Drops the database `name`, closing the sessions still on it.
    pub(crate) async fn drop_database(&self, name: &str) -> Result<(), BenchError> {
        self.ddl(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// The harness's URL with the database `name` instead of its own.
    pub(crate) fn url_of(&self, name: &str) -> String {
        let (base, query) = self.url.split_once('?').unwrap_or((&self.url, ""));
        let rest = base.split_once("://").map_or(base, |(_, r)| r);
        let host_end = base.len() - rest.len() + rest.find('/').unwrap_or(rest.len());
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{}/{name}{query}", &base[..host_end])
    }

    /// The prefix of this process's schemas.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Drops `schema` and everything in it, if it exists.
    pub(crate) async fn drop_schema(&self, schema: &str) -> Result<(), BenchError> {
        self.ddl(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await
    }

    /// Closes the store's pool and drops its schema.
    pub(crate) async fn finish(&self, store: PgEventStore) -> Result<(), BenchError> {
        let schema = store.schema().to_owned();
        store.pool().close().await;
        drop(store);
        self.drop_schema(&schema).await
    }

    /// Drops every schema this process created (after a failure too).
    pub(crate) async fn drop_all(&self) -> Result<(), BenchError> {
        let mut conn = self.admin().await?;
        let names: Vec<String> =
            sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
                .bind(format!("{}\\_%", self.prefix))
                .fetch_all(&mut conn)
                .await?;
        for n in names {
            self.drop_schema(&n).await?;
        }
        Ok(())
    }

    /// `SHOW name` on the server.
    pub(crate) async fn show(&self, name: &str) -> Result<String, BenchError> {
        let mut conn = self.admin().await?;
        let v: String = sqlx::raw_sql(AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await
            .and_then(|row| sqlx::Row::try_get(&row, 0))?;
        Ok(v)
    }
}
