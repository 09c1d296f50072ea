//! What a newcomer's first service ran into (issue 22), each on both stores: a projector's
//! tables exist once the runner is ready, before any event; the default retry policy carries
//! eight writers on one aggregate through their conflicts; a parked event is not reported as
//! applied; a throwaway PostgreSQL schema goes away with its tables.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    Aggregate, BoxError, CommandHandler, DomainEvent, Error, EventStore, RecordedEvent, Runner,
    RunnerConfig, RunnerHandle,
};
use cqrs_postgres::{PgConfig, PgDatabase, PgProjector};
use cqrs_sqlite::SqliteProjector;
use integration_tests::{SqliteFile, database_url};
use serde::{Deserialize, Serialize};

/// A stock level: `Receive(n)` adds, `Ship(n)` takes away what is there.
#[derive(Debug, Default, Clone)]
struct Stock(u64);

#[derive(Debug, Clone, Serialize, Deserialize)]
enum StockEvent {
    Received(u64),
    Shipped(u64),
}

impl DomainEvent for StockEvent {}

#[derive(Debug, thiserror::Error)]
#[error("only {0} on hand")]
struct Short(u64);

impl Aggregate for Stock {
    const TYPE: &'static str = "stock";
    type Command = StockEvent;
    type Event = StockEvent;
    type Error = Short;
    fn handle(&self, command: &StockEvent) -> Result<Vec<StockEvent>, Short> {
        match command {
            StockEvent::Shipped(n) if *n > self.0 => Err(Short(self.0)),
            c => Ok(vec![c.clone()]),
        }
    }
    fn apply(&mut self, event: &StockEvent) {
        match event {
            StockEvent::Received(n) => self.0 += n,
            StockEvent::Shipped(n) => self.0 -= n,
        }
    }
}

/// Eight writers, `commands` each back to back, all on one item at once, through the default
/// retry policy; the writers share `handlers` handlers (one per process in a real service).
///
/// NOTE: through one handler they take turns: 8 x 25 all succeed (before the handler queued
/// commands per stream, a writer lost ten races in a row in most runs and got the conflict).
/// Across handlers only optimistic concurrency orders them: ordinary contention (8 x 5 over two)
/// rides through; two processes saturating one aggregate (8 x 25 over two) starve one another
/// in about one run in three, with upper-half jitter or full jitter alike (measured).
async fn eight_writers(store: Arc<dyn EventStore>, handlers: usize, commands: u64) {
    let handlers: Vec<_> = (0..handlers)
        .map(|_| Arc::new(CommandHandler::<Stock>::new(store.clone())))
        .collect();
    let item = format!("sku-{}", handlers.len());
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let handler = handlers[w % handlers.len()].clone();
            let item = item.clone();
            tokio::spawn(async move {
                for _ in 0..commands {
                    handler
                        .execute(&item, &StockEvent::Received(1))
                        .await
                        .expect("the default retry policy rides out the conflicts");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let (state, version) = handlers[0].load(&item).await.unwrap();
    assert_eq!((state.0, version), (8 * commands, 8 * commands));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_one_item_all_succeed_with_the_default_retry_policy_on_sqlite() {
    let file = SqliteFile::new();
    let db = file.open().await;
    eight_writers(Arc::new(db.events()), 1, 25).await;
    eight_writers(Arc::new(db.events()), 2, 5).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_one_item_all_succeed_with_the_default_retry_policy_on_postgres() {
    let db = PgDatabase::connect(&database_url(), PgConfig::throwaway("it_writers"))
        .await
        .unwrap();
    eight_writers(Arc::new(db.events()), 1, 25).await;
    eight_writers(Arc::new(db.events()), 2, 5).await;
    db.drop_schema().await.unwrap();
}

/// The `stock` read model: its table is created by its set-up.
#[derive(Debug)]
struct StockLevels;

#[async_trait::async_trait]
impl SqliteProjector for StockLevels {
    fn name(&self) -> &str {
        "stock"
    }
    async fn setup(&self, conn: &mut cqrs_sqlite::sqlx::SqliteConnection) -> Result<(), BoxError> {
        cqrs_sqlite::sqlx::query(
            "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, on_hand INTEGER NOT NULL)",
        )
        .execute(conn)
        .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut cqrs_sqlite::sqlx::SqliteConnection,
        e: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let _ = (conn, e);
        Ok(())
    }
    async fn reset(&self, conn: &mut cqrs_sqlite::sqlx::SqliteConnection) -> Result<(), BoxError> {
        cqrs_sqlite::sqlx::query("DELETE FROM stock")
            .execute(conn)
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl PgProjector for StockLevels {
    fn name(&self) -> &str {
        "stock"
    }
    async fn setup(&self, tx: &mut cqrs_postgres::sqlx::PgConnection) -> Result<(), BoxError> {
        cqrs_postgres::sqlx::query(
            "CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, on_hand BIGINT NOT NULL)",
        )
        .execute(tx)
        .await?;
        Ok(())
    }
    async fn handle(
        &self,
        tx: &mut cqrs_postgres::sqlx::PgConnection,
        e: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let _ = (tx, e);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_can_be_queried_as_soon_as_the_runner_is_ready_on_sqlite() {
    let file = SqliteFile::new();
    let db = file.open().await;
    let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with(db.transactional(StockLevels))
        .start();
    runner.ready(Duration::from_secs(10)).await.unwrap();
    let rows: i64 = cqrs_sqlite::sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(db.pool())
        .await
        .expect("the table exists before any event");
    assert_eq!(rows, 0);
    runner.shutdown().await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_can_be_queried_as_soon_as_the_runner_is_ready_on_postgres() {
    let db = PgDatabase::connect(&database_url(), PgConfig::throwaway("it_setup"))
        .await
        .unwrap();
    // Two processes' runners starting at once: set-up takes turns.
    let runners: Vec<_> = (0..2)
        .map(|_| {
            Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
                .with(db.transactional(StockLevels))
                .start()
        })
        .collect();
    for r in &runners {
        r.ready(Duration::from_secs(10)).await.unwrap();
    }
    let rows: i64 = cqrs_postgres::sqlx::query_scalar("SELECT count(*) FROM stock")
        .fetch_one(db.pool())
        .await
        .expect("the table exists before any event");
    assert_eq!(rows, 0);
    for r in runners {
        r.shutdown().await;
    }
    let schema = db.schema().to_owned();
    let pool = cqrs_postgres::sqlx::PgPool::connect(&database_url())
        .await
        .unwrap();
    db.drop_schema().await.unwrap();
    let left: bool = cqrs_postgres::sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.schemata WHERE schema_name = $1)",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!left, "the throwaway schema is gone");
}

/// A read model whose handler writes to a table nobody created.
#[derive(Debug)]
struct Shipments;

#[async_trait::async_trait]
impl SqliteProjector for Shipments {
    fn name(&self) -> &str {
        "shipments"
    }
    async fn handle(
        &self,
        conn: &mut cqrs_sqlite::sqlx::SqliteConnection,
        e: &RecordedEvent,
    ) -> Result<(), BoxError> {
        cqrs_sqlite::sqlx::query("INSERT INTO shipments (sku) VALUES (?)")
            .bind(&e.stream.id)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn reset(&self, _: &mut cqrs_sqlite::sqlx::SqliteConnection) -> Result<(), BoxError> {
        Ok(())
    }
}

#[async_trait::async_trait]
impl PgProjector for Shipments {
    fn name(&self) -> &str {
        "shipments"
    }
    async fn handle(
        &self,
        tx: &mut cqrs_postgres::sqlx::PgConnection,
        e: &RecordedEvent,
    ) -> Result<(), BoxError> {
        cqrs_postgres::sqlx::query("INSERT INTO shipments (sku) VALUES ($1)")
            .bind(&e.stream.id)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Few quick tries before an event is parked.
fn impatient() -> RunnerConfig {
    RunnerConfig {
        max_attempts: 2,
        backoff: Duration::from_millis(5),
        ..RunnerConfig::default()
    }
}

/// A command's write read back through `wait_for` when the read model parked it: the caller
/// hears so (with why, told once), instead of `Ok` and an empty read model.
async fn a_parked_write_is_not_reported_as_applied(
    store: Arc<dyn EventStore>,
    runner: RunnerHandle,
) {
    let handler = CommandHandler::<Stock>::new(store);
    let out = handler
        .execute("sku-9", &StockEvent::Received(3))
        .await
        .unwrap();
    let err = runner
        .wait_for("shipments", out.position, Duration::from_secs(20))
        .await
        .expect_err("the event was parked, not applied");
    let Error::Parked {
        subscriber,
        position,
        error,
    } = &err
    else {
        panic!("expected Error::Parked, got {err:?}");
    };
    assert_eq!(
        (subscriber.as_str(), *position),
        ("shipments", out.position)
    );
    assert!(error.contains("shipments"), "the error says why: {error}");
    // The driver's message is told once, not once per layer that wraps it.
    let cause = error.rsplit(": ").next().unwrap();
    assert_eq!(error.matches(cause).count(), 1, "told once: {error}");
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_write_is_not_reported_as_applied_on_sqlite() {
    let file = SqliteFile::new();
    let db = file.open().await;
    let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with_config(impatient())
        .with(db.transactional(Shipments))
        .start();
    a_parked_write_is_not_reported_as_applied(Arc::new(db.events()), runner).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_write_is_not_reported_as_applied_on_postgres() {
    let db = PgDatabase::connect(&database_url(), PgConfig::throwaway("it_parked"))
        .await
        .unwrap();
    let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with_config(impatient())
        .with(db.transactional(Shipments))
        .start();
    a_parked_write_is_not_reported_as_applied(Arc::new(db.events()), runner).await;
    db.drop_schema().await.unwrap();
}
