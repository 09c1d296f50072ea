//! Inboxes: an event delivered again (from a broker) takes effect once, atomically with the
//! read model.

mod support;

use std::sync::Arc;

use chrono::Utc;
use cqrs_core::{BoxError, Cursor, InboxSubscriber, Metadata, RecordedEvent, StreamId};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;
use uuid::Uuid;

/// Adds each event's amount to a total; fails on a negative amount after writing.
#[derive(Debug)]
struct Total;

#[async_trait::async_trait]
impl SqliteProjector for Total {
    fn name(&self) -> &str {
        "total"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS total (id INTEGER PRIMARY KEY, sum INTEGER NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query("INSERT OR IGNORE INTO total VALUES (1, 0)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let amount = event.payload_value()?["amount"]
            .as_i64()
            .ok_or("no amount")?;
        sqlx::query("UPDATE total SET sum = sum + ? WHERE id = 1")
            .bind(amount)
            .execute(conn)
            .await?;
        if amount < 0 {
            return Err("negative amount".into());
        }
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("UPDATE total SET sum = 0")
            .execute(conn)
            .await?;
        Ok(())
    }
}

fn delivered(amount: i64) -> RecordedEvent {
    RecordedEvent {
        event_id: Uuid::new_v4(),
        stream: StreamId::new("account", "a"),
        stream_version: 1,
        cursor: Cursor::new(0, 1),
        recorded_at: Utc::now(),
        event_type: "Deposited".into(),
        schema_version: 1,
        payload: json!({ "amount": amount }).to_string(),
        metadata: Metadata::default(),
    }
}

async fn sum(db: &SqliteDatabase) -> i64 {
    sqlx::query_scalar("SELECT sum FROM total")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_event_takes_effect_once() {
    let (_dir, db) = support::file_db().await;
    let inbox = Arc::new(db.transactional(Total));
    let events: Vec<_> = (1..=20).map(delivered).collect();
    // Every event delivered three times, concurrently.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (inbox, events) = (inbox.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut fresh = 0;
            for e in &events {
                fresh += inbox.handle_once(e).await.unwrap() as usize;
            }
            fresh
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += t.await.unwrap();
    }
    assert_eq!(fresh, 20, "each event is new exactly once");
    assert_eq!(sum(&db).await, (1..=20).sum::<i64>());
}

#[tokio::test]
async fn a_failed_handler_records_neither_effect_nor_id() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    let inbox = db.transactional(Total);
    let bad = delivered(-5);
    for _ in 0..2 {
        let err = inbox.handle_once(&bad).await.unwrap_err();
        assert!(err.to_string().contains("negative amount"), "{err}");
    }
    assert_eq!(sum(&db).await, 0, "the failed handler's write rolled back");
    let ok = delivered(7);
    assert!(inbox.handle_once(&ok).await.unwrap());
    assert!(!inbox.handle_once(&ok).await.unwrap());
    assert_eq!(sum(&db).await, 7);
}
