//! Measures the SQLite store on this machine: appends, reads, and a transactional replay.
//!
//! Run with `cargo run --release -p cqrs-sqlite --example throughput`.

use std::sync::Arc;
use std::time::Instant;

use cqrs_core::{
    AllStreamReader, BoxError, Cursor, EventAppender, ExpectedVersion, NewEvent, RecordedEvent,
    Replay, RunnerConfig, StreamId,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;

#[derive(Debug)]
struct Totals;

#[async_trait::async_trait]
impl SqliteProjector for Totals {
    fn name(&self) -> &str {
        "totals"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO totals VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1")
            .bind(&event.stream.id)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM totals").execute(conn).await?;
        Ok(())
    }
}

fn event(i: usize) -> NewEvent {
    NewEvent::new(
        "Deposited",
        json!({ "amount": i, "note": "a deposit of some size" }),
    )
}

fn rate(n: usize, started: Instant) -> String {
    format!(
        "{:>8.0}/s ({n} in {:.2?})",
        n as f64 / started.elapsed().as_secs_f64(),
        started.elapsed()
    )
}

async fn appends(db: &SqliteDatabase, label: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(db.events());
    let n = 1000;
    let started = Instant::now();
    for i in 0..n {
        store
            .append(
                &StreamId::new("seq", (i % 10).to_string()),
                ExpectedVersion::Any,
                vec![event(i)],
                None,
            )
            .await?;
    }
    println!(
        "{label}: one writer, 1 event per append:   {}",
        rate(n, started)
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 8 {
                let stream = StreamId::new("par", w.to_string());
                store
                    .append(&stream, ExpectedVersion::Any, vec![event(i)], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!(
        "{label}: 8 writers, 1 event per append:    {}",
        rate(n, started)
    );

    let started = Instant::now();
    for b in 0..100 {
        let events = (0..100).map(event).collect();
        store
            .append(
                &StreamId::new("batch", b.to_string()),
                ExpectedVersion::NoStream,
                events,
                None,
            )
            .await?;
    }
    println!(
        "{label}: one writer, 100 events per append: {}",
        rate(10_000, started)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let durable =
        SqliteDatabase::open_path(dir.path().join("durable.db"), SqliteConfig::default()).await?;
    appends(&durable, "file, synchronous=FULL  ").await?;
    let fast = SqliteConfig {
        durable: false,
        ..Default::default()
    };
    let normal = SqliteDatabase::open_path(dir.path().join("normal.db"), fast).await?;
    appends(&normal, "file, synchronous=NORMAL").await?;
    let memory = SqliteDatabase::in_memory().await?;
    appends(&memory, "memory                  ").await?;

    let store = Arc::new(durable.events());
    let head = store.head_position().await? as usize;
    let started = Instant::now();
    let (mut cursor, mut read) = (Cursor::START, 0);
    loop {
        let batch = store.read_all(cursor, 500).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.cursor;
        read += batch.len();
    }
    assert_eq!(read, head);
    println!(
        "read_all in batches of 500:                  {}",
        rate(read, started)
    );

    let sub = durable.transactional(Totals);
    let config = RunnerConfig {
        batch_size: 500,
        ..Default::default()
    };
    let report = Replay::new(store, Arc::new(durable.dead_letters()))
        .with_config(config)
        .run(&sub, |_| {})
        .await?;
    println!(
        "transactional replay, batches of 500:        {:>8.0}/s ({} events)",
        report.rate(),
        report.events
    );
    Ok(())
}
