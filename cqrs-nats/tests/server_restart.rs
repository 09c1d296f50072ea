//! The broker side of a dropped connection: a NATS server of the test's own (not the one at
//! NATS_URL, which others use) is killed mid-stream under a running relay and consumers, and
//! started again on the same port and JetStream store.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cqrs_core::*;
use cqrs_nats::*;
use support::*;
use tokio::sync::Notify;

const CATEGORY: &str = "account";
const STREAMS: usize = 10;
const ROUNDS: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_stream_loses_nothing() {
    let Some(mut server) = NatsServer::start().await else {
        return;
    };
    // NOTE: bounded as a whole: on timeout the body is dropped and the server killed with it.
    let outcome = tokio::time::timeout(Duration::from_secs(28), survive(&mut server)).await;
    if outcome.is_err() {
        panic!("timed out; the server's log:\n{}", server.log());
    }
}

async fn survive(server: &mut NatsServer) {
    let events = JetStreamEvents::default();
    let ack_wait = Duration::from_secs(2);
    let queue = JetStreamQueue::new(&events, "svc").ack_wait(ack_wait);
    // A second service that wants strict per-stream order, which only one message in flight
    // gives once messages are redelivered.
    let strict = JetStreamQueue::new(&events, "strict")
        .ack_wait(ack_wait)
        .max_ack_pending(1);

    let relay_client = async_nats::connect(server.url()).await.unwrap();
    let consumer_client = async_nats::connect(server.url()).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    // NOTE: handlers slow enough (1 ms an event) that the consumers are still behind when the
    // server dies, with messages delivered and not yet acknowledged.
    let slow = || Recorder {
        delay: Some(Duration::from_millis(1)),
        ..Default::default()
    };
    let inbox = Arc::new(InMemoryInbox::new(slow()));
    let ordered = Arc::new(InMemoryInbox::new(slow()));
    let consumer = JetStreamConsumer::new(consumer_client.clone(), queue, inbox.clone()).start();
    let strict_consumer =
        JetStreamConsumer::new(consumer_client.clone(), strict, ordered.clone()).start();
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            "relay",
            relay_client.clone(),
            events.clone(),
            checkpoints.clone(),
        ),
    );

    // A burst of a quarter, then a steady flow that goes on while the server is down; the last
    // quarter waits for the restart, so that the relay and the consumers must come back for it.
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
    eventually(10, "some events through", || inbox.projector().len() >= 300).await;
    let killed = Instant::now();
    server.kill();
    let appended = store.head_position().await.unwrap();
    let relayed = checkpoints.load("relay").await.unwrap().position;
    let handled = [inbox.projector().len(), ordered.projector().len()];
    assert!(
        handled.iter().all(|&h| (h as u64) < relayed),
        "the kill lands mid-stream: both consumers behind the relay ({handled:?} < {relayed})"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let appended_while_down = store.head_position().await.unwrap() - appended;
    server.restart().await;
    let down = killed.elapsed();
    resume.notify_one();
    writer.await.unwrap();

    let total = STREAMS * ROUNDS as usize;
    eventually(20, "every event handled by both services", || {
        inbox.projector().len() >= total && ordered.projector().len() >= total
    })
    .await;
    let recovered = killed.elapsed();
    // NOTE: long enough for a late repeat to show up as a second handling.
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_once(
        &inbox.projector().seen.lock().unwrap(),
        STREAMS,
        ROUNDS as usize,
        false,
    );
    assert_once(
        &ordered.projector().seen.lock().unwrap(),
        STREAMS,
        ROUNDS as usize,
        true,
    );
    for (name, stats) in [
        ("svc", consumer.stats()),
        ("strict", strict_consumer.stats()),
    ] {
        assert_eq!(stats.handled, total as u64, "{name}: {stats:?}");
        assert_eq!(
            stats.delivered,
            stats.handled + stats.duplicates,
            "{name}: every other delivery is a repeat the inbox skipped: {stats:?}"
        );
        assert_eq!(
            (stats.retried, stats.dead_lettered),
            (0, 0),
            "{name}: {stats:?}"
        );
    }

    // The relay's promise: each event stored once, every stream's events in order.
    let admin = async_nats::connect(server.url()).await.unwrap();
    let stored = stream_events(&admin, events.name()).await;
    assert_once(&stored, STREAMS, ROUNDS as usize, true);

    for (name, client) in [("relay", &relay_client), ("consumer", &consumer_client)] {
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        assert!(
            connects >= 2,
            "the {name} client reconnected ({connects} connects)"
        );
        assert_eq!(
            client.connection_state(),
            async_nats::connection::State::Connected,
            "the {name} client"
        );
    }
    eprintln!(
        "at the kill: {appended} appended, {relayed} relayed, {handled:?} handled; server down \
         {down:?}, {appended_while_down} appended meanwhile; all handled {recovered:?} after the kill; svc {:?}; strict {:?}",
        consumer.stats(),
        strict_consumer.stats()
    );

    consumer.shutdown().await;
    strict_consumer.shutdown().await;
    runner.shutdown().await;
}
