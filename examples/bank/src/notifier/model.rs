//! The notifier's read model: what it knows of each account and the notices it sent, two
//! tables in its own database (SQLite, or the schema `notifier` on PostgreSQL), written by the
//! [`Notices`] projector behind the inbox.

use std::sync::Arc;

use chrono::{SecondsFormat, Utc};
use cqrs_core::{BoxError, InboxSubscriber, RecordedEvent, async_trait};
use cqrs_postgres::{PgConfig, PgDatabase, PgProjector};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
use sqlx::{
    Database, Encode, Executor, FromRow, IntoArguments, PgConnection, Pool, Postgres, Sqlite,
    SqliteConnection, Type,
};

use crate::domain::account::{Account, AccountEvent};
use crate::readmodel::LARGE_WITHDRAWAL;

/// The notifier's default database: `./notifier.db`.
pub const DEFAULT_NOTIFIER_DATABASE: &str = "sqlite:notifier.db?mode=rwc";

// NOTE: `notices` has no unique key on the event: a notice stands for a message sent to a
// customer, and the inbox (its row commits with the notice) is what keeps it to one.
const ACCOUNTS: &str = "CREATE TABLE IF NOT EXISTS notifier_accounts (id TEXT PRIMARY KEY, \
     owner TEXT NOT NULL, balance BIGINT NOT NULL, version BIGINT NOT NULL)";
const NOTICES: &str = "CREATE TABLE IF NOT EXISTS notices (seq {SEQ}, \
     account_id TEXT NOT NULL, version BIGINT NOT NULL, notice TEXT NOT NULL, \
     event_id TEXT NOT NULL, sent_at TEXT NOT NULL)";

/// The projector's name, the key of its inbox.
const NAME: &str = "notifier";

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
    db: Db,
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqliteDatabase),
    Postgres(PgDatabase),
}

impl Notifier {
    /// Opens (creating it if missing) the notifier's database: a file path, a `sqlite:` URL,
    /// `sqlite::memory:`, or `postgres://...` (the schema `notifier` of that database).
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let config = PgConfig::with_schema("notifier").max_connections(4);
            let pg = PgDatabase::connect(url, config).await?;
            // NOTE: notifiers starting together would race on CREATE TABLE IF NOT EXISTS.
            let mut tx = pg.pool().begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bank-notifier-tables'))")
                .execute(&mut *tx)
                .await?;
            let notices =
                NOTICES.replace("{SEQ}", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY");
            for ddl in [ACCOUNTS.to_owned(), notices] {
                sqlx::query(sqlx::AssertSqlSafe(ddl))
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            return Ok(Notifier {
                db: Db::Postgres(pg),
            });
        }
        let db = SqliteDatabase::open(url).await?;
        db.transactional(Notices).setup().await?;
        Ok(Notifier { db: Db::Sqlite(db) })
    }

    /// The read model behind its inbox: each event id is recorded in the transaction that
    /// writes the read model.
    pub fn inbox(&self) -> Arc<dyn InboxSubscriber> {
        match &self.db {
            Db::Sqlite(db) => Arc::new(db.transactional(Notices)),
            Db::Postgres(pg) => Arc::new(pg.transactional(Notices)),
        }
    }

    /// What the notifier knows of account `id`.
    pub async fn account(&self, id: &str) -> Result<Option<NotifiedAccount>, BoxError> {
        match &self.db {
            Db::Sqlite(db) => account(db.pool(), id).await,
            Db::Postgres(pg) => account(pg.pool(), id).await,
        }
    }

    /// Every notice sent, in order.
    pub async fn notices(&self) -> Result<Vec<Notice>, BoxError> {
        const ALL: &str = "SELECT seq, account_id, version, notice, event_id, sent_at \
             FROM notices ORDER BY seq";
        Ok(match &self.db {
            Db::Sqlite(db) => sqlx::query_as(ALL).fetch_all(db.pool()).await?,
            Db::Postgres(pg) => sqlx::query_as(ALL).fetch_all(pg.pool()).await?,
        })
    }

    /// How many events the notifier has handled: the size of its inbox.
    pub async fn heard(&self) -> Result<u64, BoxError> {
        const HEARD: &str = "SELECT count(*) FROM inbox WHERE subscriber = $1";
        let n: i64 = match &self.db {
            Db::Sqlite(db) => {
                sqlx::query_scalar(HEARD)
                    .bind(NAME)
                    .fetch_one(db.pool())
                    .await?
            }
            Db::Postgres(pg) => {
                sqlx::query_scalar(HEARD)
                    .bind(NAME)
                    .fetch_one(pg.pool())
                    .await?
            }
        };
        Ok(u64::try_from(n)?)
    }

    /// Closes the database.
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite(db) => db.close().await,
            Db::Postgres(pg) => pg.pool().close().await,
        }
    }
}

async fn account<DB>(pool: &Pool<DB>, id: &str) -> Result<Option<NotifiedAccount>, BoxError>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64): FromRow<'r, DB::Row>,
    for<'r> (String,): FromRow<'r, DB::Row>,
{
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT owner, balance FROM notifier_accounts WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(pool)
            .await?;
    let Some((owner, balance)) = row else {
        return Ok(None);
    };
    let notices: Vec<(String,)> =
        sqlx::query_as("SELECT notice FROM notices WHERE account_id = $1 ORDER BY seq")
            .bind(id.to_owned())
            .fetch_all(pool)
            .await?;
    Ok(Some(NotifiedAccount {
        owner,
        balance: u64::try_from(balance)?,
        notices: notices.into_iter().map(|(n,)| n).collect(),
    }))
}

/// The notifier's projector: account events in, balances and notices out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notices;

/// Writes what `event` does to the notifier's tables, and logs the notice it sends, if any.
async fn project<DB>(conn: &mut DB::Connection, event: &RecordedEvent) -> Result<(), BoxError>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
{
    let Some(e) = event.decode_for::<Account>()? else {
        return Ok(());
    };
    let (id, version) = (e.stream.id.clone(), i64::try_from(event.stream_version)?);
    match &e.payload {
        AccountEvent::Opened { owner } => {
            sqlx::query(
                "INSERT INTO notifier_accounts (id, owner, balance, version) \
                 VALUES ($1, $2, 0, $3) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner",
            )
            .bind(id.clone())
            .bind(owner.clone())
            .bind(version)
            .execute(&mut *conn)
            .await?;
        }
        AccountEvent::Deposited { balance, .. }
        | AccountEvent::Withdrawn { balance, .. }
        | AccountEvent::TransferDebited { balance, .. }
        | AccountEvent::TransferCredited { balance, .. }
        | AccountEvent::TransferRefunded { balance, .. } => {
            // NOTE: a broker may deliver an account's events out of order after a
            // redelivery; the version keeps the latest balance.
            sqlx::query(
                "INSERT INTO notifier_accounts (id, owner, balance, version) \
                 VALUES ($1, '', $2, $3) ON CONFLICT (id) DO UPDATE SET \
                 balance = excluded.balance, version = excluded.version \
                 WHERE excluded.version > notifier_accounts.version",
            )
            .bind(id.clone())
            .bind(i64::try_from(*balance)?)
            .bind(version)
            .execute(&mut *conn)
            .await?;
        }
        AccountEvent::TransferSettled { .. } | AccountEvent::Closed => {}
    }
    let notice = match &e.payload {
        AccountEvent::Opened { owner } => format!("welcome, {owner}"),
        AccountEvent::Withdrawn { amount, .. } if *amount >= LARGE_WITHDRAWAL => {
            format!("large withdrawal of {amount}")
        }
        AccountEvent::TransferCredited { amount, .. } => format!("you received {amount}"),
        AccountEvent::Closed => "your account is closed".to_owned(),
        _ => return Ok(()),
    };
    sqlx::query(
        "INSERT INTO notices (account_id, version, notice, event_id, sent_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id.clone())
    .bind(version)
    .bind(notice.clone())
    .bind(event.event_id.to_string())
    .bind(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true))
    .execute(&mut *conn)
    .await?;
    // NOTE: logged before the commit: a failed commit logs a notice that was not sent.
    tracing::info!(account = %id, version, %notice, "notice");
    Ok(())
}

#[async_trait]
impl SqliteProjector for Notices {
    fn name(&self) -> &str {
        NAME
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        let notices = NOTICES.replace("{SEQ}", "INTEGER PRIMARY KEY AUTOINCREMENT");
        for ddl in [ACCOUNTS.to_owned(), notices] {
            sqlx::query(sqlx::AssertSqlSafe(ddl))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
    async fn handle(&self, conn: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        project::<Sqlite>(conn, e).await
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::raw_sql("DELETE FROM notifier_accounts; DELETE FROM notices")
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl PgProjector for Notices {
    fn name(&self) -> &str {
        NAME
    }
    async fn handle(&self, conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        project::<Postgres>(conn, e).await
    }
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::raw_sql("DELETE FROM notifier_accounts; DELETE FROM notices")
            .execute(conn)
            .await?;
        Ok(())
    }
}
