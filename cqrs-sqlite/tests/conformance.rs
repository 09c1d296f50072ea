//! The core's store conformance suite, on a database file and on `sqlite::memory:`.

use std::sync::Arc;

use cqrs_core::testkit::conformance;
use cqrs_sqlite::SqliteDatabase;

async fn run_all(db: &SqliteDatabase) {
    conformance::event_store(Arc::new(db.events())).await;
    conformance::snapshot_store(&db.snapshots()).await;
    conformance::checkpoint_store(&db.checkpoints()).await;
    conformance::dead_letter_store(&db.dead_letters()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteDatabase::open_path(dir.path().join("store.db"), Default::default())
        .await
        .unwrap();
    run_all(&db).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_memory() {
    let db = SqliteDatabase::open("sqlite::memory:").await.unwrap();
    run_all(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_through_a_sqlite_url() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("url.db").display());
    let db = SqliteDatabase::open(&url).await.unwrap();
    run_all(&db).await;
    assert!(
        dir.path().join("url.db").exists(),
        "the file is created at the URL's path"
    );
}
