//! The relay and the consumers against the real NATS JetStream at NATS_URL
//! (default `nats://127.0.0.1:4222`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::*;
use cqrs_nats::*;
use support::*;

const CATEGORY: &str = "account";

fn names(events: &JetStreamEvents, queue: &JetStreamQueue) -> Vec<String> {
    vec![events.name().to_owned(), queue.dead_letter_stream()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_10k_events_in_order_once_each_across_a_crash_before_the_checkpoint() {
    let Some(client) = broker().await else { return };
    let tag = unique("crash");
    // NOTE: a short duplicate window, so that the batch published again after the "crash" is
    // stored again and reaches the inbox, which must drop it.
    let events = JetStreamEvents::new(&tag, &tag).duplicate_window(Duration::from_millis(100));
    let queue = JetStreamQueue::new(&events, "svc").subscribe(CATEGORY);

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 20, 500).await;

    // First life: 4 batches of 500 are checkpointed; the 5th is acknowledged, then the process
    // "dies" before its checkpoint.
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let crashing = Arc::new(CrashingCheckpoints::new(checkpoints.clone(), 4));
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(&tag, client.clone(), events.clone(), crashing.clone()),
    );
    crashing.crashed.notified().await;
    runner.abort();
    assert_eq!(checkpoints.load(&tag).await.unwrap().position, 2000);
    assert_eq!(
        stream_messages(&client, &tag).await,
        2500,
        "the 5th batch was stored before the crash"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Second life, from the saved checkpoint: the 5th batch goes out again.
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(&tag, client.clone(), events.clone(), checkpoints.clone()),
    );
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = JetStreamConsumer::new(client.clone(), queue.clone(), inbox.clone()).start();
    eventually(60, "10,500 deliveries", || {
        consumer.stats().delivered >= 10_500
    })
    .await;
    runner
        .wait_for(&tag, 10_000, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert_eq!(stream_messages(&client, &tag).await, 10_500);
    let stats = consumer.stats();
    assert_eq!(stats.handled, 10_000);
    assert_eq!(
        stats.duplicates, 500,
        "the republished batch reached the consumer and was skipped"
    );
    assert_once(&inbox.projector().seen.lock().unwrap(), 20, 500, true);
    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&client, &names(&events, &queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_published_again_is_stored_once() {
    let Some(client) = broker().await else { return };
    let tag = unique("again");
    let events = JetStreamEvents::new(&tag, &tag);
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 5, 10).await;
    let first = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            "first",
            client.clone(),
            events.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    first
        .wait_for("first", last, Duration::from_secs(10))
        .await
        .unwrap();
    first.shutdown().await;

    // A relay that lost its checkpoint publishes the 50 stored events again, then 50 new ones:
    // JetStream drops the repeats by message id, and the chain of expected last ids holds.
    let last = seed_from(&store, 10, 5, 10).await;
    let second = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            "second",
            client.clone(),
            events.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    second
        .wait_for("second", last, Duration::from_secs(10))
        .await
        .unwrap();
    second.shutdown().await;
    assert_eq!(stream_messages(&client, &tag).await, 100);
    cleanup(&client, &[tag]).await;
}

async fn seed_from(store: &InMemoryEventStore, from: u64, streams: usize, per_stream: u64) -> u64 {
    let mut last = 0;
    for v in from..from + per_stream {
        for s in 0..streams {
            let e = NewEvent::new("Noted", serde_json::json!({}));
            last = store
                .append(
                    &StreamId::new(CATEGORY, format!("s{s}")),
                    ExpectedVersion::Exact(v),
                    vec![e],
                    None,
                )
                .await
                .unwrap()
                .position;
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_split_a_durable_without_overlap() {
    let Some(client) = broker().await else { return };
    let tag = unique("compete");
    let events = JetStreamEvents::new(&tag, &tag);
    let queue = JetStreamQueue::new(&events, "svc");

    // Two instances of one service, each with its own inbox (as two processes would have): a
    // message given to both would be handled twice.
    let slow = || Recorder {
        delay: Some(Duration::from_micros(200)),
        ..Default::default()
    };
    let a = Arc::new(InMemoryInbox::new(slow()));
    let b = Arc::new(InMemoryInbox::new(slow()));
    let ca = JetStreamConsumer::new(client.clone(), queue.clone(), a.clone())
        .with_prefetch(10)
        .start();
    let cb = JetStreamConsumer::new(client.clone(), queue.clone(), b.clone())
        .with_prefetch(10)
        .start();

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 10, 200).await;
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            &tag,
            client.clone(),
            events.clone(),
            InMemoryCheckpointStore::new(),
        ),
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
    ca.shutdown().await;
    cb.shutdown().await;
    runner.shutdown().await;
    cleanup(&client, &names(&events, &queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_ends_in_the_dead_letter_stream_with_its_error() {
    let Some(client) = broker().await else { return };
    let tag = unique("poison");
    let events = JetStreamEvents::new(&tag, &tag);
    let queue = JetStreamQueue::new(&events, "svc")
        .max_attempts(3)
        .retry_delay(Duration::from_millis(100));

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
    for s in 0..50 {
        let e = NewEvent::new("Noted", serde_json::json!({}));
        store
            .append(
                &StreamId::new(CATEGORY, format!("late{s}")),
                ExpectedVersion::NoStream,
                vec![e],
                None,
            )
            .await
            .unwrap();
    }

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = JetStreamConsumer::new(client.clone(), queue.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            &tag,
            client.clone(),
            events.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    eventually(30, "the other 100 events", || {
        inbox.projector().len() == 100
    })
    .await;
    eventually(30, "the dead letter", || {
        consumer.stats().dead_lettered == 1
    })
    .await;

    let js = async_nats::jetstream::new(client.clone());
    let dlq = js.get_stream(queue.dead_letter_stream()).await.unwrap();
    assert_eq!(
        dlq.get_info().await.unwrap().state.messages,
        1,
        "exactly one dead letter"
    );
    let letter = dlq.get_raw_message(1).await.unwrap();
    let event = decode_message(Some(&letter.headers), &letter.payload).unwrap();
    assert_eq!(event.event_id, poison_id);
    let (error, attempts) = dead_letter_error(&letter.headers).expect("error headers");
    assert_eq!(error, format!("cannot digest {poison_id}"));
    assert_eq!(attempts, 3);
    assert_eq!(consumer.stats().retried, 2);

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&client, &names(&events, &queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_stream_lose_nothing() {
    let Some(admin) = broker().await else { return };
    let tag = unique("drop");
    let events = JetStreamEvents::new(&tag, &tag);
    let queue = JetStreamQueue::new(&events, "svc").ack_wait(Duration::from_secs(2));

    // Relay and consumer reach the server through a link whose connections the test cuts.
    let (link, url) = faulty_link().await;
    let relay_client = async_nats::connect(&url).await.unwrap();
    let consumer_client = async_nats::connect(&url).await.unwrap();

    let store = Arc::new(InMemoryEventStore::new());
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer =
        JetStreamConsumer::new(consumer_client.clone(), queue.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        JetStreamRelay::new(
            &tag,
            relay_client.clone(),
            events.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );

    // Appends keep coming; the second half only once the connections are gone, so that the
    // relay and the consumer must come back for it.
    let dropped = Arc::new(tokio::sync::Notify::new());
    let writer = spawn_writer(store.clone(), CATEGORY, 10, 0..200, 100, dropped.clone());
    eventually(30, "some events through", || inbox.projector().len() >= 300).await;
    assert_eq!(link.cut(), 2, "the relay's and the consumer's connections");
    dropped.notify_one();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cut_again = link.cut();
    writer.await.unwrap();

    eventually(60, "all 2,000 events", || inbox.projector().len() >= 2000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // NOTE: JetStream gives back a message lost in the cut only after the ack wait, behind later
    // ones, so order is not asserted here: only that nothing is lost or handled twice.
    assert_once(&inbox.projector().seen.lock().unwrap(), 10, 200, false);
    assert_eq!(
        stream_messages(&admin, &tag).await,
        2000,
        "nothing stored twice"
    );
    for client in [&relay_client, &consumer_client] {
        let connects = client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            connects >= 2,
            "the client reconnected ({connects} connects, {cut_again} cut in the second cut)"
        );
    }

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&admin, &names(&events, &queue)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_longer_than_the_relay_retries_loses_nothing_and_parks_nothing() {
    outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_is_given_up_and_loses_nothing() {
    outage(true).await;
}

/// The relay's server goes down (or, with `stalled`, stops answering) for longer than the
/// relay's retry window, while appends go on; then it comes back.
async fn outage(stalled: bool) {
    let Some(admin) = broker().await else { return };
    let tag = unique(if stalled { "stall" } else { "outage" });
    let events = JetStreamEvents::new(&tag, &tag);
    let queue = JetStreamQueue::new(&events, "svc").ack_wait(Duration::from_secs(2));

    // The relay reaches the server through a link the test takes down; the consumer directly.
    let (link, url) = faulty_link().await;
    let relay_client = async_nats::connect(&url).await.unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = JetStreamConsumer::new(admin.clone(), queue.clone(), inbox.clone()).start();
    let relay = JetStreamRelay::new(
        &tag,
        relay_client.clone(),
        events.clone(),
        InMemoryCheckpointStore::new(),
    )
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
    seed_from(&store, 50, 10, 50).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
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
    assert_eq!(
        inbox.projector().len(),
        500,
        "nothing passes while the server is down"
    );
    link.heal();

    eventually(60, "all 1,000 events", || inbox.projector().len() >= 1000).await;
    runner
        .wait_for(&tag, 1000, Duration::from_secs(30))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_once(&inbox.projector().seen.lock().unwrap(), 10, 100, false);
    assert_eq!(
        stream_messages(&admin, &tag).await,
        1000,
        "nothing stored twice"
    );
    let status = runner.status().await.unwrap();
    assert_eq!(status[0].parked, 0, "nothing parked: {status:?}");
    assert_eq!(status[0].last_error, None, "recovered: {status:?}");

    consumer.shutdown().await;
    runner.shutdown().await;
    cleanup(&admin, &names(&events, &queue)).await;
}
