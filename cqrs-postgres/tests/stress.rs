//! Guarantee 2 under load: 8 writers commit out of order (random delays between their insert
//! and their commit); the runner with a transactional projector, and a bare `read_all` loop,
//! each see every one of 20,000 events exactly once.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{AllStreamReader, Cursor, DeadLetterStore, ExpectedVersion, Runner, StreamId};
use support::Rng;
use uuid::Uuid;

const WRITERS: u64 = 8;
const APPENDS: u64 = 50;
const PER_APPEND: u64 = 50;
const TOTAL: usize = (WRITERS * APPENDS * PER_APPEND) as usize;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_exactly_once_with_out_of_order_commits() {
    let db = support::TestDb::new().await;
    let store = Arc::new(db.store("public").await);
    let recorder = support::Recorder::new(store.pool(), "stress").await;
    let runner = Runner::new(store.clone(), Arc::new(store.dead_letters()))
        .with_config(support::fast_config())
        .with(store.transactional(recorder))
        .start();

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let (mut cursor, mut ids) = (Cursor::START, Vec::with_capacity(TOTAL));
            let deadline = Instant::now() + Duration::from_secs(60);
            while ids.len() < TOTAL && Instant::now() < deadline {
                let batch = store.read_all(cursor, 700).await.unwrap();
                match batch.last() {
                    Some(last) => cursor = last.cursor,
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
                ids.extend(batch.into_iter().map(|e| e.event_id));
            }
            ids
        })
    };

    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut rng = Rng::new(w + 1);
            let mut ids = Vec::new();
            for a in 0..APPENDS {
                let events: Vec<_> = (0..PER_APPEND).map(|i| sample_event(a * 100 + i)).collect();
                ids.extend(events.iter().map(|e| e.event_id));
                let stream = StreamId::new("stress", format!("{w}-{}", a % 5));
                let mut tx = store.pool().begin().await.unwrap();
                store
                    .append_in(&mut tx, &stream, ExpectedVersion::Any, events, None)
                    .await
                    .unwrap();
                // NOTE: the delay between insert and commit is what makes commits overtake
                // each other: positions are handed out at insert time.
                tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
                tx.commit().await.unwrap();
                store.wake();
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.unwrap());
    }
    let write_time = started.elapsed();
    assert_eq!(written.len(), TOTAL);

    let read = reader.await.unwrap();
    let read_set: HashSet<Uuid> = read.iter().copied().collect();
    assert_eq!(read.len(), TOTAL, "the read_all loop saw each event once");
    assert_eq!(
        read_set, written,
        "the read_all loop saw exactly the written events"
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (rows, _, _) = support::seen_counts(store.pool(), "stress").await;
        if rows as usize >= TOTAL || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rows, distinct, events) = support::seen_counts(store.pool(), "stress").await;
    assert_eq!(
        (rows, distinct, events),
        (TOTAL as i64, TOTAL as i64, TOTAL as i64),
        "the projector handled each event exactly once"
    );
    assert_eq!(support::missing(store.pool(), "stress").await, 0);
    assert!(store.dead_letters().list(None).await.unwrap().is_empty());
    println!(
        "{TOTAL} events by {WRITERS} writers in {write_time:?}; projected in {:?}",
        started.elapsed()
    );
    runner.shutdown().await;

    // A rebuild from zero (the runner stopped) gives the same read model.
    let recorder = support::Recorder::new(store.pool(), "stress").await;
    let report = cqrs_core::Replay::new(store.clone(), Arc::new(store.dead_letters()))
        .with_config(support::fast_config())
        .run(&store.transactional(recorder), |_| {})
        .await
        .unwrap();
    assert_eq!((report.events, report.parked), (TOTAL as u64, 0));
    let counts = support::seen_counts(store.pool(), "stress").await;
    assert_eq!(
        counts,
        (TOTAL as i64, TOTAL as i64, TOTAL as i64),
        "the replay rebuilt the same read model"
    );
    println!(
        "replayed {} events at {:.0}/s",
        report.events,
        report.rate()
    );
}
