//! A write lock held by another connection (another process, in real life) is waited for and
//! retried; it never comes back as `database is locked`.

use std::time::{Duration, Instant};

mod support;

use cqrs_core::{
    AllStreamReader, Error, EventAppender, ExpectedVersion, NewEvent, StreamId, StreamReaderExt,
};
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

/// Processes starting together on a new file: each waits for the others' setup and migrations.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn handles_opening_one_new_file_at_once_all_open() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let config = SqliteConfig {
            busy_timeout: Duration::from_millis(1),
            ..Default::default()
        };
        let opens: Vec<_> = (0..6)
            .map(|_| tokio::spawn(SqliteDatabase::open_path(path.clone(), config.clone())))
            .collect();
        for open in opens {
            let db = open.await.unwrap().expect("every handle opens");
            db.events()
                .append(
                    &StreamId::new("open", "1"),
                    ExpectedVersion::Any,
                    event(),
                    None,
                )
                .await
                .unwrap();
            db.close().await;
        }
    }
}

/// The futures of the inherent async methods can be spawned (they are `Send`).
#[allow(dead_code)]
fn futures_are_send(db: SqliteDatabase) {
    fn send<T: Send>(_: T) {}
    send(SqliteDatabase::open("sqlite::memory:"));
    send(SqliteDatabase::open_with("x.db", SqliteConfig::default()));
    send(SqliteDatabase::open_path("x.db", SqliteConfig::default()));
    send(SqliteDatabase::in_memory());
    send(db.begin_write());
    send(db.close());
    let sub = db.transactional(support::balances::Totals::default());
    send(sub.setup());
    send(sub.checkpoint());
}
