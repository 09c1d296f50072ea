//! The core's command-handling checks on PostgreSQL: cached handlers on two stores of one
//! database (two processes, as far as the handlers can tell), and racing repeats of a command id.

mod support;

use std::sync::Arc;

use cqrs_core::testkit::commands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_handlers_on_two_stores_never_answer_on_a_stale_entry() {
    let db = support::TestDb::new().await;
    let (a, b) = (db.store("public").await, db.store("public").await);
    commands::stale_caches(Arc::new(a), Arc::new(b)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_repeat_of_a_command_id_is_a_duplicate() {
    let db = support::TestDb::new().await;
    commands::racing_repeats(Arc::new(db.store("public").await)).await;
}
