//! The core's command-handling checks on SQLite: cached handlers on two databases opened on one
//! file (two processes, as far as the handlers can tell), and racing repeats of a command id.

use std::sync::Arc;

use cqrs_core::testkit::commands;
use cqrs_sqlite::SqliteDatabase;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_handlers_on_one_file_never_answer_on_a_stale_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let a = SqliteDatabase::open_path(&path, Default::default())
        .await
        .unwrap();
    let b = SqliteDatabase::open_path(&path, Default::default())
        .await
        .unwrap();
    commands::stale_caches(Arc::new(a.events()), Arc::new(b.events())).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_repeat_of_a_command_id_is_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDatabase::open_path(dir.path().join("store.db"), Default::default())
        .await
        .unwrap();
    commands::racing_repeats(Arc::new(db.events())).await;
    db.close().await;
}
