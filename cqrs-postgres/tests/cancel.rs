//! Appends cancelled at random points (a timeout dropping the future mid-statement): the store
//! keeps appending with contiguous versions, and no connection is kept beyond its bound.

mod support;

use std::time::{Duration, Instant};

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{EventAppender, ExpectedVersion, StreamId, StreamReaderExt};
use cqrs_postgres::{PgConfig, PgEventStore, sqlx};

const TASKS: u64 = 4;
const TRIES: u64 = 100;
/// The pool's size, which is also the bound of the connections kept for appends.
const POOL: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_appends_leave_no_broken_or_leaked_connection() {
    let db = support::TestDb::new().await;
    let store = PgEventStore::connect_with(
        db.options.clone(),
        PgConfig::with_schema("public").max_connections(POOL),
    )
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::new("acct", format!("s{t}"));
            let mut rng = support::Rng::new(t + 1);
            // NOTE: timeouts around an append's time cut appends at every stage (taking a
            // connection, sending, waiting for the answer) or not at all; the span adapts to
            // the machine's speed so that about half are cut.
            let mut span = 500.0_f64;
            let mut cancelled = 0;
            for i in 0..TRIES {
                let append =
                    store.append(&stream, ExpectedVersion::Any, vec![sample_event(i)], None);
                let wait = Duration::from_micros(rng.below(span as u64 + 1));
                match tokio::time::timeout(wait, append).await {
                    Ok(done) => {
                        done.unwrap();
                        span *= 0.9;
                    }
                    Err(_) => {
                        cancelled += 1;
                        span = span * 1.1 + 10.0;
                    }
                }
            }
            // NOTE: every connection a cancelled append left must be gone, or reused only
            // once it is back in step: exact-version appends all succeed, in order.
            // NOTE: a cancelled append whose statement had reached the server may still commit
            // a moment later (dropping the future does not stop the server); wait until the
            // stream's version holds still before asking for exact versions.
            let mut v = store.stream_version(&stream).await.unwrap();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let now = store.stream_version(&stream).await.unwrap();
                if now == v {
                    break;
                }
                v = now;
            }
            for i in 0..20 {
                let res = store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(v),
                        vec![sample_event(i)],
                        None,
                    )
                    .await
                    .unwrap();
                assert_eq!(res.version, v + 1);
                v = res.version;
            }
            let versions: Vec<u64> = store
                .read_stream(&stream, 1, 10_000)
                .await
                .unwrap()
                .iter()
                .map(|e| e.stream_version)
                .collect();
            assert_eq!(versions, (1..=v).collect::<Vec<_>>());
            cancelled
        }));
    }
    let mut cancelled = 0;
    for t in tasks {
        cancelled += t.await.unwrap();
    }
    assert!(
        cancelled > TASKS * TRIES / 10 && cancelled < TASKS * TRIES * 9 / 10,
        "{cancelled} of {} appends cancelled",
        TASKS * TRIES
    );

    // The pool, as many kept append connections, the listener and this query's own session;
    // a closed session may take a moment to leave pg_stat_activity.
    let mut conn = db.connect().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if n <= i64::from(2 * POOL + 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} sessions: connections leaked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_connections_cut_while_idle_are_replaced() {
    let db = support::TestDb::new().await;
    let store = PgEventStore::connect_with(
        db.options.clone(),
        PgConfig::with_schema("public").max_connections(POOL),
    )
    .await
    .unwrap();
    let stream = StreamId::new("acct", "idle");
    // Concurrent appends, so that several connections are kept.
    let appends = (0..POOL).map(|i| {
        let store = store.clone();
        let stream = StreamId::new("acct", format!("warm{i}"));
        tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![sample_event(0)], None)
                .await
                .unwrap();
        })
    });
    for a in appends.collect::<Vec<_>>() {
        a.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(db.terminate_all().await > 0);
    // NOTE: each append here may find a kept connection the server has cut: it must notice
    // (the idle ping) and take a fresh one rather than fail.
    for i in 0..u64::from(2 * POOL) {
        let res = store
            .append(
                &stream,
                ExpectedVersion::Exact(i),
                vec![sample_event(i)],
                None,
            )
            .await
            .unwrap();
        assert_eq!(res.version, i + 1);
    }
}
