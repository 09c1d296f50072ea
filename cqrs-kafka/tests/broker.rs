//! The relay and the consumers against the real Kafka-protocol broker at KAFKA_BROKERS (default
//! `127.0.0.1:9092`; `scripts/services` starts tansu there).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::*;
use cqrs_kafka::rdkafka::message::{Header, Message, OwnedHeaders};
use cqrs_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use cqrs_kafka::*;
use support::*;

const CATEGORY: &str = "account";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_10k_events_in_order_once_each_across_a_crash_before_the_checkpoint() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("crash");
    let topics = KafkaTopics::per_category(&tag);
    let group = KafkaGroup::new(&topics, &tag).subscribe(CATEGORY);
    let topic = topics.topic(CATEGORY);

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 50, 200).await;

    // First life: 4 batches of 500 are checkpointed; the 5th is acknowledged, then the process
    // "dies" before its checkpoint.
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let crashing = Arc::new(CrashingCheckpoints::new(checkpoints.clone(), 4));
    let runner = relay_runner(
        store.clone(),
        relay(&tag, &brokers, topics.clone(), crashing.clone()),
    );
    crashing.crashed.notified().await;
    runner.abort();
    assert_eq!(checkpoints.load(&tag).await.unwrap().position, 2000);
    let stored = read_topic(&brokers, &topic, 2501, Duration::from_secs(3)).await;
    assert_eq!(
        stored.len(),
        2500,
        "the 5th batch was stored before the crash"
    );

    // Second life, from the saved checkpoint: the 5th batch goes out again.
    let runner = relay_runner(
        store.clone(),
        relay(&tag, &brokers, topics.clone(), checkpoints.clone()),
    );
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = consumer(&brokers, group, inbox.clone()).start();
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
    assert_eq!(stats.delivered, 10_500, "{stats:?}");
    assert_eq!(stats.handled, 10_000);
    assert_eq!(
        stats.duplicates, 500,
        "the republished batch reached the consumer and was skipped"
    );
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 50, 200);
    consumer.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_keyed_by_stream_with_the_envelope_in_headers_one_topic_per_aggregate_type() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("layout");
    let topics = KafkaTopics::per_category(&tag).partitions(4);
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, "account", 8, 5).await;
    let last = seed(&store, "transfer", 3, 5).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(20))
        .await
        .unwrap();
    runner.shutdown().await;

    for (category, streams) in [("account", 8), ("transfer", 3)] {
        let records = read_topic(
            &brokers,
            &topics.topic(category),
            streams * 5,
            Duration::from_secs(3),
        )
        .await;
        assert_eq!(records.len(), streams * 5, "{category}");
        let mut partition_of = HashMap::new();
        for (record, event) in records.iter().zip(events_of(&records)) {
            assert_eq!(event.stream.category, category);
            let key = std::str::from_utf8(record.key().unwrap()).unwrap();
            assert_eq!(key, event.stream.to_string(), "keyed by stream");
            let partition = *partition_of
                .entry(event.stream.clone())
                .or_insert(record.partition());
            assert_eq!(record.partition(), partition, "one stream, one partition");
        }
        assert_once(&events_of(&records), streams, 5, true);
        if category == "account" {
            let used: HashSet<_> = partition_of.values().collect();
            assert!(used.len() > 1, "8 streams spread over partitions: {used:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_topic_carries_every_aggregate_type() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("single");
    let topics = KafkaTopics::single(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, "account", 4, 5).await;
    let last = seed(&store, "transfer", 4, 5).await;
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = consumer(&brokers, KafkaGroup::new(&topics, &tag), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(20))
        .await
        .unwrap();
    eventually(30, "40 events", || inbox.projector().len() >= 40).await;
    let seen = inbox.projector().seen.lock().unwrap().clone();
    for category in ["account", "transfer"] {
        let of: Vec<_> = seen
            .iter()
            .filter(|e| e.stream.category == category)
            .cloned()
            .collect();
        assert_once(&of, 4, 5, true);
    }
    consumer.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_split_the_partitions_and_one_takes_over_when_the_other_is_killed() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("takeover");
    let topics = KafkaTopics::per_category(&tag).partitions(4);
    let group = KafkaGroup::new(&topics, &tag).subscribe(CATEGORY);

    // Two instances of one service: one inbox (the service's database), each its own
    // consumer, so that each counts what it was given. Slow handlers, so that the work is
    // still going when one is killed.
    let slow = Recorder {
        delay: Some(Duration::from_millis(2)),
        ..Default::default()
    };
    let inbox = Arc::new(InMemoryInbox::new(slow));
    let a = consumer(&brokers, group.clone(), inbox.clone()).start();
    let b = consumer(&brokers, group.clone(), inbox.clone()).start();

    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 20, 100).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    eventually(60, "both members at work", || {
        a.stats().handled >= 100 && b.stats().handled >= 100
    })
    .await;
    let before_b = b.stats().handled;
    a.abort();
    let at_kill = inbox.projector().len();
    assert!(at_kill < 2000, "killed while work remained ({at_kill})");

    eventually(90, "all 2,000 events", || inbox.projector().len() >= 2000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = inbox.projector().seen.lock().unwrap().clone();
    assert_in_order_once(&seen, 20, 100);
    // NOTE: a few events may still have been finished by the killed member as it went.
    let after = b.stats();
    assert!(
        after.handled - before_b + 5 >= (2000 - at_kill) as u64,
        "the survivor handled the rest ({} left at the kill): {after:?}",
        2000 - at_kill
    );
    b.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_mid_stream_goes_on_from_what_the_other_committed_at_the_rebalance() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("join");
    let topics = KafkaTopics::per_category(&tag).partitions(4);
    let group = KafkaGroup::new(&topics, &tag).subscribe(CATEGORY);
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 20, 100).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(30))
        .await
        .unwrap();
    runner.shutdown().await;

    // A slow first member, an auto-commit interval far longer than the test: only the commit
    // at the rebalance can tell the second member where the first one stopped.
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(2)),
        ..Default::default()
    }));
    let slow_commits = |c: KafkaConsumer<_>| c.set("auto.commit.interval.ms", "600000");
    let a = slow_commits(consumer(&brokers, group.clone(), inbox.clone())).start();
    eventually(30, "the first member at work", || {
        inbox.projector().len() >= 300
    })
    .await;
    let b = slow_commits(consumer(&brokers, group, inbox.clone())).start();
    eventually(60, "all 2,000 events", || inbox.projector().len() >= 2000).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (sa, sb) = (a.stats(), b.stats());
    assert!(sb.handled > 0, "the second member took partitions: {sb:?}");
    assert_eq!(
        sa.duplicates + sb.duplicates,
        0,
        "nothing handled before the rebalance came again: {sa:?} {sb:?}"
    );
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 20, 100);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_resuming_a_partition_mid_batch_misses_nothing() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("resume");
    let topics = KafkaTopics::per_category(&tag).partitions(1);
    let group = KafkaGroup::new(&topics, &tag).subscribe(CATEGORY);
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 10, 100).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(30))
        .await
        .unwrap();
    runner.shutdown().await;

    // A first member stops part-way: what it committed is somewhere inside what the relay
    // produced at once; a second one goes on from there.
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(1)),
        ..Default::default()
    }));
    let first = consumer(&brokers, group.clone(), inbox.clone()).start();
    eventually(30, "a part handled", || inbox.projector().len() >= 333).await;
    first.shutdown().await;
    let part = inbox.projector().len();
    assert!(part < 1000, "stopped part-way ({part})");
    let second = consumer(&brokers, group, inbox.clone()).start();
    let all = tokio::time::timeout(Duration::from_secs(30), async {
        while inbox.projector().len() < 1000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let stats = second.stats();
    assert!(
        all.is_ok(),
        "records lost when resuming at a committed offset: {} of 1000 handled, the second member \
         got {stats:?} (with KAFKA_FULL_BATCHES=1 this is tansu 0.6's mid-batch fetch defect)",
        inbox.projector().len()
    );
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 10, 100);
    assert!(
        stats.duplicates < 50,
        "it went on from the committed offset, not from the start: {stats:?}"
    );
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_always_fails_ends_in_the_dead_letter_topic_with_its_error() {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("poison");
    let topics = KafkaTopics::per_category(&tag).partitions(2);
    let group = KafkaGroup::new(&topics, &tag)
        .subscribe(CATEGORY)
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
    let consumer = consumer(&brokers, group.clone(), inbox.clone()).start();
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
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

    let letters = read_topic(
        &brokers,
        group.dead_letter_topic(),
        2,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(letters.len(), 1, "exactly one dead letter");
    let letter = &letters[0];
    let event = decode_record(letter.headers(), letter.payload()).unwrap();
    assert_eq!(event.event_id, poison_id);
    assert_eq!(
        letter.key(),
        Some(&b"account-bad"[..]),
        "keyed as the original"
    );
    let why = dead_letter_error(letter.headers().unwrap()).expect("error headers");
    assert_eq!(why.error, format!("cannot digest {poison_id}"));
    assert_eq!(why.attempts, 3);
    // The origin names the record in the event topic.
    assert_eq!(why.topic, topics.topic(CATEGORY));
    let originals = read_topic(&brokers, &why.topic, 101, Duration::from_secs(3)).await;
    let original = originals
        .iter()
        .find(|m| m.partition() == why.partition && m.offset() == why.offset)
        .expect("the origin's record");
    assert_eq!(
        decode_record(original.headers(), original.payload())
            .unwrap()
            .event_id,
        poison_id
    );
    assert_eq!(consumer.stats().retried, 2);

    consumer.shutdown().await;
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_without_our_envelope_or_of_an_unknown_type_are_dead_lettered_and_the_partition_goes_on()
 {
    let Some(brokers) = broker().await else {
        return;
    };
    let tag = unique("bad");
    // One partition: the good events come after the bad records in it.
    let topics = KafkaTopics::per_category(&tag).partitions(1);
    let topic = topics.topic(CATEGORY);
    let group = KafkaGroup::new(&topics, &tag)
        .subscribe(CATEGORY)
        .max_attempts(2)
        .retry_delay(Duration::from_millis(50));
    group
        .declare(cqrs_kafka::rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers))
        .await
        .unwrap();

    // The bad records, written straight to the topic: no headers; a malformed envelope header;
    // a value that is not JSON; a well-formed event of a type the service does not know.
    let good = sample_headers(&brokers).await;
    let producer: FutureProducer = cqrs_kafka::rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    let unknown_id = uuid::Uuid::new_v4().to_string();
    let bad: Vec<(&str, OwnedHeaders, &[u8])> = vec![
        ("no headers", OwnedHeaders::new(), b"{}"),
        (
            "bad version",
            with(&good, "cqrs-stream-version", "seven"),
            b"{}",
        ),
        ("not json", good.clone(), b"{not json"),
        (
            "unknown type",
            with(
                &with(&good, "cqrs-event-type", "Unheard"),
                "cqrs-event-id",
                &unknown_id,
            ),
            b"{}",
        ),
    ];
    for (what, headers, value) in &bad {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(*what)
                    .headers(headers.clone())
                    .payload(*value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }

    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 10, 10).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            &brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(20))
        .await
        .unwrap();
    let inbox = Arc::new(InMemoryInbox::new(Typed::default()));
    let consumer = consumer(&brokers, group.clone(), inbox.clone()).start();
    eventually(30, "the 100 good events", || {
        inbox.projector().0.len() == 100
    })
    .await;
    eventually(10, "4 dead letters", || consumer.stats().dead_lettered == 4).await;
    assert_in_order_once(&inbox.projector().0.seen.lock().unwrap(), 10, 10);

    let letters = read_topic(
        &brokers,
        group.dead_letter_topic(),
        5,
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(letters.len(), 4, "one dead letter each");
    let mut errors = HashMap::new();
    for letter in &letters {
        let key = std::str::from_utf8(letter.key().unwrap())
            .unwrap()
            .to_owned();
        let why = dead_letter_error(letter.headers().unwrap()).expect("error headers");
        assert_eq!(why.topic, topic);
        errors.insert(key, why);
    }
    let error = |what: &str| errors[what].error.clone();
    assert!(error("no headers").contains("missing or bad header cqrs-event-id"));
    assert!(error("bad version").contains("missing or bad header cqrs-stream-version"));
    assert!(error("not json").contains("cannot decode event Noted"));
    assert!(error("unknown type").contains("cannot decode event Unheard"));
    // Unreadable records are dead-lettered at once; the unknown type is the handler's error,
    // tried as often as the group allows.
    for what in ["no headers", "bad version", "not json"] {
        assert_eq!(errors[what].attempts, 1, "{what}");
    }
    assert_eq!(errors["unknown type"].attempts, 2);
    // Nothing lost: each dead letter is its record, value and headers.
    for (what, _, value) in &bad {
        let letter = letters
            .iter()
            .find(|l| l.key() == Some(what.as_bytes()))
            .unwrap();
        assert_eq!(letter.payload(), Some(*value), "{what}");
    }

    consumer.shutdown().await;
    runner.shutdown().await;
}

/// The headers of a relayed event (read back from a topic of its own).
async fn sample_headers(brokers: &str) -> OwnedHeaders {
    let tag = unique("sample");
    let topics = KafkaTopics::per_category(&tag).partitions(1);
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 1, 1).await;
    let runner = relay_runner(
        store.clone(),
        relay(
            &tag,
            brokers,
            topics.clone(),
            InMemoryCheckpointStore::new(),
        ),
    );
    runner
        .wait_for(&tag, last, Duration::from_secs(20))
        .await
        .unwrap();
    runner.shutdown().await;
    let records = read_topic(brokers, &topics.topic(CATEGORY), 1, Duration::from_secs(3)).await;
    records[0].headers().unwrap().clone()
}

/// `headers` with `key` set to `value` (read last, it wins).
fn with(headers: &OwnedHeaders, key: &str, value: &str) -> OwnedHeaders {
    headers.clone().insert(Header {
        key,
        value: Some(value),
    })
}
