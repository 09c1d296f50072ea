//! The event store of a database: a cheap view of the [`SqliteDatabase`] hub. What it does
//! lives by concern in `append.rs`, `read_stream.rs` and `read_all.rs`.

use cqrs_core::Result;

use crate::database::SqliteDatabase;
use crate::error::retry_busy;

/// The event store of a [`SqliteDatabase`].
///
/// Appends run one at a time (or gathered, one transaction for those that queue together) on
/// the database's write connection, under SQLite's write lock, so positions are handed out in
/// commit order: the all-stream has no gaps and a reader resuming after a position never misses
/// an event ([`Cursor::tx`](cqrs_core::Cursor::tx) is always 0). Appends wake the subscribers of this handle at once, and those of other
/// handles on the file (other processes) within their
/// [`SqliteConfig::watch_interval`](crate::SqliteConfig::watch_interval).
#[derive(Debug, Clone)]
pub struct SqliteEventStore {
    pub(crate) db: SqliteDatabase,
}

impl SqliteEventStore {
    /// The database this store is a view of.
    pub fn database(&self) -> &SqliteDatabase {
        &self.db
    }

    /// Runs one read statement on the reader pool, again while another process holds a lock.
    pub(crate) async fn read(
        &self,
        sql: &'static str,
        bind: impl Fn(SqlQuery) -> SqlQuery,
    ) -> Result<Vec<sqlx::sqlite::SqliteRow>> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            Ok(bind(sqlx::query(sql)).fetch_all(reader).await?)
        })
    }
}

pub(crate) type SqlQuery = sqlx::query::Query<'static, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;

/// A limit or a version as a stored integer, capped at the largest SQLite holds.
pub(crate) fn capped(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
