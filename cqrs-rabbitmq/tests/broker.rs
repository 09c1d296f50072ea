//! The relay and the consumers against the real RabbitMQ at AMQP_URL
//! (default `amqp://guest:guest@127.0.0.1:5672/%2f`).

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::*;
use cqrs_rabbitmq::*;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::{Connection, ConnectionProperties};
use support::*;

const CATEGORY: &str = "account";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_10k_events_in_order_once_each_across_a_crash_before_the_checkpoint() {
    let Some(url) = broker().await else { return };
    let tag = unique("crash");
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");
    declare(&url, &queue).await;

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 20, 500).await;

    // First life: 4 batches of 500 are checkpointed; the 5th is confirmed by the broker, then
    // the process "dies" before its checkpoint.
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let crashing = Arc::new(CrashingCheckpoints::new(checkpoints.clone(), 4));
    let relay = RabbitRelay::new(&tag, &url, crashing.clone()).with_exchange_prefix(&prefix);
    let runner = relay_runner(store.clone(), relay);
    crashing.crashed.notified().await;
    runner.abort();
    assert_eq!(checkpoints.load(&tag).await.unwrap().position, 2000);
    assert_eq!(
        queue_counts(&url, queue.name()).await.0,
        2500,
        "the 5th batch was confirmed before the crash"
    );

    // Second life, from the saved checkpoint: the 5th batch goes out again.
    let relay = RabbitRelay::new(&tag, &url, checkpoints.clone()).with_exchange_prefix(&prefix);
    let runner = relay_runner(store.clone(), relay);

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = RabbitConsumer::new(&url, queue.clone(), inbox.clone()).start();
    eventually(60, "10,500 deliveries", || {
        consumer.stats().delivered >= 10_500
    })
    .await;
    runner
        .wait_for(&tag, 10_000, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stats = consumer.stats();
    assert_eq!(stats.handled, 10_000);
    assert_eq!(
        stats.duplicates, 500,
        "the republished batch reached the consumer and was skipped"
    );
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 20, 500);
    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_split_a_queue_without_overlap() {
    let Some(url) = broker().await else { return };
    let tag = unique("compete");
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");
    declare(&url, &queue).await;

    // Two instances of one service, each with its own inbox (as two processes would have): a
    // message given to both would be handled twice.
    let slow = || Recorder {
        delay: Some(Duration::from_micros(200)),
        ..Default::default()
    };
    let a = Arc::new(InMemoryInbox::new(slow()));
    let b = Arc::new(InMemoryInbox::new(slow()));
    let ca = RabbitConsumer::new(&url, queue.clone(), a.clone())
        .with_prefetch(10)
        .start();
    let cb = RabbitConsumer::new(&url, queue.clone(), b.clone())
        .with_prefetch(10)
        .start();
    let mut consumers = 0;
    for _ in 0..250 {
        consumers = queue_counts(&url, queue.name()).await.1;
        if consumers == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(consumers, 2);

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 10, 200).await;
    let runner = relay_runner(
        store.clone(),
        RabbitRelay::new(&tag, &url, InMemoryCheckpointStore::new()).with_exchange_prefix(&prefix),
    );
    eventually(60, "2,000 events handled", || {
        a.projector().len() + b.projector().len() >= 2000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (ids_a, ids_b) = (a.projector().ids(), b.projector().ids());
    assert!(
        ids_a.len() > 100 && ids_b.len() > 100,
        "both took a share: {} / {}",
        ids_a.len(),
        ids_b.len()
    );
    assert!(
        ids_a.is_disjoint(&ids_b),
        "a message was handled by both consumers"
    );
    assert_eq!(ids_a.len() + ids_b.len(), 2000);
    assert_eq!(ca.stats().duplicates + cb.stats().duplicates, 0);
    ca.shutdown().await;
    cb.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_ends_in_the_dead_letter_queue_with_its_error() {
    let Some(url) = broker().await else { return };
    let tag = unique("poison");
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    let queue = RabbitQueue::new(&tag)
        .bind(&exchange, "#")
        .max_attempts(3)
        .retry_delay(Duration::from_millis(100));
    declare(&url, &queue).await;

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 5, 10).await;
    let poison = NewEvent::new("Poison", serde_json::json!({}));
    let poison_id = poison.event_id;
    store
        .append(
            &StreamId::new(CATEGORY, "bad"),
            ExpectedVersion::NoStream,
            vec![poison],
            None,
        )
        .await
        .unwrap();
    seed_more(&store).await;

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = RabbitConsumer::new(&url, queue.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        RabbitRelay::new(&tag, &url, InMemoryCheckpointStore::new()).with_exchange_prefix(&prefix),
    );
    eventually(30, "the other 100 events", || {
        inbox.projector().len() == 100
    })
    .await;
    eventually(30, "the dead letter", || {
        consumer.stats().dead_lettered == 1
    })
    .await;

    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let got = ch
        .basic_get(queue.dead_letter_queue().into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("a dead letter");
    let event = decode_message(&got.delivery.properties, &got.delivery.data).unwrap();
    assert_eq!(event.event_id, poison_id);
    let (error, attempts) = dead_letter_error(&got.delivery).expect("error headers");
    assert_eq!(error, format!("cannot digest {poison_id}"));
    assert_eq!(attempts, 3);
    got.delivery.ack(BasicAckOptions::default()).await.unwrap();
    assert_eq!(consumer.stats().retried, 2);
    assert_eq!(
        queue_counts(&url, &queue.dead_letter_queue()).await.0,
        0,
        "exactly one dead letter"
    );
    let _ = conn.close(200, "done".into()).await;

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}

/// 50 more events after the poison one, on other streams.
async fn seed_more(store: &InMemoryEventStore) {
    for s in 0..50 {
        let stream = StreamId::new(CATEGORY, format!("late{s}"));
        store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![NewEvent::new("Noted", serde_json::json!({}))],
                None,
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_broker_mid_stream_lose_nothing() {
    let Some(url) = broker().await else { return };
    let tag = unique("drop");
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");
    declare(&url, &queue).await;

    let store = Arc::new(InMemoryEventStore::new());
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = RabbitConsumer::new(&url, queue.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        RabbitRelay::new(&tag, &url, InMemoryCheckpointStore::new()).with_exchange_prefix(&prefix),
    );

    // Appends keep coming; the second half only once the connections are gone, so that the
    // relay and the consumer must come back for it.
    let dropped = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let store = store.clone();
        let dropped = dropped.clone();
        tokio::spawn(async move {
            for round in 0..200u64 {
                if round == 100 {
                    dropped.notified().await;
                }
                for s in 0..10 {
                    let stream = StreamId::new(CATEGORY, format!("s{s}"));
                    let e = NewEvent::new("Noted", serde_json::json!({ "round": round }));
                    store
                        .append(&stream, ExpectedVersion::Exact(round), vec![e], None)
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    eventually(30, "some events through", || inbox.projector().len() >= 300).await;
    let closed = tokio::task::spawn_blocking({
        let tag = tag.clone();
        move || close_connections(&tag)
    })
    .await
    .unwrap();
    assert_eq!(closed, 2, "the relay's and the consumer's connections");
    dropped.notify_one();
    writer.await.unwrap();

    eventually(60, "all 2,000 events", || inbox.projector().len() >= 2000).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 10, 200);
    assert!(consumer.stats().reconnects >= 1, "the consumer reconnected");
    let ids: HashSet<_> = inbox.projector().ids();
    assert_eq!(ids.len(), 2000);

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_declares_the_queue_keeps_what_it_publishes_before_any_consumer() {
    let Some(url) = broker().await else { return };
    let tag = unique("declaring");
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    // NOTE: no one declares this queue but the relay: without `declaring`, the broker would
    // drop every message as routed nowhere, and the count below would find no queue.
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 5, 40).await;
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let relay = RabbitRelay::new(&tag, &url, checkpoints.clone())
        .with_exchange_prefix(&prefix)
        .declaring(queue.clone());
    let runner = relay_runner(store.clone(), relay);
    runner
        .wait_for(&tag, 200, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        queue_counts(&url, queue.name()).await,
        (200, 0),
        "every event waits in the queue the relay declared"
    );

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = RabbitConsumer::new(&url, queue.clone(), inbox.clone()).start();
    eventually(20, "200 handled", || consumer.stats().handled >= 200).await;
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 5, 40);
    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_longer_than_the_relay_retries_loses_nothing_and_parks_nothing() {
    outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_is_given_up_and_loses_nothing() {
    outage(true).await;
}

/// The relay's broker goes down (or, with `stalled`, stops answering) for longer than the
/// relay's retry window, while appends go on; then it comes back.
async fn outage(stalled: bool) {
    let Some(url) = broker().await else { return };
    let tag = unique(if stalled { "stall" } else { "outage" });
    let prefix = format!("{tag}.");
    let exchange = exchange_for(&prefix, CATEGORY);
    let queue = RabbitQueue::new(&tag).bind(&exchange, "#");
    declare(&url, &queue).await;

    // The relay reaches the broker through a link the test cuts; the consumer directly.
    let (link, through) = faulty_link(&url).await;
    let store = Arc::new(InMemoryEventStore::new());
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = RabbitConsumer::new(&url, queue.clone(), inbox.clone()).start();
    let relay = RabbitRelay::new(&tag, through, InMemoryCheckpointStore::new())
        .with_exchange_prefix(&prefix)
        .retry_for(Duration::from_millis(300));
    let runner = relay_runner(store.clone(), relay);

    seed(&store, CATEGORY, 10, 50).await;
    eventually(30, "the first 500 events", || {
        inbox.projector().len() >= 500
    })
    .await;

    // Down for longer than the relay's retry window: its batches fail to the runner, which
    // must keep them (retry, not park) while appends go on.
    if stalled {
        link.stall();
    } else {
        link.down();
    }
    for round in 50..100u64 {
        for s in 0..10 {
            let stream = StreamId::new(CATEGORY, format!("s{s}"));
            let e = NewEvent::new("Noted", serde_json::json!({ "stream": s, "n": round }));
            store
                .append(&stream, ExpectedVersion::Exact(round), vec![e], None)
                .await
                .unwrap();
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = runner.status().await.unwrap();
        if status[0].last_error.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the relay never gave a batch up to the runner: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        inbox.projector().len(),
        500,
        "nothing passes while the broker is down"
    );
    link.heal();

    eventually(60, "all 1,000 events", || inbox.projector().len() >= 1000).await;
    runner
        .wait_for(&tag, 1000, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 10, 100);
    let status = runner.status().await.unwrap();
    assert_eq!(status[0].parked, 0, "nothing parked: {status:?}");
    assert_eq!(status[0].last_error, None, "recovered: {status:?}");

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&url, &queue, &[exchange]).await;
}
