//! The notifier's read model: what it knows of each account and the notices it sent, two
//! tables in its own SQLite database, written by a [`SqliteProjector`] through the inbox.

use cqrs_core::{BoxError, RecordedEvent, async_trait};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector, SqliteTransactional};
use sqlx::SqliteConnection;

use crate::domain::account::{Account, AccountEvent};
use crate::readmodel::LARGE_WITHDRAWAL;

/// The notifier's default database: `./notifier.db`.
pub const DEFAULT_NOTIFIER_DATABASE: &str = "sqlite:notifier.db?mode=rwc";

// NOTE: `notices` has no unique key on the event: a notice stands for a message sent to a
// customer, and the inbox (its row commits with the notice) is what keeps it to one.
const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notifier_accounts (id TEXT PRIMARY KEY, owner TEXT NOT NULL, \
     balance INTEGER NOT NULL, version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notices (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     account_id TEXT NOT NULL, version INTEGER NOT NULL, notice TEXT NOT NULL, \
     event_id TEXT NOT NULL, sent_at TEXT NOT NULL)",
];

const OPENED: &str = "INSERT INTO notifier_accounts (id, owner, balance, version) VALUES (?, ?, 0, ?) \
     ON CONFLICT (id) DO UPDATE SET owner = excluded.owner";
// NOTE: a broker may deliver an account's events out of order after a redelivery; the
// version keeps the latest balance.
const BALANCE: &str = "INSERT INTO notifier_accounts (id, owner, balance, version) VALUES (?, '', ?, ?) \
     ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, version = excluded.version \
     WHERE excluded.version > notifier_accounts.version";
const NOTICE: &str = "INSERT INTO notices (account_id, version, notice, event_id, sent_at) \
     VALUES (?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";

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

/// The notifier's read model, in a SQLite database of its own.
#[derive(Debug, Clone)]
pub struct Notifier {
    db: SqliteDatabase,
}

impl Notifier {
    /// Opens (creating it if missing) the notifier's database: a file path, a `sqlite:` URL or
    /// `sqlite::memory:`.
    pub async fn open(url: &str) -> Result<Self, BoxError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(
                "the notifier keeps its read model in SQLite: give it a file path, \
                        a sqlite: URL or sqlite::memory:"
                    .into(),
            );
        }
        let notifier = Notifier {
            db: SqliteDatabase::open(url).await?,
        };
        notifier.inbox().setup().await?;
        Ok(notifier)
    }

    /// The read model behind its inbox: a [`cqrs_core::InboxSubscriber`] that records each
    /// event id and the read-model writes in one transaction.
    pub(crate) fn inbox(&self) -> SqliteTransactional<Notices> {
        self.db.transactional(Notices)
    }

    /// What the notifier knows of account `id`.
    pub async fn account(&self, id: &str) -> Result<Option<NotifiedAccount>, BoxError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT owner, balance FROM notifier_accounts WHERE id = ?")
                .bind(id)
                .fetch_optional(self.db.pool())
                .await?;
        let Some((owner, balance)) = row else {
            return Ok(None);
        };
        let notices =
            sqlx::query_scalar("SELECT notice FROM notices WHERE account_id = ? ORDER BY seq")
                .bind(id)
                .fetch_all(self.db.pool())
                .await?;
        Ok(Some(NotifiedAccount {
            owner,
            balance: u64::try_from(balance)?,
            notices,
        }))
    }

    /// Every notice sent, in order.
    pub async fn notices(&self) -> Result<Vec<Notice>, BoxError> {
        Ok(sqlx::query_as(
            "SELECT seq, account_id, version, notice, event_id, sent_at FROM notices ORDER BY seq",
        )
        .fetch_all(self.db.pool())
        .await?)
    }

    /// Closes the database.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// The notifier's projector: account events in, balances and notices out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notices;

impl Notices {
    /// The notice an event calls for, if any.
    fn notice(event: &AccountEvent) -> Option<String> {
        match event {
            AccountEvent::Opened { owner } => Some(format!("welcome, {owner}")),
            AccountEvent::Withdrawn { amount, .. } => {
                (*amount >= LARGE_WITHDRAWAL).then(|| format!("large withdrawal of {amount}"))
            }
            AccountEvent::TransferCredited { amount, .. } => Some(format!("you received {amount}")),
            AccountEvent::Closed => Some("your account is closed".to_owned()),
            AccountEvent::Deposited { .. }
            | AccountEvent::TransferDebited { .. }
            | AccountEvent::TransferRefunded { .. }
            | AccountEvent::TransferSettled { .. } => None,
        }
    }
}

#[async_trait]
impl SqliteProjector for Notices {
    fn name(&self) -> &str {
        "notifier"
    }

    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        for ddl in SCHEMA {
            sqlx::query(*ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let Some(e) = event.decode_for::<Account>()? else {
            return Ok(());
        };
        let (id, version) = (&e.stream.id, i64::try_from(event.stream_version)?);
        match &e.payload {
            AccountEvent::Opened { owner } => {
                sqlx::query(OPENED)
                    .bind(id)
                    .bind(owner)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            AccountEvent::Deposited { balance, .. }
            | AccountEvent::Withdrawn { balance, .. }
            | AccountEvent::TransferDebited { balance, .. }
            | AccountEvent::TransferCredited { balance, .. }
            | AccountEvent::TransferRefunded { balance, .. } => {
                sqlx::query(BALANCE)
                    .bind(id)
                    .bind(i64::try_from(*balance)?)
                    .bind(version)
                    .execute(&mut *conn)
                    .await?;
            }
            AccountEvent::TransferSettled { .. } | AccountEvent::Closed => {}
        }
        if let Some(notice) = Self::notice(&e.payload) {
            sqlx::query(NOTICE)
                .bind(id)
                .bind(version)
                .bind(&notice)
                .bind(event.event_id.to_string())
                .execute(&mut *conn)
                .await?;
            // NOTE: logged before the commit: a failed commit logs a notice that was not sent.
            tracing::info!(account = %id, version, %notice, "notice");
        }
        Ok(())
    }

    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        for table in ["DELETE FROM notifier_accounts", "DELETE FROM notices"] {
            sqlx::query(table).execute(&mut *conn).await?;
        }
        Ok(())
    }
}
