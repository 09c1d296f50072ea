//! The core's command-handling checks (`cqrs_core::testkit::commands`) on every store: cached
//! handlers in two processes' worth of handles never answer on a stale entry, and a racing
//! repeat of a command id is answered as a duplicate, never refused.

use std::sync::Arc;

use cqrs_core::testkit::commands;
use cqrs_core::{EventStore, InMemoryEventStore};
use integration_tests::{PgSchema, SqliteFile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_cached_handlers_never_answer_on_a_stale_entry() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    commands::stale_caches(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_a_racing_repeat_of_a_command_id_is_a_duplicate() {
    commands::racing_repeats(Arc::new(InMemoryEventStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cached_handlers_on_one_file_never_answer_on_a_stale_entry() {
    let file = SqliteFile::new();
    let (a, b) = (file.open().await, file.open().await);
    commands::stale_caches(Arc::new(a.events()), Arc::new(b.events())).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_racing_repeat_of_a_command_id_is_a_duplicate() {
    let file = SqliteFile::new();
    let db = file.open().await;
    commands::racing_repeats(Arc::new(db.events())).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cached_handlers_on_two_stores_never_answer_on_a_stale_entry() {
    let schema = PgSchema::new();
    let (a, b) = (schema.store().await, schema.store().await);
    commands::stale_caches(Arc::new(a.clone()), Arc::new(b)).await;
    schema.drop(a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_racing_repeat_of_a_command_id_is_a_duplicate() {
    let schema = PgSchema::new();
    let store = schema.store().await;
    commands::racing_repeats(Arc::new(store.clone())).await;
    schema.drop(store).await;
}
