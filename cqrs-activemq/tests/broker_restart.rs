//! The broker restarted mid-stream: an ActiveMQ of the test's own (started by
//! `scripts/activemq/start` on free ports, not the one at ACTIVEMQ_URL, which other tests use)
//! is killed under a running relay and consumer, and started again on the same ports and store.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_activemq::*;
use cqrs_core::*;
use support::*;
use tokio::sync::Notify;

const CATEGORY: &str = "account";
const STREAMS: usize = 10;
const ROUNDS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_killed_and_restarted_mid_stream_loses_nothing() {
    let Some(server) = ActiveMqServer::start() else {
        return;
    };
    let server = Arc::new(server);
    // NOTE: bounded as a whole: on timeout the body is dropped and the broker killed with it.
    let outcome = tokio::time::timeout(Duration::from_secs(90), survive(server.clone())).await;
    if outcome.is_err() {
        panic!("timed out; the broker's log:\n{}", server.log());
    }
}

async fn survive(server: Arc<ActiveMqServer>) {
    let url = server.url();
    let queue = ActiveMqQueue::new("svc").prefetch(20);
    let store = Arc::new(InMemoryEventStore::new());
    // NOTE: handlers slow enough (1 ms an event) that the consumer is still behind when the
    // broker dies, with messages delivered and not yet acknowledged.
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(1)),
        ..Default::default()
    }));
    let consumer = ActiveMqConsumer::new(url.clone(), queue, inbox.clone()).start();
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let runner = relay_runner(
        store.clone(),
        ActiveMqRelay::new(
            "relay",
            url.clone(),
            ActiveMqDestination::queue("svc"),
            checkpoints.clone(),
        )
        .retry_for(Duration::from_secs(60)),
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
    let appended = store.head_position().await.unwrap();
    let relayed = checkpoints.load("relay").await.unwrap().position;
    let handled = inbox.projector().len();
    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.restart()
    })
    .await
    .unwrap();
    // NOTE: the relay's checkpoint may trail the consumer (it moves after a whole batch's
    // receipts), the store's head may not: the consumer had more to do.
    assert!(
        (handled as u64) < appended,
        "the kill lands mid-stream: the consumer behind the writer ({handled} < {appended})"
    );
    let down = killed.elapsed();
    resume.notify_one();
    writer.await.unwrap();

    let total = STREAMS * ROUNDS as usize;
    eventually(60, "every event handled", || {
        inbox.projector().len() >= total
    })
    .await;
    runner
        .wait_for("relay", total as u64, Duration::from_secs(30))
        .await
        .unwrap();
    // NOTE: long enough for a late repeat to show up as a second handling.
    tokio::time::sleep(Duration::from_millis(500)).await;

    assert_in_order_once(
        &inbox.projector().seen.lock().unwrap(),
        STREAMS,
        ROUNDS as usize,
    );
    let stats = consumer.stats();
    assert_eq!(stats.handled, total as u64, "{stats:?}");
    assert!(stats.reconnects >= 1, "the consumer reconnected: {stats:?}");
    assert_eq!(
        stats.delivered,
        stats.handled + stats.duplicates,
        "every other delivery is a repeat the inbox skipped: {stats:?}"
    );
    assert_eq!((stats.retried, stats.dead_lettered), (0, 0), "{stats:?}");
    let status = runner.status().await.unwrap();
    assert_eq!(status[0].parked, 0, "nothing parked: {status:?}");
    eprintln!(
        "at the kill: {appended} appended, {relayed} relayed, {handled} handled; broker down {down:?}; {stats:?}"
    );
    consumer.shutdown().await;
    runner.shutdown().await;
}
