//! Inboxes: an event delivered again (from a broker) takes effect once, atomically with the
//! read model.

mod support;

use std::sync::Arc;

use chrono::Utc;
use cqrs_core::{BoxError, Cursor, InboxSubscriber, Metadata, RecordedEvent, StreamId};
use cqrs_postgres::PgProjector;
use cqrs_postgres::sqlx::{self, PgConnection, PgPool};
use serde_json::json;
use uuid::Uuid;

/// Adds each event's amount to a total; fails on a negative amount after writing.
#[derive(Debug)]
struct Total;

#[cqrs_core::async_trait]
impl PgProjector for Total {
    fn name(&self) -> &str {
        "total"
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        let amount = event.payload_value()?["amount"]
            .as_i64()
            .ok_or("no amount")?;
        sqlx::query("UPDATE total SET sum = sum + $1 WHERE id = 1")
            .bind(amount)
            .execute(&mut *tx)
            .await?;
        if amount < 0 {
            return Err("negative amount".into());
        }
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

async fn with_total(pool: &PgPool) {
    sqlx::query("CREATE TABLE total (id INT PRIMARY KEY, sum BIGINT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO total VALUES (1, 0)")
        .execute(pool)
        .await
        .unwrap();
}

async fn sum(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT sum FROM total")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redelivered_event_takes_effect_once() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    with_total(store.pool()).await;
    let inbox = Arc::new(store.transactional(Total));
    let events: Vec<_> = (1..=20).map(delivered).collect();
    // Every event delivered three times, concurrently.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (inbox, events) = (inbox.clone(), events.clone());
        tasks.push(tokio::spawn(async move {
            let mut fresh = 0;
            for e in &events {
                fresh += usize::from(inbox.handle_once(e).await.unwrap());
            }
            fresh
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        fresh += t.await.unwrap();
    }
    assert_eq!(fresh, 20, "each event is new exactly once");
    assert_eq!(sum(store.pool()).await, (1..=20).sum::<i64>());
    let ids: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE subscriber = 'total'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(ids, 20);
}

#[tokio::test]
async fn a_failed_handler_records_neither_effect_nor_id() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    with_total(store.pool()).await;
    let inbox = store.transactional(Total);
    let bad = delivered(-5);
    for _ in 0..2 {
        let err = inbox.handle_once(&bad).await.unwrap_err();
        assert!(err.to_string().contains("negative amount"), "{err}");
    }
    assert_eq!(
        sum(store.pool()).await,
        0,
        "the failed handler's write rolled back"
    );
    let ok = delivered(7);
    assert!(inbox.handle_once(&ok).await.unwrap());
    assert!(!inbox.handle_once(&ok).await.unwrap());
    assert_eq!(sum(store.pool()).await, 7);
}

#[tokio::test]
async fn each_subscriber_has_its_own_inbox() {
    #[derive(Debug)]
    struct Named(&'static str);
    #[cqrs_core::async_trait]
    impl PgProjector for Named {
        fn name(&self) -> &str {
            self.0
        }
        async fn handle(&self, _: &mut PgConnection, _: &RecordedEvent) -> Result<(), BoxError> {
            Ok(())
        }
    }
    let db = support::TestDb::new().await;
    let store = db.store("inbox_schema").await;
    let e = delivered(1);
    assert!(
        store
            .transactional(Named("a"))
            .handle_once(&e)
            .await
            .unwrap()
    );
    assert!(
        store
            .transactional(Named("b"))
            .handle_once(&e)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transactional(Named("a"))
            .handle_once(&e)
            .await
            .unwrap()
    );
}
