//! Dead letters: events a subscriber could not handle, kept whole with the error.

use async_trait::async_trait;
use cqrs_core::{DeadLetter, DeadLetterStatus, DeadLetterStore, Error, RecordedEvent, Result};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;

use crate::database::SqliteDatabase;
use crate::error::{Failure, retry_busy, to_i64};
use crate::rows::{format_time, parse_time};

/// The dead-letter store of a [`SqliteDatabase`].
///
/// The parked event is kept whole (as JSON), so a dead letter outlives any later change to the
/// event's row and can be retried as it was.
#[derive(Debug, Clone)]
pub struct SqliteDeadLetterStore {
    pub(crate) db: SqliteDatabase,
}

impl SqliteDeadLetterStore {
    /// Dead letters, of one subscriber or of all, with one status or any, oldest first.
    async fn select(
        &self,
        subscriber: Option<&str>,
        status: Option<DeadLetterStatus>,
    ) -> Result<Vec<DeadLetter>> {
        let reader = &self.db.inner.reader;
        let status = status.map(status_text);
        let rows = retry_busy!(&self.db.inner.config, async {
            Ok(sqlx::query(
                "SELECT id, subscriber, event, error, attempts, parked_at, status FROM dead_letters \
                 WHERE (?1 IS NULL OR subscriber = ?1) AND (?2 IS NULL OR status = ?2) \
                 ORDER BY seq",
            )
            .bind(subscriber)
            .bind(status)
            .fetch_all(reader)
            .await?)
        })?;
        rows.iter().map(letter_from_row).collect()
    }
}

fn status_text(status: DeadLetterStatus) -> &'static str {
    match status {
        DeadLetterStatus::RetryRequested => "retry_requested",
        DeadLetterStatus::Held => "held",
        // NOTE: the core enum is non-exhaustive; a status this version does not know is kept
        // as parked, the state that waits for an operator.
        _ => "parked",
    }
}

fn letter_from_row(row: &SqliteRow) -> Result<DeadLetter> {
    let get_str = |c: &str| row.try_get::<String, _>(c).map_err(Error::backend);
    let id = get_str("id")?;
    let bad = |what: String| Error::Invalid(format!("dead letter {id}: {what}"));
    let event: RecordedEvent = serde_json::from_str(&get_str("event")?)
        .map_err(|e| bad(format!("event does not parse: {e}")))?;
    let attempts = row.try_get::<i64, _>("attempts").map_err(Error::backend)?;
    let parked_at = get_str("parked_at")?;
    Ok(DeadLetter {
        id: Uuid::parse_str(&id).map_err(|e| bad(e.to_string()))?,
        subscriber: get_str("subscriber")?,
        error: get_str("error")?,
        attempts: u32::try_from(attempts)
            .map_err(|_| bad(format!("attempts {attempts} out of range")))?,
        parked_at: parse_time(&parked_at)
            .ok_or_else(|| bad(format!("parked_at {parked_at:?} is not RFC 3339")))?,
        status: match get_str("status")?.as_str() {
            "retry_requested" => DeadLetterStatus::RetryRequested,
            "held" => DeadLetterStatus::Held,
            _ => DeadLetterStatus::Parked,
        },
        event,
    })
}

/// Parks `letter` on `conn` (the writer, or the transaction of a transactional projector).
///
/// NOTE: keyed by subscriber and event position: parking the same event again updates the
/// letter there is, which keeps its id and its place (`seq`) in the oldest-first order.
pub(crate) async fn park(conn: &mut SqliteConnection, letter: &DeadLetter) -> Result<(), Failure> {
    let event = serde_json::to_string(&letter.event).map_err(Error::backend)?;
    let position = to_i64(letter.event.cursor.position, "position")?;
    sqlx::query(
        "INSERT INTO dead_letters (id, subscriber, position, event, error, attempts, parked_at, status) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (subscriber, position) DO UPDATE SET event = excluded.event, \
         error = excluded.error, attempts = excluded.attempts, \
         parked_at = excluded.parked_at, status = excluded.status",
    )
    .bind(letter.id.to_string())
    .bind(&letter.subscriber)
    .bind(position)
    .bind(&event)
    .bind(&letter.error)
    .bind(i64::from(letter.attempts))
    .bind(format_time(letter.parked_at))
    .bind(status_text(letter.status))
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes the letter `id` on `conn`; false if there was none.
pub(crate) async fn remove(conn: &mut SqliteConnection, id: Uuid) -> Result<bool, Failure> {
    Ok(sqlx::query("DELETE FROM dead_letters WHERE id = ?")
        .bind(id.to_string())
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// Removes every letter of `subscriber` on `conn`; returns how many.
pub(crate) async fn clear(conn: &mut SqliteConnection, subscriber: &str) -> Result<u64, Failure> {
    Ok(sqlx::query("DELETE FROM dead_letters WHERE subscriber = ?")
        .bind(subscriber)
        .execute(conn)
        .await?
        .rows_affected())
}

#[async_trait]
impl DeadLetterStore for SqliteDeadLetterStore {
    async fn park(&self, letter: DeadLetter) -> Result<()> {
        let writer = &self.db.inner.writer;
        retry_busy!(&self.db.inner.config, async {
            park(&mut *writer.acquire().await?, &letter).await
        })
    }

    async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>> {
        self.select(subscriber, None).await
    }

    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()> {
        let writer = &self.db.inner.writer;
        let changed = retry_busy!(&self.db.inner.config, async {
            Ok(
                sqlx::query("UPDATE dead_letters SET status = ? WHERE id = ?")
                    .bind(status_text(status))
                    .bind(id.to_string())
                    .execute(writer)
                    .await?
                    .rows_affected(),
            )
        })?;
        if changed == 0 {
            return Err(Error::NotFound(format!("dead letter {id}")));
        }
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<()> {
        let writer = &self.db.inner.writer;
        let removed = retry_busy!(&self.db.inner.config, async {
            remove(&mut *writer.acquire().await?, id).await
        })?;
        if !removed {
            return Err(Error::NotFound(format!("dead letter {id}")));
        }
        Ok(())
    }

    async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
        let reader = &self.db.inner.reader;
        let position = to_i64(position, "position")?;
        let row = retry_busy!(&self.db.inner.config, async {
            Ok(sqlx::query(
                "SELECT id, subscriber, event, error, attempts, parked_at, status FROM dead_letters \
                 WHERE subscriber = ? AND position = ?",
            )
            .bind(subscriber)
            .bind(position)
            .fetch_optional(reader)
            .await?)
        })?;
        row.as_ref().map(letter_from_row).transpose()
    }

    async fn clear(&self, subscriber: &str) -> Result<u64> {
        let writer = &self.db.inner.writer;
        retry_busy!(&self.db.inner.config, async {
            clear(&mut *writer.acquire().await?, subscriber).await
        })
    }

    async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let reader = &self.db.inner.reader;
        let rows: Vec<(String, i64)> = retry_busy!(&self.db.inner.config, async {
            Ok(
                sqlx::query_as("SELECT subscriber, count(*) FROM dead_letters GROUP BY subscriber")
                    .fetch_all(reader)
                    .await?,
            )
        })?;
        Ok(rows
            .into_iter()
            .map(|(subscriber, n)| (subscriber, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn retry_requested(&self, subscriber: &str) -> Result<Vec<DeadLetter>> {
        self.select(Some(subscriber), Some(DeadLetterStatus::RetryRequested))
            .await
    }
}
