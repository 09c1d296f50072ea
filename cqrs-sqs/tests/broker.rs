//! The relay and the consumers against the real SQS server at SQS_ENDPOINT (default
//! `http://127.0.0.1:9324`; `scripts/services` starts moto there). The queues stay shallow:
//! the local server takes tens of messages a second.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::*;
use cqrs_sqs::aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use cqrs_sqs::*;
use support::*;

const CATEGORY: &str = "account";

fn queue(tag: &str) -> SqsQueue {
    SqsQueue::new(format!("{tag}.fifo"))
        .max_receives(3)
        .visibility(Duration::from_secs(3))
        .wait(Duration::from_secs(1))
        .retry_after(Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_1000_events_through_a_fifo_queue_in_order_per_stream_across_a_crash_before_the_checkpoint()
 {
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("crash");
    let queue = queue(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 20, 50).await;

    // The consumer runs throughout, so that the queue stays shallow.
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();

    // First life: 4 batches of 100 are checkpointed; the 5th is accepted, then the process
    // "dies" before its checkpoint.
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let crashing = Arc::new(CrashingCheckpoints::new(checkpoints.clone(), 4));
    let relay = SqsRelay::with_client(&tag, client.clone(), queue.clone(), crashing.clone());
    let runner = relay_runner_of(store.clone(), relay, 100);
    crashing.crashed.notified().await;
    runner.abort();
    assert_eq!(checkpoints.load(&tag).await.unwrap().position, 400);

    // Second life, from the saved checkpoint: the 5th batch goes out again, and SQS drops it
    // as repeats of deduplication ids it has seen.
    let relay = SqsRelay::with_client(&tag, client.clone(), queue.clone(), checkpoints.clone());
    let runner = relay_runner_of(store.clone(), relay, 100);
    runner
        .wait_for(&tag, 1000, Duration::from_secs(120))
        .await
        .unwrap();
    eventually(120, "1,000 events handled", || {
        consumer.stats().handled >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stats = consumer.stats();
    assert_eq!(stats.handled, 1000, "{stats:?}");
    assert_eq!(
        stats.delivered,
        stats.handled + stats.duplicates,
        "{stats:?}"
    );
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_in_order_once(&inbox.projector().seen.lock().unwrap(), 20, 50);
    consumer.shutdown().await;
    runner.shutdown().await;
    let urls = queue.declare(&client).await.unwrap();
    assert_eq!(
        depth(&client, &urls.queue).await,
        0,
        "every message deleted"
    );
    drop_queues(&client, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_envelope_travels_in_at_most_ten_attributes_grouped_by_stream_deduplicated_by_event_id()
{
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("layout");
    let queue = queue(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new(CATEGORY, "a-1");
    let mut metadata = Metadata {
        correlation_id: Some(uuid::Uuid::new_v4()),
        causation_id: Some(uuid::Uuid::new_v4()),
        ..Default::default()
    };
    metadata
        .extra
        .insert("tenant".into(), serde_json::json!("t-9"));
    let mut opened = NewEvent::new("Opened", serde_json::json!({"owner": "ann"}));
    opened.metadata = metadata.clone();
    let out = store
        .append(&stream, ExpectedVersion::Any, vec![opened], None)
        .await
        .unwrap();
    let relay = SqsRelay::with_client(
        &tag,
        client.clone(),
        queue.clone(),
        InMemoryCheckpointStore::new(),
    );
    let runner = relay_runner_of(store.clone(), relay, 100);
    runner
        .wait_for(&tag, out.position, Duration::from_secs(20))
        .await
        .unwrap();
    runner.shutdown().await;

    let urls = queue.declare(&client).await.unwrap();
    let messages = read_queue(&client, &urls.queue, 1, Duration::from_secs(3)).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let attributes = m.message_attributes.as_ref().unwrap();
    assert!(attributes.len() <= 10, "{:?}", attributes.keys());
    assert!(attributes.contains_key(CONTEXT));
    let system = m.attributes.as_ref().unwrap();
    assert_eq!(
        system[&MessageSystemAttributeName::MessageGroupId],
        "account-a-1"
    );
    let event = decode_message(m).unwrap();
    let stored = store.read_stream(&stream, 1, 10).await.unwrap().remove(0);
    assert_eq!(
        system[&MessageSystemAttributeName::MessageDeduplicationId],
        stored.event_id.to_string()
    );
    assert_eq!(event, stored);
    assert_eq!(event.metadata, metadata);
    drop_queues(&client, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_competing_consumers_share_a_queue_and_no_event_takes_effect_twice() {
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("compete");
    let queue = queue(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 10, 20).await;
    let relay = SqsRelay::with_client(
        &tag,
        client.clone(),
        queue.clone(),
        InMemoryCheckpointStore::new(),
    );
    let runner = relay_runner_of(store.clone(), relay, 100);
    // NOTE: the order across the two is not checked here (a single consumer's is, above):
    // moto 5 takes a snapshot of the groups in flight when a receive begins and keeps it
    // through the call and its long poll, so two receives at once both take from a group (the
    // one its first messages, the other the next ones). SQS keeps a group to one batch in
    // flight at a time.
    runner
        .wait_for(&tag, last, Duration::from_secs(60))
        .await
        .unwrap();

    // One service in two processes: two consumers, one inbox (its table, in a real service).
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(5)),
        ..Default::default()
    }));
    let a = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();
    let b = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();
    eventually(90, "200 events handled", || inbox.projector().len() >= 200).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (sa, sb) = (a.stats(), b.stats());
    assert!(
        sa.handled > 0 && sb.handled > 0,
        "both consumers took part: {sa:?} {sb:?}"
    );
    assert_eq!(sa.handled + sb.handled, 200, "{sa:?} {sb:?}");
    assert_once(&inbox.projector().seen.lock().unwrap(), 10, 20, false);
    a.shutdown().await;
    b.shutdown().await;
    runner.shutdown().await;
    drop_queues(&client, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_moved_to_the_dead_letter_queue_by_the_redrive_policy_while_100_others_go_on()
 {
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("poison");
    let queue = queue(&tag);
    let store = Arc::new(InMemoryEventStore::new());
    let poison = StreamId::new("poison", "p-1");
    store
        .append(
            &poison,
            ExpectedVersion::Any,
            vec![NewEvent::new("Poison", serde_json::json!({}))],
            None,
        )
        .await
        .unwrap();
    let last = seed(&store, CATEGORY, 10, 10).await;
    let relay = SqsRelay::with_client(
        &tag,
        client.clone(),
        queue.clone(),
        InMemoryCheckpointStore::new(),
    );
    let runner = relay_runner_of(store.clone(), relay, 100);
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();
    runner
        .wait_for(&tag, last, Duration::from_secs(60))
        .await
        .unwrap();
    eventually(
        90,
        "100 events handled and the poison dead-lettered",
        || {
            let s = consumer.stats();
            s.handled >= 100 && s.dead_lettered >= 1
        },
    )
    .await;

    let urls = queue.declare(&client).await.unwrap();
    let dead = read_queue(&client, &urls.dead_letters, 2, Duration::from_secs(10)).await;
    let stats = consumer.stats();
    consumer.shutdown().await;
    runner.shutdown().await;
    assert_eq!(stats.handled, 100, "{stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");
    assert_eq!(stats.retried, 2, "tried 3 times: {stats:?}");
    assert_once(&inbox.projector().seen.lock().unwrap(), 10, 10, true);

    assert_eq!(dead.len(), 2, "the message and its note: {dead:?}");
    let note = dead.iter().find_map(dead_letter_note).expect("the note");
    let original = dead
        .iter()
        .find(|m| dead_letter_note(m).is_none())
        .expect("the message");
    let event = decode_message(original).expect("moved unchanged");
    assert_eq!(event.event_type, "Poison");
    assert_eq!(
        original.message_id.as_deref(),
        Some(note.message_id.as_str()),
        "the note names it"
    );
    assert_eq!(note.event_id, Some(event.event_id.to_string()));
    assert!(note.error.contains("cannot digest"), "{note:?}");
    assert_eq!(note.attempts, 3);
    assert_eq!(note.origin, queue.name());
    assert_eq!(depth(&client, &urls.queue).await, 0, "nothing left behind");
    drop_queues(&client, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_loses_nothing_its_messages_come_back_after_the_visibility_timeout()
 {
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("killed");
    // NOTE: a standard queue. moto 5 hands a FIFO group out of order when several of its
    // messages come back together after a visibility timeout (it skips the ones it finds
    // still marked in flight on its way through the queue, and delivers the last one first);
    // SQS keeps the group's order, and the other tests check the order through FIFO queues.
    let queue = SqsQueue::new(&tag)
        .max_receives(3)
        .visibility(Duration::from_secs(3))
        .wait(Duration::from_secs(1));
    let store = Arc::new(InMemoryEventStore::new());
    let last = seed(&store, CATEGORY, 2, 5).await;
    let relay = SqsRelay::with_client(
        &tag,
        client.clone(),
        queue.clone(),
        InMemoryCheckpointStore::new(),
    );
    let runner = relay_runner_of(store.clone(), relay, 100);
    runner
        .wait_for(&tag, last, Duration::from_secs(60))
        .await
        .unwrap();
    runner.shutdown().await;
    let urls = queue.declare(&client).await.unwrap();

    // The inbox outlives the process, as a table would.
    let inbox = Arc::new(InMemoryInbox::new(Recorder {
        delay: Some(Duration::from_millis(400)),
        ..Default::default()
    }));
    let first = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();
    eventually(10, "the batch in hand", || first.stats().delivered > 0).await;
    // The batch of ten takes 4 s, past the 3 s visibility timeout: the keeper extends it, so
    // no one else is handed its messages meanwhile.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let probe = client
        .receive_message()
        .queue_url(&urls.queue)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    assert_eq!(
        probe.messages.unwrap_or_default().len(),
        0,
        "a message in hand was visible"
    );
    let before = first.stats();
    assert!((5..10).contains(&before.handled), "mid-batch: {before:?}");
    first.abort();

    let second = SqsConsumer::with_client(client.clone(), queue.clone(), inbox.clone()).start();
    eventually(60, "10 events handled", || inbox.projector().len() >= 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = second.stats();
    assert!(
        after.duplicates > 0,
        "handled but not deleted before the kill, redelivered: {after:?}"
    );
    assert_once(&inbox.projector().seen.lock().unwrap(), 2, 5, false);
    second.shutdown().await;
    assert_eq!(
        depth(&client, &urls.queue).await,
        0,
        "every message deleted"
    );
    drop_queues(&client, &queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_goes_to_the_dead_letter_queue_with_a_clear_error_and_nothing_is_lost() {
    let Some(client) = server().await else {
        return;
    };
    let tag = unique("bad");
    let queue = queue(&tag);
    let urls = queue.declare(&client).await.unwrap();
    let text = |s: &str| {
        MessageAttributeValue::builder()
            .data_type("String")
            .string_value(s)
            .build()
            .unwrap()
    };
    // Not from a relay: no attributes at all; an envelope with a bad version.
    client
        .send_message()
        .queue_url(&urls.queue)
        .message_body("{}")
        .message_group_id("foreign")
        .message_deduplication_id("bare")
        .send()
        .await
        .unwrap();
    let mut bad = HashMap::new();
    for (name, value) in [
        ("cqrs-event-id", uuid::Uuid::new_v4().to_string()),
        ("cqrs-event-type", "Noted".into()),
        ("cqrs-schema-version", "1".into()),
        ("cqrs-stream-category", "account".into()),
        ("cqrs-stream-id", "x".into()),
        ("cqrs-stream-version", "seven".into()),
        ("cqrs-position", "1".into()),
        ("cqrs-recorded-at", "2026-01-01T00:00:00Z".into()),
    ] {
        bad.insert(name.to_owned(), text(&value));
    }
    client
        .send_message()
        .queue_url(&urls.queue)
        .message_body("{}")
        .set_message_attributes(Some(bad))
        .message_group_id("foreign")
        .message_deduplication_id("malformed")
        .send()
        .await
        .unwrap();
    // From a relay: five known events and one of a type this service does not know.
    let store = Arc::new(InMemoryEventStore::new());
    seed(&store, CATEGORY, 5, 1).await;
    let out = store
        .append(
            &StreamId::new("other", "o-1"),
            ExpectedVersion::Any,
            vec![NewEvent::new("Renamed", serde_json::json!({"to": "z"}))],
            None,
        )
        .await
        .unwrap();
    let relay = SqsRelay::with_client(
        &tag,
        client.clone(),
        queue.clone(),
        InMemoryCheckpointStore::new(),
    );
    let runner = relay_runner_of(store.clone(), relay, 100);
    runner
        .wait_for(&tag, out.position, Duration::from_secs(30))
        .await
        .unwrap();
    runner.shutdown().await;

    let typed = Arc::new(InMemoryInbox::new(Typed::default()));
    let consumer = SqsConsumer::with_client(client.clone(), queue.clone(), typed.clone()).start();
    eventually(60, "5 handled, 3 dead-lettered", || {
        let s = consumer.stats();
        s.handled >= 5 && s.dead_lettered >= 3
    })
    .await;
    let dead = read_queue(&client, &urls.dead_letters, 6, Duration::from_secs(10)).await;
    let stats = consumer.stats();
    consumer.shutdown().await;
    assert_eq!((stats.handled, stats.dead_lettered), (5, 3), "{stats:?}");
    assert_eq!(dead.len(), 6, "three messages, three notes: {dead:?}");

    let by_id: HashMap<&str, _> = dead
        .iter()
        .map(|m| (m.message_id.as_deref().unwrap(), m))
        .collect();
    let mut errors: Vec<(String, u32, String)> = dead
        .iter()
        .filter_map(dead_letter_note)
        .map(|n| {
            let m = by_id
                .get(n.message_id.as_str())
                .expect("the note's message is beside it");
            assert!(dead_letter_note(m).is_none());
            (m.body.clone().unwrap(), n.attempts, n.error)
        })
        .collect();
    errors.sort_by(|a, b| a.2.cmp(&b.2));
    assert_eq!(errors.len(), 3, "{errors:?}");
    let find = |what: &str| {
        errors
            .iter()
            .find(|e| e.2.contains(what))
            .unwrap_or_else(|| panic!("no error naming {what}: {errors:?}"))
    };
    // Read at once, moved by the consumer on the first try.
    assert_eq!(find("header cqrs-event-id").1, 1);
    assert_eq!(find("header cqrs-stream-version").1, 1);
    // The unknown type: three tries, then the redrive policy, the payload unchanged.
    let renamed = find("Renamed");
    assert_eq!((renamed.0.as_str(), renamed.1), (r#"{"to":"z"}"#, 3));
    assert_eq!(depth(&client, &urls.queue).await, 0, "nothing left behind");
    drop_queues(&client, &queue).await;
}
