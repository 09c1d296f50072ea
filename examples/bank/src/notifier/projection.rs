//! The notifier's projector: account events in, balances and notices out, as the same SQL on
//! SQLite and PostgreSQL (`$n` parameters, `ON CONFLICT`), run in the inbox's transaction.

use chrono::{SecondsFormat, Utc};
use cqrs_core::{BoxError, RecordedEvent, async_trait};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{PgConnection, SqliteConnection};

use crate::domain::account::{Account, AccountEvent};
use crate::readmodel::LARGE_WITHDRAWAL;

// NOTE: `notices` has no unique key on the event: a notice stands for a message sent to a
// customer, and the inbox (its row commits with the notice) is what keeps it to one.
pub(super) const SQLITE_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS notifier_accounts (id TEXT PRIMARY KEY, owner TEXT NOT NULL, \
     balance BIGINT NOT NULL, version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS notices (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
     account_id TEXT NOT NULL, version BIGINT NOT NULL, notice TEXT NOT NULL, \
     event_id TEXT NOT NULL, sent_at TEXT NOT NULL)",
];
pub(super) const PG_SCHEMA: &[&str] = &[
    SQLITE_SCHEMA[0],
    "CREATE TABLE IF NOT EXISTS notices (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
     account_id TEXT NOT NULL, version BIGINT NOT NULL, notice TEXT NOT NULL, \
     event_id TEXT NOT NULL, sent_at TEXT NOT NULL)",
];

const OPENED: &str = "INSERT INTO notifier_accounts (id, owner, balance, version) \
     VALUES ($1, $2, 0, $3) ON CONFLICT (id) DO UPDATE SET owner = excluded.owner";
// NOTE: a broker may deliver an account's events out of order after a redelivery; the
// version keeps the latest balance.
const BALANCE: &str = "INSERT INTO notifier_accounts (id, owner, balance, version) \
     VALUES ($1, '', $2, $3) ON CONFLICT (id) DO UPDATE SET balance = excluded.balance, \
     version = excluded.version WHERE excluded.version > notifier_accounts.version";
const NOTICE: &str = "INSERT INTO notices (account_id, version, notice, event_id, sent_at) \
     VALUES ($1, $2, $3, $4, $5)";
const RESET: &[&str] = &["DELETE FROM notifier_accounts", "DELETE FROM notices"];

/// The projector's name, the key of its inbox.
pub(super) const NAME: &str = "notifier";

/// The notifier's projector, for [`cqrs_sqlite::SqliteTransactional`] and
/// [`cqrs_postgres::PgTransactional`] alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notices;

enum Arg {
    Text(String),
    Int(i64),
}

/// A statement and its arguments.
type Write = (&'static str, Vec<Arg>);

/// The statements an event calls for, and the notice it sends, if any.
fn writes(event: &RecordedEvent) -> Result<(Vec<Write>, Option<String>), BoxError> {
    let Some(e) = event.decode_for::<Account>()? else {
        return Ok((Vec::new(), None));
    };
    let id = || Arg::Text(e.stream.id.clone());
    let version = i64::try_from(event.stream_version)?;
    let mut out = Vec::new();
    match &e.payload {
        AccountEvent::Opened { owner } => {
            out.push((
                OPENED,
                vec![id(), Arg::Text(owner.clone()), Arg::Int(version)],
            ));
        }
        AccountEvent::Deposited { balance, .. }
        | AccountEvent::Withdrawn { balance, .. }
        | AccountEvent::TransferDebited { balance, .. }
        | AccountEvent::TransferCredited { balance, .. }
        | AccountEvent::TransferRefunded { balance, .. } => {
            let balance = Arg::Int(i64::try_from(*balance)?);
            out.push((BALANCE, vec![id(), balance, Arg::Int(version)]));
        }
        AccountEvent::TransferSettled { .. } | AccountEvent::Closed => {}
    }
    let notice = match &e.payload {
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
    };
    if let Some(n) = &notice {
        let sent_at = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
        out.push((
            NOTICE,
            vec![
                id(),
                Arg::Int(version),
                Arg::Text(n.clone()),
                Arg::Text(event.event_id.to_string()),
                Arg::Text(sent_at),
            ],
        ));
    }
    Ok((out, notice))
}

/// Runs an event's writes on either kind of connection, then logs its notice.
macro_rules! handle {
    ($conn:expr, $event:expr) => {{
        let (writes, notice) = writes($event)?;
        for (sql, args) in writes {
            let mut q = sqlx::query(sql);
            for a in args {
                q = match a {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(n) => q.bind(n),
                };
            }
            q.execute(&mut *$conn).await?;
        }
        if let Some(notice) = notice {
            // NOTE: logged before the commit: a failed commit logs a notice that was not sent.
            tracing::info!(account = %$event.stream.id, version = $event.stream_version, %notice, "notice");
        }
        Ok(())
    }};
}

#[async_trait]
impl SqliteProjector for Notices {
    fn name(&self) -> &str {
        NAME
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        for ddl in SQLITE_SCHEMA {
            sqlx::query(*ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        handle!(conn, event)
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        for sql in RESET {
            sqlx::query(*sql).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl PgProjector for Notices {
    fn name(&self) -> &str {
        NAME
    }
    async fn handle(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        handle!(conn, event)
    }
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), BoxError> {
        for sql in RESET {
            sqlx::query(*sql).execute(&mut *conn).await?;
        }
        Ok(())
    }
}
