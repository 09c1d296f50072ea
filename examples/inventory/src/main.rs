//! A small service on the embedded store, written as a user would: an `Item` aggregate
//! (register, receive, ship), a `stock` read model in the same SQLite file, an upcaster for an
//! event whose shape changed, command ids that make a retried request harmless, and a replay.
//!
//! `cargo run -p inventory -- [FILE]` (default `inventory.db`).

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    Aggregate, BoxError, CommandError, CommandHandler, DomainEvent, EventAppender, ExpectedVersion,
    NewEvent, RecordedEvent, Replay, Runner, StreamId, Upcasters, UpcastingStore,
};
use cqrs_sqlite::sqlx::{self, SqliteConnection};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
use serde::{Deserialize, Serialize};

// --- the model -------------------------------------------------------------------------------

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ItemCommand {
    Register { name: String },
    Receive { quantity: u64 },
    Ship { quantity: u64 },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum ItemEvent {
    Registered {
        name: String,
    },
    /// Version 2: version 1 called the field `qty`.
    Received {
        quantity: u64,
    },
    Shipped {
        quantity: u64,
    },
}

impl DomainEvent for ItemEvent {
    fn schema_version(event_type: &str) -> u32 {
        if event_type == "Received" { 2 } else { 1 }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
enum ItemError {
    #[error("item already registered")]
    AlreadyRegistered,
    #[error("item not registered")]
    Unknown,
    #[error("only {on_hand} on hand, {requested} requested")]
    Short { on_hand: u64, requested: u64 },
}

#[derive(Debug, Clone, Default)]
struct Item {
    registered: bool,
    on_hand: u64,
}

impl Aggregate for Item {
    const TYPE: &'static str = "item";
    type Command = ItemCommand;
    type Event = ItemEvent;
    type Error = ItemError;

    fn handle(&self, command: &ItemCommand) -> Result<Vec<ItemEvent>, ItemError> {
        match command {
            ItemCommand::Register { .. } if self.registered => Err(ItemError::AlreadyRegistered),
            ItemCommand::Register { name } => {
                Ok(vec![ItemEvent::Registered { name: name.clone() }])
            }
            _ if !self.registered => Err(ItemError::Unknown),
            ItemCommand::Receive { quantity } => Ok(vec![ItemEvent::Received {
                quantity: *quantity,
            }]),
            ItemCommand::Ship { quantity } if *quantity > self.on_hand => Err(ItemError::Short {
                on_hand: self.on_hand,
                requested: *quantity,
            }),
            ItemCommand::Ship { quantity } => Ok(vec![ItemEvent::Shipped {
                quantity: *quantity,
            }]),
        }
    }

    fn apply(&mut self, event: &ItemEvent) {
        match event {
            ItemEvent::Registered { .. } => self.registered = true,
            ItemEvent::Received { quantity } => self.on_hand += quantity,
            ItemEvent::Shipped { quantity } => self.on_hand -= quantity,
        }
    }
}

// --- the read model --------------------------------------------------------------------------

/// `stock`: one row per item, in the same file as the events, written in the transaction that
/// moves its checkpoint.
#[derive(Debug)]
struct Stock;

#[cqrs_core::async_trait]
impl SqliteProjector for Stock {
    fn name(&self) -> &str {
        "stock"
    }

    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, name TEXT NOT NULL, on_hand INTEGER NOT NULL)")
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let Some(e) = event.decode_for::<Item>()? else {
            return Ok(());
        };
        let (sql, name, delta) = match e.payload {
            ItemEvent::Registered { name } => (
                "INSERT INTO stock (sku, name, on_hand) VALUES ($1, $2, 0)",
                name,
                0,
            ),
            ItemEvent::Received { quantity } => (
                "UPDATE stock SET on_hand = on_hand + $3 WHERE sku = $1",
                String::new(),
                quantity as i64,
            ),
            ItemEvent::Shipped { quantity } => (
                "UPDATE stock SET on_hand = on_hand - $3 WHERE sku = $1",
                String::new(),
                quantity as i64,
            ),
        };
        sqlx::query(sql)
            .bind(&e.stream.id)
            .bind(name)
            .bind(delta)
            .execute(conn)
            .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM stock").execute(conn).await?;
        Ok(())
    }
}

async fn on_hand(db: &SqliteDatabase, sku: &str) -> Result<i64, BoxError> {
    Ok(
        sqlx::query_scalar("SELECT on_hand FROM stock WHERE sku = $1")
            .bind(sku)
            .fetch_one(db.pool())
            .await?,
    )
}

// --- the service -----------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let file = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "inventory.db".into());
    let db = SqliteDatabase::open(&file).await?;

    // Version 1 of `Received` said `qty`; the upcaster renames it on every read, for the
    // handler, the runner and replays alike.
    let upcasters = Upcasters::new().register("Received", 1, |mut payload| {
        let qty = payload["qty"].take();
        Ok(serde_json::json!({ "quantity": qty }))
    });
    let store = Arc::new(UpcastingStore::new(db.events(), upcasters));
    let items = CommandHandler::<Item>::new(store.clone());
    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with(db.transactional(Stock))
        .start();
    runner.ready(Duration::from_secs(5)).await?; // the `stock` table exists from here on

    let sku = format!("sku-{}", uuid::Uuid::new_v4().simple());
    items
        .execute(
            &sku,
            &ItemCommand::Register {
                name: "lamp".into(),
            },
        )
        .await?;
    // An event written by the old version of the service, in the old shape.
    let old = NewEvent::new("Received", serde_json::json!({ "qty": 5 }));
    store
        .append(
            &StreamId::new("item", &sku),
            ExpectedVersion::Exact(1),
            vec![old],
            None,
        )
        .await?;

    // A request retried with the same command id appends once.
    let request = uuid::Uuid::new_v4();
    let receive = ItemCommand::Receive { quantity: 10 };
    items.execute_once(&sku, &receive, request).await?;
    let again = items.execute_once(&sku, &receive, request).await?;
    println!("repeat of a command id: {} appended", again.appended);

    let shipped = items
        .execute(&sku, &ItemCommand::Ship { quantity: 3 })
        .await?;
    match items
        .execute(&sku, &ItemCommand::Ship { quantity: 100 })
        .await
    {
        Err(CommandError::Rejected(e)) => println!("refused: {e}"),
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // Read your own write: wait until the read model has the shipment.
    runner
        .wait_for("stock", shipped.position, Duration::from_secs(5))
        .await?;
    println!("{sku}: {} on hand", on_hand(&db, &sku).await?);
    runner.shutdown().await;

    // Rebuild the read model from the log: the same answer.
    let report = Replay::new(store.clone(), Arc::new(db.dead_letters()))
        .run(&db.transactional(Stock), |_| {})
        .await?;
    println!(
        "replayed {} events: {sku}: {} on hand",
        report.events,
        on_hand(&db, &sku).await?
    );
    db.close().await;
    Ok(())
}
