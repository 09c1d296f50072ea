//! The relay and the consumers against the real ActiveMQ at ACTIVEMQ_URL
//! (default `stomp://127.0.0.1:61613`), each test on queues of its own.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_activemq::*;
use cqrs_core::*;
use support::*;

const CATEGORY: &str = "account";

fn relay<C: CheckpointStore>(
    name: &str,
    url: &StompUrl,
    to: ActiveMqDestination,
    checkpoints: C,
) -> ActiveMqRelay<C> {
    ActiveMqRelay::new(name, url.clone(), to, checkpoints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_10k_events_in_order_once_each_across_a_crash_before_the_checkpoint() {
    let Some(url) = broker().await else { return };
    let tag = unique("crash");
    let queue = ActiveMqQueue::new(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 50, 200).await;

    // First life: 4 batches of 500 are checkpointed; the 5th gets every receipt, then the
    // process "dies" before its checkpoint.
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let crashing = Arc::new(CrashingCheckpoints::new(checkpoints.clone(), 4));
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            crashing.clone(),
        ),
    );
    crashing.crashed.notified().await;
    runner.abort();
    assert_eq!(checkpoints.load(&tag).await.unwrap().position, 2000);

    // Second life, from the saved checkpoint: the 5th batch goes out again.
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            checkpoints.clone(),
        ),
    );
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = ActiveMqConsumer::new(url.clone(), queue, inbox.clone()).start();
    eventually(120, "10,500 deliveries", || {
        consumer.stats().delivered >= 10_500
    })
    .await;
    runner
        .wait_for(&tag, 10_000, Duration::from_secs(10))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stats = consumer.stats();
    assert_eq!(stats.handled, 10_000, "{stats:?}");
    assert_eq!(
        stats.duplicates, 500,
        "the batch sent again reached the consumer and was skipped: {stats:?}"
    );
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 50, 200);
    consumer.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_consumers_keep_each_stream_on_one_consumer_in_order() {
    let Some(url) = broker().await else { return };
    let tag = unique("compete");
    // Two instances of one service, each with its own inbox (as two processes would have): a
    // message given to both would be handled twice.
    let slow = || Recorder {
        delay: Some(Duration::from_micros(300)),
        ..Default::default()
    };
    let a = Arc::new(InMemoryInbox::new(slow()));
    let b = Arc::new(InMemoryInbox::new(slow()));
    let queue = ActiveMqQueue::new(&tag).prefetch(10);
    let ca = ActiveMqConsumer::new(url.clone(), queue.clone(), a.clone()).start();
    let cb = ActiveMqConsumer::new(url.clone(), queue.clone(), b.clone()).start();
    // NOTE: both subscribed before the first message, so that the broker spreads the groups.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 20, 100).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            InMemoryCheckpointStore::new(),
        ),
    );
    eventually(60, "2,000 events handled", || {
        a.projector().len() + b.projector().len() >= 2000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (ids_a, ids_b) = (a.projector().ids(), b.projector().ids());
    assert!(
        ids_a.len() >= 100 && ids_b.len() >= 100,
        "both took a share: {} / {}",
        ids_a.len(),
        ids_b.len()
    );
    assert!(ids_a.is_disjoint(&ids_b), "a message was handled by both");
    assert_eq!(ids_a.len() + ids_b.len(), 2000);
    // Message groups: each stream whole on one consumer, in order there.
    let streams = |inbox: &InMemoryInbox<Recorder>| -> HashMap<String, Vec<u64>> {
        let mut by: HashMap<String, Vec<u64>> = HashMap::new();
        for e in inbox.projector().seen.lock().unwrap().iter() {
            by.entry(e.stream.id.clone())
                .or_default()
                .push(e.stream_version);
        }
        by
    };
    let (sa, sb) = (streams(&a), streams(&b));
    for (stream, versions) in sa.iter().chain(sb.iter()) {
        assert_eq!(
            versions,
            &(1..=100).collect::<Vec<u64>>(),
            "stream {stream}: all of it on one consumer, in order"
        );
    }
    assert_eq!(sa.len() + sb.len(), 20);
    assert_eq!(ca.stats().duplicates + cb.stats().duplicates, 0);
    ca.shutdown().await;
    cb.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_topic_fans_out_to_every_service() {
    let Some(url) = broker().await else { return };
    let topic = unique("fanout");
    let billing = Arc::new(InMemoryInbox::new(Recorder::default()));
    let audit = Arc::new(InMemoryInbox::new(Recorder::default()));
    let cb = ActiveMqConsumer::new(
        url.clone(),
        ActiveMqQueue::of_virtual_topic(&topic, "billing"),
        billing.clone(),
    )
    .start();
    let ca = ActiveMqConsumer::new(
        url.clone(),
        ActiveMqQueue::of_virtual_topic(&topic, "audit"),
        audit.clone(),
    )
    .start();
    // NOTE: a virtual topic copies into the consumer queues that exist when a message comes.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 10, 50).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &topic,
            &url,
            ActiveMqDestination::virtual_topic(&topic),
            InMemoryCheckpointStore::new(),
        ),
    );
    eventually(60, "500 events in each service", || {
        billing.projector().len() >= 500 && audit.projector().len() >= 500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_in_order_once(&billing.projector().seen.lock().unwrap(), 10, 50);
    assert_in_order_once(&audit.projector().seen.lock().unwrap(), 10, 50);
    cb.shutdown().await;
    ca.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_always_fails_ends_in_the_dead_letter_queue_with_its_error() {
    let Some(url) = broker().await else { return };
    let tag = unique("poison");
    let queue = ActiveMqQueue::new(&tag).max_attempts(3);

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
    let consumer = ActiveMqConsumer::new(url.clone(), queue.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
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
    assert_eq!(consumer.stats().retried, 2, "{:?}", consumer.stats());

    let dead = drain(&url, &queue.dead_letter_queue(), Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1, "exactly one dead letter: {dead:?}");
    let event = decode_message(&dead[0].headers, &dead[0].body).unwrap();
    assert_eq!(event.event_id, poison_id);
    let (error, attempts) = dead_letter_error(&dead[0].headers).expect("error headers");
    assert_eq!(error, format!("cannot digest {poison_id}"));
    assert_eq!(attempts, 3);
    assert_eq!(dead[0].get(HEADERS.origin), Some(tag.as_str()));
    consumer.shutdown().await;
    runner.shutdown().await;
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
async fn messages_that_cannot_be_read_are_dead_lettered_at_once_with_a_clear_error() {
    let Some(url) = broker().await else { return };
    let tag = unique("bad");
    let queue = ActiveMqQueue::new(&tag);
    let id = uuid::Uuid::new_v4().to_string();
    let envelope = |version: &'static str| {
        vec![
            (HEADERS.event_id, id.as_str()),
            (HEADERS.event_type, "Noted"),
            (HEADERS.schema_version, "1"),
            (HEADERS.stream_category, CATEGORY),
            (HEADERS.stream_id, "s0"),
            (HEADERS.stream_version, version),
            (HEADERS.position, "1"),
            (HEADERS.recorded_at, "2026-01-01T00:00:00Z"),
        ]
    };
    // No envelope at all, a malformed one, a body that is not JSON.
    send_raw(&url, &tag, &[("foo", "bar")], "{}").await;
    send_raw(&url, &tag, &envelope("one"), "{}").await;
    send_raw(&url, &tag, &envelope("1"), "not json").await;

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = ActiveMqConsumer::new(url.clone(), queue.clone(), inbox.clone()).start();
    eventually(20, "3 dead letters", || consumer.stats().dead_lettered == 3).await;
    let stats = consumer.stats();
    assert_eq!((stats.handled, stats.retried), (0, 0), "{stats:?}");

    let dead = drain(&url, &queue.dead_letter_queue(), Duration::from_secs(2)).await;
    let errors: Vec<(String, u32)> = dead
        .iter()
        .map(|d| dead_letter_error(&d.headers).expect("error headers"))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(
        errors[0].0.contains("missing or bad header cqrs-event-id"),
        "{errors:?}"
    );
    assert!(
        errors[1]
            .0
            .contains("missing or bad header cqrs-stream-version"),
        "{errors:?}"
    );
    assert!(
        errors[2].0.contains("account-s0"),
        "names the stream: {errors:?}"
    );
    assert!(
        errors.iter().all(|(_, attempts)| *attempts == 1),
        "{errors:?}"
    );
    // Nothing lost: each keeps its body and headers.
    assert_eq!(dead[0].get("foo"), Some("bar"));
    assert_eq!(dead[2].body, b"not json");
    consumer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_vanishes_without_acknowledging_loses_nothing() {
    let Some(url) = broker().await else { return };
    let tag = unique("vanish");
    let queue = ActiveMqQueue::new(&tag).prefetch(50);
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 10, 50).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, 500, Duration::from_secs(20))
        .await
        .unwrap();

    // The first instance takes messages ahead (its prefetch) and dies without a goodbye while
    // it works through them; the one that takes over shares its inbox (its database).
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(5)),
        ..Default::default()
    }));
    let first = ActiveMqConsumer::new(url.clone(), queue.clone(), inbox.clone()).start();
    eventually(20, "some handled", || first.stats().handled >= 20).await;
    let before = first.stats();
    first.abort();
    let second = ActiveMqConsumer::new(url.clone(), queue.clone(), inbox.clone()).start();
    eventually(60, "all 500 handled", || inbox.projector().len() >= 500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 10, 50);
    let after = second.stats();
    assert!(
        before.handled + after.handled >= 500 && after.handled < 500,
        "the second took over where the first stopped: {before:?} {after:?}"
    );
    second.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_id_and_stream_travel_in_headers_a_jms_client_can_read() {
    let Some(url) = broker().await else { return };
    let tag = unique("wire");
    let store = Arc::new(InMemoryEventStore::new());
    let out = store
        .append(
            &StreamId::new(CATEGORY, "a-1"),
            ExpectedVersion::NoStream,
            vec![NewEvent::new(
                "Opened",
                serde_json::json!({"owner": "alice"}),
            )],
            None,
        )
        .await
        .unwrap();
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, out.position, Duration::from_secs(20))
        .await
        .unwrap();
    let got = drain(&url, &tag, Duration::from_secs(1)).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(m.get("persistent"), Some("true"));
    assert_eq!(m.get(HEADERS.stream_category), Some(CATEGORY));
    assert_eq!(m.get(HEADERS.stream_id), Some("a-1"));
    assert_eq!(m.get("type"), Some("Opened"));
    assert_eq!(m.body, br#"{"owner":"alice"}"#);
    let event = decode_message(&m.headers, &m.body).unwrap();
    let stored = store
        .read_stream(&StreamId::new(CATEGORY, "a-1"), 1, 10)
        .await
        .unwrap();
    assert_eq!(event, stored[0], "the whole envelope comes back");
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_by_category_that_declares_the_queue_keeps_its_events_before_any_consumer() {
    let Some(url) = broker().await else { return };
    let topic = unique("declaring");
    // NOTE: no one consumes this queue before the relay sends: without `declaring`, the
    // virtual topic would copy the events into no queue.
    let queue = ActiveMqQueue::of_virtual_topic(&format!("{topic}.{CATEGORY}"), "svc");
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 5, 40).await;
    // Another category, to a virtual topic of its own that this service does not consume.
    let last = seed(&store, "transfer", 2, 10).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &topic,
            &url,
            ActiveMqDestination::virtual_topic(&topic),
            InMemoryCheckpointStore::new(),
        )
        .by_category()
        .declaring(queue.clone()),
    );
    runner
        .wait_for(&topic, last, Duration::from_secs(20))
        .await
        .unwrap();

    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = ActiveMqConsumer::new(url.clone(), queue, inbox.clone()).start();
    eventually(20, "200 handled", || consumer.stats().handled >= 200).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 5, 40);
    consumer.shutdown().await;
    runner.shutdown().await;
}

/// Fails on `Crash` events; the first `cuts` times it also cuts its consumer's connection
/// first, as a consumer dying on the message would (the broker never hears of the failure).
#[derive(Debug)]
struct Crasher {
    link: Arc<cqrs_core::testkit::FaultyLink>,
    cuts: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Projector for Crasher {
    fn name(&self) -> &str {
        "crasher"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.event_type != "Crash" {
            return Ok(());
        }
        let left = self.cuts.load(std::sync::atomic::Ordering::SeqCst);
        if left > 0 {
            self.cuts
                .store(left - 1, std::sync::atomic::Ordering::SeqCst);
            self.link.cut();
            // NOTE: give the cut time to reach the consumer's socket before the NACK.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("crashed".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tries_lost_with_the_connection_count_toward_the_dead_letter_bound() {
    let Some(url) = broker().await else { return };
    let tag = unique("lost");
    let queue = ActiveMqQueue::new(&tag).max_attempts(3);
    let link = Arc::new(
        cqrs_core::testkit::FaultyLink::to(&url.address())
            .await
            .unwrap(),
    );
    let through: StompUrl = format!("stomp://{}", link.addr()).parse().unwrap();
    let store = Arc::new(InMemoryEventStore::new());
    let crash = NewEvent::new("Crash", serde_json::json!({}));
    let crash_id = crash.event_id;
    let out = store
        .append(
            &StreamId::new(CATEGORY, "c"),
            ExpectedVersion::NoStream,
            vec![crash],
            None,
        )
        .await
        .unwrap();
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &url,
            ActiveMqDestination::queue(&tag),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, out.position, Duration::from_secs(20))
        .await
        .unwrap();

    // Two deliveries end with the connection gone (redelivered by the broker, which counts
    // nothing but `redelivered`), the third fails plainly: that one is the third try.
    let inbox = InMemoryInbox::new(Crasher {
        link: link.clone(),
        cuts: 2.into(),
    });
    let consumer = ActiveMqConsumer::new(through, queue.clone(), inbox).start();
    eventually(30, "the dead letter", || {
        consumer.stats().dead_lettered == 1
    })
    .await;
    let stats = consumer.stats();
    assert!(stats.reconnects >= 2, "{stats:?}");
    assert_eq!(
        stats.delivered, 3,
        "dead-lettered on the third delivery, not three more after the cuts: {stats:?}"
    );
    let dead = drain(&url, &queue.dead_letter_queue(), Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        decode_message(&dead[0].headers, &dead[0].body)
            .unwrap()
            .event_id,
        crash_id
    );
    assert_eq!(
        dead_letter_error(&dead[0].headers),
        Some(("crashed".to_owned(), 3)),
        "the tries lost with the connection counted"
    );
    consumer.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_an_unknown_type_is_dead_lettered_with_the_decode_error_while_others_go_on() {
    let Some(url) = broker().await else { return };
    let tag = unique("unknown");
    let queue = ActiveMqQueue::new(&tag).max_attempts(2);
    let envelope = |id: &str, event_type: &str, version: &str| {
        [
            (HEADERS.event_id, id.to_owned()),
            (HEADERS.event_type, event_type.to_owned()),
            (HEADERS.schema_version, "1".to_owned()),
            (HEADERS.stream_category, CATEGORY.to_owned()),
            (HEADERS.stream_id, "s0".to_owned()),
            (HEADERS.stream_version, version.to_owned()),
            (HEADERS.position, version.to_owned()),
            (HEADERS.recorded_at, "2026-01-01T00:00:00Z".to_owned()),
        ]
    };
    let send = |headers: [(&'static str, String); 8]| {
        let url = url.clone();
        let tag = tag.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send_raw(&url, &tag, &headers, "{}").await;
        }
    };
    let unknown = uuid::Uuid::new_v4().to_string();
    send(envelope(&unknown, "Unheard", "1")).await;
    send(envelope(&uuid::Uuid::new_v4().to_string(), "Noted", "2")).await;

    let inbox = Arc::new(InMemoryInbox::new(Typed::default()));
    let consumer = ActiveMqConsumer::new(url.clone(), queue.clone(), inbox.clone()).start();
    eventually(20, "one handled, one dead-lettered", || {
        let s = consumer.stats();
        s.handled == 1 && s.dead_lettered == 1
    })
    .await;
    let dead = drain(&url, &queue.dead_letter_queue(), Duration::from_secs(2)).await;
    assert_eq!(dead.len(), 1);
    let (error, attempts) = dead_letter_error(&dead[0].headers).expect("error headers");
    assert!(error.contains("cannot decode event Unheard"), "{error}");
    assert_eq!(attempts, 2, "tried to the bound, then dead-lettered");
    assert_eq!(
        dead[0].get(HEADERS.event_id),
        Some(unknown.as_str()),
        "kept whole"
    );
    consumer.shutdown().await;
}
