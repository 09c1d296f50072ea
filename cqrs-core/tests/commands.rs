//! The command-handling checks of the test kit against the in-memory store: two cached handlers
//! on one store, and racing repeats of one command id.

use std::sync::Arc;

use cqrs_core::testkit::commands;
use cqrs_core::{EventStore, InMemoryEventStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_handlers_never_answer_on_a_stale_entry() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    commands::stale_caches(store.clone(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_repeat_of_a_command_id_is_a_duplicate() {
    commands::racing_repeats(Arc::new(InMemoryEventStore::new())).await;
}
