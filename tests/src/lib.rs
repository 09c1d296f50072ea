//! Shared support for the cross-crate tests in `tests/tests/`: a PostgreSQL store in a schema of
//! its own (dropped afterwards), and SQLite databases on one file in a temporary folder.
//!
//! PostgreSQL comes from `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`);
//! a test that needs it fails, loudly, when it is not reachable.

use std::path::PathBuf;

use cqrs_postgres::{PgConfig, PgEventStore, sqlx};
use cqrs_sqlite::SqliteDatabase;

/// The PostgreSQL server the tests use.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A PostgreSQL schema of one test: its stores, migrated; dropped by [`PgSchema::drop`].
#[derive(Debug)]
pub struct PgSchema {
    /// The schema's name.
    pub name: String,
}

impl PgSchema {
    /// A fresh schema name; nothing is created until a store connects.
    pub fn new() -> Self {
        PgSchema {
            name: format!("it_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// A store in this schema (the migrations run on first connect).
    pub async fn store(&self) -> PgEventStore {
        PgEventStore::connect(&database_url(), PgConfig::with_schema(&self.name))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {}: {e}", database_url()))
    }

    /// Drops the schema and everything in it.
    pub async fn drop(self, store: PgEventStore) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .expect("drop the test schema");
    }
}

impl Default for PgSchema {
    fn default() -> Self {
        Self::new()
    }
}

/// A temporary folder with one SQLite file in it, opened as often as a test likes.
#[derive(Debug)]
pub struct SqliteFile {
    dir: tempfile::TempDir,
}

impl SqliteFile {
    /// A new, empty folder.
    pub fn new() -> Self {
        SqliteFile {
            dir: tempfile::tempdir().expect("temporary folder"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    /// Opens the file (another handle each call, as another process would).
    pub async fn open(&self) -> SqliteDatabase {
        SqliteDatabase::open_path(self.path(), Default::default())
            .await
            .expect("open the SQLite file")
    }
}

impl Default for SqliteFile {
    fn default() -> Self {
        Self::new()
    }
}
