//! Events leave one service and enter another across every layer: appended to the embedded
//! store (SQLite), relayed by the runner through RabbitMQ, consumed into a PostgreSQL read model
//! whose inbox and rows commit together. The consumer is killed mid-stream and started again:
//! every event arrives exactly once, in order per stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_broker::testkit::append_rounds;
use cqrs_core::{BoxError, RecordedEvent, Runner};
use cqrs_postgres::{PgProjector, sqlx};
use cqrs_rabbitmq::{RabbitConsumer, RabbitQueue, RabbitRelay, exchange_for};
use integration_tests::{PgSchema, SqliteFile};

const CATEGORY: &str = "parcel";
const STREAMS: usize = 30;
const PER_STREAM: usize = 20;

/// Each event it receives becomes a row, numbered in the order of arrival.
#[derive(Debug)]
struct Received;

#[async_trait::async_trait]
impl PgProjector for Received {
    fn name(&self) -> &str {
        "received"
    }
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO received (event_id, stream, version) VALUES ($1, $2, $3)")
            .bind(event.event_id)
            .bind(&event.stream.id)
            .bind(i64::try_from(event.stream_version)?)
            .execute(tx)
            .await?;
        Ok(())
    }
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn received(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM received")
        .fetch_one(pool)
        .await
        .expect("count")
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_from_sqlite_through_rabbitmq_into_postgres_once_each_and_in_order() {
    let tag = format!("it_outbox_{}", uuid::Uuid::new_v4().simple());
    let prefix = format!("{tag}.");
    let queue = RabbitQueue::new(&tag).bind(exchange_for(&prefix, CATEGORY), "#");

    // The sending service: the embedded store, its relay run by the runner.
    let file = SqliteFile::new();
    let sender = file.open().await;
    let relay = RabbitRelay::new("relay", amqp_url(), sender.checkpoints())
        .with_exchange_prefix(&prefix)
        .declaring(queue.clone());
    let runner = Runner::new(Arc::new(sender.events()), Arc::new(sender.dead_letters()))
        .with(relay)
        .start();

    // The receiving service: a PostgreSQL read model behind its inbox.
    let schema = PgSchema::new();
    let receiver = schema.store().await;
    sqlx::query(
        "CREATE TABLE received (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, \
         stream text NOT NULL, version bigint NOT NULL)",
    )
    .execute(receiver.pool())
    .await
    .expect("create the read model");
    let consumer = RabbitConsumer::new(amqp_url(), queue.clone(), receiver.transactional(Received))
        .with_prefetch(20)
        .start();

    let events = sender.events();
    append_rounds(&events, CATEGORY, STREAMS, 0..PER_STREAM / 2 + 1).await;
    // The receiving process dies mid-stream; what it had not acknowledged comes again.
    until("some deliveries", async || {
        received(receiver.pool()).await > 0
    })
    .await;
    consumer.abort();
    let consumer = RabbitConsumer::new(amqp_url(), queue.clone(), receiver.transactional(Received))
        .with_prefetch(20)
        .start();
    let last = append_rounds(&events, CATEGORY, STREAMS, PER_STREAM / 2 + 1..PER_STREAM).await;
    runner
        .wait_for("relay", last, Duration::from_secs(60))
        .await
        .expect("everything relayed");
    let total = (STREAMS * PER_STREAM) as i64;
    until("every event received", async || {
        received(receiver.pool()).await >= total
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a late duplicate would show now

    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT stream, version FROM received ORDER BY seq")
            .fetch_all(receiver.pool())
            .await
            .expect("rows");
    assert_eq!(rows.len() as i64, total, "each event once");
    let mut next = std::collections::HashMap::new();
    for (stream, version) in rows {
        let expected = next.entry(stream.clone()).or_insert(1);
        assert_eq!(version, *expected, "{stream} arrived out of order");
        *expected += 1;
    }
    assert!(next.values().all(|v| *v == PER_STREAM as i64 + 1));

    consumer.shutdown().await;
    runner.shutdown().await;
    sender.close().await;
    schema.drop(receiver).await;
}
