//! The broker restarted mid-stream: a tansu broker of the test's own (not the one at
//! KAFKA_BROKERS, which others use), its storage in a SQLite file, is killed under a running
//! relay and consumer and started again on the same port and storage.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::*;
use cqrs_kafka::*;
use support::*;
use tokio::sync::Notify;

const CATEGORY: &str = "account";
const STREAMS: usize = 10;
const ROUNDS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_nothing() {
    let Some(mut server) = TansuServer::start().await else {
        return;
    };
    // NOTE: bounded as a whole: on timeout the body is dropped and the broker killed with it.
    let outcome = tokio::time::timeout(Duration::from_secs(120), survive(&mut server)).await;
    if outcome.is_err() {
        panic!("timed out; the broker's log:\n{}", server.log());
    }
}

async fn survive(server: &mut TansuServer) {
    let brokers = server.brokers();
    let topics = KafkaTopics::default();
    let group = KafkaGroup::new(&topics, "svc").subscribe(CATEGORY);
    let store = Arc::new(InMemoryEventStore::new());
    // NOTE: a handler slow enough (1 ms an event) that the consumer is still behind when the
    // broker dies.
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(1)),
        ..Default::default()
    }));
    let consumer = consumer(&brokers, group, inbox.clone()).start();
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    // NOTE: a short retry window, so that the relay's batches fail to the runner while the
    // broker is down, which must keep them (retry, not park).
    let runner = relay_runner(
        store.clone(),
        relay("relay", &brokers, topics.clone(), checkpoints.clone())
            .retry_for(Duration::from_millis(500)),
    );

    // A burst of a quarter, then a steady flow that goes on while the broker is down; the last
    // quarter waits for the restart, so that the relay and the consumer must come back for it.
    seed(&store, CATEGORY, STREAMS, ROUNDS as usize / 4).await;
    let resume = Arc::new(Notify::new());
    let writer = spawn_writer(
        store.clone(),
        CATEGORY,
        STREAMS,
        ROUNDS / 4..ROUNDS,
        ROUNDS / 4 * 3,
        resume.clone(),
    );
    eventually(30, "some events through", || inbox.projector().len() >= 300).await;
    let killed = Instant::now();
    server.kill();
    let relayed = checkpoints.load("relay").await.unwrap().position;
    let handled = inbox.projector().len();
    assert!(
        (handled as u64) < relayed,
        "the kill lands mid-stream: the consumer behind the relay ({handled} < {relayed})"
    );
    // Down for longer than the relay's retry window, while appends go on.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = runner.status().await.unwrap();
        if status[0].last_error.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay never gave a batch up to the runner: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.restart().await;
    let down = killed.elapsed();
    resume.notify_one();
    writer.await.unwrap();

    let total = STREAMS * ROUNDS as usize;
    eventually(60, "every event handled", || {
        inbox.projector().len() >= total
    })
    .await;
    let recovered = killed.elapsed();
    // NOTE: long enough for a late repeat to show up as a second handling.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_in_order_once(
        &inbox.projector().seen.lock().unwrap(),
        STREAMS,
        ROUNDS as usize,
    );
    let stats = consumer.stats();
    assert_eq!(stats.handled, total as u64, "{stats:?}");
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
    let status = runner.status().await.unwrap();
    assert_eq!(status[0].parked, 0, "nothing parked: {status:?}");
    assert_eq!(status[0].last_error, None, "recovered: {status:?}");

    // What the broker kept across its restart: every event, each stream in order.
    let records = read_topic(
        &brokers,
        &topics.topic(CATEGORY),
        total * 2,
        Duration::from_secs(3),
    )
    .await;
    let mut first = std::collections::HashSet::new();
    let stored: Vec<_> = events_of(&records)
        .into_iter()
        .filter(|e| first.insert(e.event_id))
        .collect();
    assert_in_order_once(&stored, STREAMS, ROUNDS as usize);
    eprintln!(
        "at the kill: {relayed} relayed, {handled} handled; broker down {down:?}; all handled \
         {recovered:?} after the kill; {} records stored for {total} events; {stats:?}",
        records.len()
    );

    consumer.shutdown().await;
    runner.shutdown().await;
}
