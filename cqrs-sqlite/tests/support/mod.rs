//! Shared pieces of the integration tests: a tiny aggregate and database helpers.

#![allow(dead_code, unreachable_pub)]

use cqrs_core::{Aggregate, DomainEvent};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// The events of a counter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { n: u64 },
}
impl DomainEvent for CounterEvent {}

/// A counter that refuses to add zero.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counter {
    pub total: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot add zero")]
pub struct Zero;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = u64;
    type Event = CounterEvent;
    type Error = Zero;
    fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, Zero> {
        if *n == 0 {
            return Err(Zero);
        }
        Ok(vec![CounterEvent::Added { n: *n }])
    }
    fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
        self.total += n;
    }
}

/// A database file in a fresh temporary directory (deleted when the `TempDir` drops).
pub async fn file_db() -> (TempDir, SqliteDatabase) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = SqliteDatabase::open_path(dir.path().join("test.db"), SqliteConfig::default())
        .await
        .expect("open");
    (dir, db)
}

pub mod balances;
