//! Dead letters in a table.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::{DeadLetter, DeadLetterStatus, DeadLetterStore, Error, RecordedEvent, Result};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::error::backend;
use crate::rows::to_i64;

/// A [`DeadLetterStore`] on PostgreSQL (table `dead_letters`).
///
/// The parked event is kept whole as JSON, with its stream, version, position and type in
/// columns of their own for operators' queries.
#[derive(Debug, Clone)]
pub struct PgDeadLetterStore {
    pool: PgPool,
}

impl PgDeadLetterStore {
    /// The dead-letter store of the pool's schema.
    pub fn new(pool: PgPool) -> Self {
        PgDeadLetterStore { pool }
    }

    /// Dead letters, of one subscriber or of all, with one status or any, oldest first.
    async fn select(
        &self,
        subscriber: Option<&str>,
        status: Option<DeadLetterStatus>,
    ) -> Result<Vec<DeadLetter>> {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, subscriber, event::text, error, attempts, parked_at, status FROM dead_letters \
             WHERE ($1::text IS NULL OR subscriber = $1) AND ($2::text IS NULL OR status = $2) \
             ORDER BY seq",
        )
        .bind(subscriber)
        .bind(status.map(status_name))
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.into_iter().map(letter).collect()
    }
}

fn status_name(status: DeadLetterStatus) -> &'static str {
    match status {
        DeadLetterStatus::RetryRequested => "retry_requested",
        DeadLetterStatus::Held => "held",
        _ => "parked",
    }
}

type Row = (Uuid, String, String, String, i32, DateTime<Utc>, String);

fn letter((id, subscriber, event, error, attempts, parked_at, status): Row) -> Result<DeadLetter> {
    let event: RecordedEvent = serde_json::from_str(&event)
        .map_err(|e| Error::Invalid(format!("dead letter {id} holds an unreadable event: {e}")))?;
    let status = match status.as_str() {
        "retry_requested" => DeadLetterStatus::RetryRequested,
        "held" => DeadLetterStatus::Held,
        _ => DeadLetterStatus::Parked,
    };
    Ok(DeadLetter {
        id,
        subscriber,
        event,
        error,
        attempts: attempts.max(0) as u32,
        parked_at,
        status,
    })
}

/// Parks `l` through `exec` (the pool, or the transaction of a transactional projector).
///
/// NOTE: keyed by subscriber and event position: parking the same event again updates the
/// letter there is, which keeps its id and its place (`seq`) in the oldest-first order.
pub(crate) async fn park<'e>(exec: impl PgExecutor<'e>, l: &DeadLetter) -> Result<()> {
    let event = serde_json::to_string(&l.event).map_err(|source| Error::Serialize {
        event_type: l.event.event_type.clone(),
        source,
    })?;
    sqlx::query(
        "INSERT INTO dead_letters (id, subscriber, stream_category, stream_id, stream_version, position, \
         event_type, event, error, attempts, parked_at, status) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12) \
         ON CONFLICT (subscriber, position) DO UPDATE SET event = EXCLUDED.event, \
         error = EXCLUDED.error, attempts = EXCLUDED.attempts, parked_at = EXCLUDED.parked_at, \
         status = EXCLUDED.status",
    )
    .bind(l.id)
    .bind(&l.subscriber)
    .bind(&l.event.stream.category)
    .bind(&l.event.stream.id)
    .bind(to_i64(l.event.stream_version, "stream version")?)
    .bind(to_i64(l.event.cursor.position, "position")?)
    .bind(&l.event.event_type)
    .bind(event)
    .bind(&l.error)
    .bind(i32::try_from(l.attempts).unwrap_or(i32::MAX))
    .bind(l.parked_at)
    .bind(status_name(l.status))
    .execute(exec)
    .await
    .map_err(backend)?;
    Ok(())
}

/// Removes the letter `id` through `exec`; false if there was none.
pub(crate) async fn remove<'e>(exec: impl PgExecutor<'e>, id: Uuid) -> Result<bool> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE id = $1")
        .bind(id)
        .execute(exec)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected() > 0)
}

/// Removes every letter of `subscriber` through `exec`; returns how many.
pub(crate) async fn clear<'e>(exec: impl PgExecutor<'e>, subscriber: &str) -> Result<u64> {
    let done = sqlx::query("DELETE FROM dead_letters WHERE subscriber = $1")
        .bind(subscriber)
        .execute(exec)
        .await
        .map_err(backend)?;
    Ok(done.rows_affected())
}

#[async_trait]
impl DeadLetterStore for PgDeadLetterStore {
    async fn park(&self, l: DeadLetter) -> Result<()> {
        park(&self.pool, &l).await
    }

    async fn list(&self, subscriber: Option<&str>) -> Result<Vec<DeadLetter>> {
        self.select(subscriber, None).await
    }

    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> Result<()> {
        let done = sqlx::query("UPDATE dead_letters SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status_name(status))
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("dead letter {id}")));
        }
        Ok(())
    }

    async fn remove(&self, id: Uuid) -> Result<()> {
        if !remove(&self.pool, id).await? {
            return Err(Error::NotFound(format!("dead letter {id}")));
        }
        Ok(())
    }

    async fn find(&self, subscriber: &str, position: u64) -> Result<Option<DeadLetter>> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, subscriber, event::text, error, attempts, parked_at, status FROM dead_letters \
             WHERE subscriber = $1 AND position = $2",
        )
        .bind(subscriber)
        .bind(to_i64(position, "position")?)
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.map(letter).transpose()
    }

    async fn clear(&self, subscriber: &str) -> Result<u64> {
        clear(&self.pool, subscriber).await
    }

    async fn counts(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT subscriber, count(*) FROM dead_letters GROUP BY subscriber")
                .fetch_all(&self.pool)
                .await
                .map_err(backend)?;
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
