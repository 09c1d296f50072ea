//! Sessions terminated mid-run (`pg_terminate_backend` of every connection of the store: pool,
//! listener): the runner recovers, the listener reconnects, and the transactional projector
//! ends with every event exactly once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{
    AllStreamReader, DeadLetterStore, EventAppender, ExpectedVersion, Runner, StreamId,
};
use uuid::Uuid;

const WRITERS: u64 = 4;
const APPENDS: u64 = 60;
const PER_APPEND: u64 = 10;
const TOTAL: i64 = (WRITERS * APPENDS * PER_APPEND) as i64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_sessions_lose_and_repeat_nothing() {
    let db = support::TestDb::new().await;
    let store = Arc::new(db.store("public").await);
    let recorder = support::Recorder::new(store.pool(), "killed").await;
    let runner = Runner::new(store.clone(), Arc::new(store.dead_letters()))
        .with_config(support::fast_config())
        .with(store.transactional(recorder))
        .start();

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut failures = 0;
            for a in 0..APPENDS {
                let stream = StreamId::new("killed", format!("{w}"));
                let command = Uuid::new_v4();
                // NOTE: an append whose connection died may or may not have committed; the
                // command id makes the retry safe.
                loop {
                    let events: Vec<_> =
                        (0..PER_APPEND).map(|i| sample_event(a * 100 + i)).collect();
                    match store
                        .append(&stream, ExpectedVersion::Any, events, Some(command.into()))
                        .await
                    {
                        Ok(_) => break,
                        Err(_) => {
                            failures += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            failures
        }));
    }

    let mut killed = 0;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        killed += db.terminate_all().await;
    }
    let mut failures = 0;
    for w in writers {
        failures += w.await.unwrap();
    }
    assert!(killed >= 3, "sessions were terminated ({killed})");

    let deadline = Instant::now() + Duration::from_secs(30);
    let counts = loop {
        let counts = support::seen_counts(store.pool(), "killed").await;
        if counts.0 >= TOTAL || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts_after = support::seen_counts(store.pool(), "killed").await;
    assert_eq!(counts, counts_after);
    assert_eq!(
        counts,
        (TOTAL, TOTAL, TOTAL),
        "each event stored once and projected exactly once"
    );
    assert_eq!(support::missing(store.pool(), "killed").await, 0);
    assert!(
        store.dead_letters().list(None).await.unwrap().is_empty(),
        "a lost connection parks nothing"
    );
    println!("terminated {killed} sessions; {failures} appends failed and were retried");

    // The listener reconnected: an append by another process (another store) still wakes us.
    let other = db.store("public").await;
    let mut wake = store.wake_ups();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wake.borrow_and_update();
    other
        .append(
            &StreamId::new("killed", "other"),
            ExpectedVersion::Any,
            vec![sample_event(1)],
            None,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("a NOTIFY from another process arrives after the listener reconnected")
        .unwrap();
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_reconnects_and_wakes_subscribers() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let other = db.store("public").await;
    let mut wake = store.wake_ups();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wake.borrow_and_update();
    let mut conn = db.connect().await;
    let n: i64 = cqrs_postgres::sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'cqrs-postgres-listener'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(n, 2, "both stores' listeners were terminated");
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("a lost listener connection wakes subscribers so they catch up")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    wake.borrow_and_update();
    other
        .append(
            &StreamId::new("l", "1"),
            ExpectedVersion::Any,
            vec![sample_event(1)],
            None,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), wake.changed())
        .await
        .expect("notifications flow again")
        .unwrap();
}
