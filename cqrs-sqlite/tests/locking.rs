//! A write lock held by another connection (another process, in real life) is waited for and
//! retried; it never comes back as `database is locked`.

use std::time::{Duration, Instant};

use cqrs_core::{Error, EventStore, ExpectedVersion, NewEvent, StreamId};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase};
use serde_json::json;

async fn two_handles(config: SqliteConfig) -> (tempfile::TempDir, SqliteDatabase, SqliteDatabase) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let a = SqliteDatabase::open_path(&path, config.clone())
        .await
        .unwrap();
    let b = SqliteDatabase::open_path(&path, config).await.unwrap();
    (dir, a, b)
}

fn event() -> Vec<NewEvent> {
    vec![NewEvent::new("Noted", json!({}))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_waits_for_another_connections_lock() {
    // SQLite alone would give up after 1 ms; the store keeps retrying.
    let config = SqliteConfig {
        busy_timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let (_dir, a, b) = two_handles(config).await;
    let stream = StreamId::new("lock", "1");
    let held = b.begin_write().await.unwrap();
    let started = Instant::now();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.commit().await.unwrap();
    });
    let res = a
        .events()
        .append(&stream, ExpectedVersion::NoStream, event(), None)
        .await
        .expect("the append waits, then lands");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "the append cannot land while the lock is held"
    );
    assert_eq!(res.version, 1);
    release.await.unwrap();
    // Reads are not blocked by a writer (WAL), and the other handle sees the event.
    let held = a.begin_write().await.unwrap();
    assert_eq!(b.events().stream_version(&stream).await.unwrap(), 1);
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_past_the_patience_is_a_timeout() {
    let config = SqliteConfig {
        busy_timeout: Duration::from_millis(10),
        write_patience: Duration::from_millis(200),
        ..Default::default()
    };
    let (_dir, a, b) = two_handles(config).await;
    let _held = b.begin_write().await.unwrap();
    let started = Instant::now();
    let err = a
        .events()
        .append(
            &StreamId::new("lock", "2"),
            ExpectedVersion::Any,
            event(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout(_)),
        "a lock never released ends in a timeout, got {err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "gave up after {:?}: {err}",
        started.elapsed()
    );
    assert_eq!(
        a.events().head_position().await.unwrap(),
        0,
        "and nothing is written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_of_one_handle_queue_behind_a_write_transaction() {
    let (_dir, a, _b) = two_handles(SqliteConfig::default()).await;
    let held = a.begin_write().await.unwrap();
    let events = a.events();
    let append = tokio::spawn(async move {
        events
            .append(
                &StreamId::new("lock", "3"),
                ExpectedVersion::Any,
                event(),
                None,
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !append.is_finished(),
        "the append waits for the open write transaction"
    );
    held.commit().await.unwrap();
    assert_eq!(append.await.unwrap().unwrap().version, 1);
}
