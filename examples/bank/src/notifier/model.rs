//! The notifier's read model: what it knows of each account and the notices it sent, two
//! tables in its own database (SQLite, or a schema `notifier` on PostgreSQL), written by the
//! [`Notices`] projector through the inbox.

use std::sync::Arc;

use cqrs_core::{BoxError, InboxSubscriber};
use cqrs_postgres::{PgConfig, PgEventStore};
use cqrs_sqlite::SqliteDatabase;

use super::projection::{NAME, Notices, PG_SCHEMA};

/// The notifier's default database: `./notifier.db`.
pub const DEFAULT_NOTIFIER_DATABASE: &str = "sqlite:notifier.db?mode=rwc";

/// The PostgreSQL schema of the notifier's tables, its inbox and its migrations: apart from
/// the bank's, should both share one database.
const PG_SCHEMA_NAME: &str = "notifier";

/// What the notifier knows of one account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifiedAccount {
    /// The owner.
    pub owner: String,
    /// The balance after the latest event heard, in minor units.
    pub balance: u64,
    /// The notices sent to the owner, in the order they were sent.
    pub notices: Vec<String>,
}

/// One notice sent.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Notice {
    /// Its place in the order of sending, from 1.
    pub seq: i64,
    /// The account it is about.
    pub account_id: String,
    /// The account's version (the event's stream version) it was sent for.
    pub version: i64,
    /// The text.
    pub notice: String,
    /// The id of the event (the broker message) it was sent for.
    pub event_id: String,
    /// When it was sent (UTC, RFC 3339).
    pub sent_at: String,
}

/// The notifier's read model, in a database of its own.
#[derive(Debug, Clone)]
pub struct Notifier {
    store: Store,
}

#[derive(Debug, Clone)]
enum Store {
    Sqlite(SqliteDatabase),
    Postgres(PgEventStore),
}

/// Runs the same query on whichever pool the notifier has.
macro_rules! fetch {
    ($self:expr, $method:ident, $query:ident $(<$row:ty>)?, $sql:expr $(, $arg:expr)*) => {
        match &$self.store {
            Store::Sqlite(db) => sqlx::$query$(::<_, $row>)?($sql)$(.bind($arg))*.$method(db.pool()).await,
            Store::Postgres(pg) => sqlx::$query$(::<_, $row>)?($sql)$(.bind($arg))*.$method(pg.pool()).await,
        }
    };
}

impl Notifier {
    /// Opens (creating it if missing) the notifier's database: a file path, a `sqlite:` URL,
    /// `sqlite::memory:`, or `postgres://...` (the schema `notifier` of that database).
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let config = PgConfig::with_schema(PG_SCHEMA_NAME).max_connections(4);
            let pg = PgEventStore::connect(url, config).await?;
            // NOTE: notifiers starting together would race on CREATE TABLE IF NOT EXISTS.
            let mut tx = pg.pool().begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bank-notifier-tables'))")
                .execute(&mut *tx)
                .await?;
            for ddl in PG_SCHEMA {
                sqlx::query(*ddl).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Store::Postgres(pg)
        } else {
            let db = SqliteDatabase::open(url).await?;
            db.transactional(Notices).setup().await?;
            Store::Sqlite(db)
        };
        Ok(Notifier { store })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.store {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The read model behind its inbox: each event id is recorded in the transaction that
    /// writes the read model.
    pub(crate) fn inbox(&self) -> Arc<dyn InboxSubscriber> {
        match &self.store {
            Store::Sqlite(db) => Arc::new(db.transactional(Notices)),
            Store::Postgres(pg) => Arc::new(pg.transactional(Notices)),
        }
    }

    /// What the notifier knows of account `id`.
    pub async fn account(&self, id: &str) -> Result<Option<NotifiedAccount>, BoxError> {
        let row: Option<(String, i64)> = fetch!(
            self,
            fetch_optional,
            query_as<(String, i64)>,
            "SELECT owner, balance FROM notifier_accounts WHERE id = $1",
            id
        )?;
        let Some((owner, balance)) = row else {
            return Ok(None);
        };
        let notices: Vec<String> = fetch!(
            self,
            fetch_all,
            query_scalar<String>,
            "SELECT notice FROM notices WHERE account_id = $1 ORDER BY seq",
            id
        )?;
        Ok(Some(NotifiedAccount {
            owner,
            balance: u64::try_from(balance)?,
            notices,
        }))
    }

    /// Every notice sent, in order.
    pub async fn notices(&self) -> Result<Vec<Notice>, BoxError> {
        Ok(fetch!(
            self,
            fetch_all,
            query_as<Notice>,
            "SELECT seq, account_id, version, notice, event_id, sent_at FROM notices ORDER BY seq"
        )?)
    }

    /// How many events the notifier has handled: the size of its inbox.
    pub async fn heard(&self) -> Result<u64, BoxError> {
        let n: i64 = fetch!(
            self,
            fetch_one,
            query_scalar<i64>,
            "SELECT count(*) FROM inbox WHERE subscriber = $1",
            NAME
        )?;
        Ok(u64::try_from(n)?)
    }

    /// Closes the database.
    pub async fn close(&self) {
        match &self.store {
            Store::Sqlite(db) => db.close().await,
            Store::Postgres(pg) => pg.pool().close().await,
        }
    }
}
