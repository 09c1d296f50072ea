//! The store conformance suite: generic async checks that every back-end runs from its own
//! tests, each against the real back-end.
//!
//! Each check panics with a message naming the broken promise. Checks use fresh random stream
//! and subscriber names, so they may share one store, but the all-stream checks read from the
//! head they find, so run them on a store no other test writes to at the same time.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{testkit::conformance, InMemoryEventStore};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! conformance::event_store(Arc::new(InMemoryEventStore::new())).await;
//! # });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use crate::error::Error;
use crate::event::{Cursor, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId};
use crate::event_store::{
    CommandId, EventStore, Fingerprint, StreamEvent, StreamItem, StreamReaderExt,
};
use crate::store::{
    CheckpointStore, DeadLetter, DeadLetterStatus, DeadLetterStore, Snapshot, SnapshotStore,
};

fn fresh_stream(category: &str) -> StreamId {
    StreamId::new(category, Uuid::new_v4().to_string())
}

/// A sample event with a recognizable payload.
pub fn sample_event(n: u64) -> NewEvent {
    let mut metadata = Metadata::correlated(Uuid::new_v4());
    metadata.causation_id = Some(Uuid::new_v4());
    metadata.extra.insert("n".into(), json!(n));
    NewEvent {
        event_id: Uuid::new_v4(),
        event_type: if n.is_multiple_of(2) {
            "Even".into()
        } else {
            "Odd".into()
        },
        schema_version: 1 + (n % 3) as u32,
        payload: json!({ "n": n, "text": format!("event {n} é ✓"), "nested": { "list": [1, 2, 3] } }),
        metadata,
    }
}

/// The cursor from which the events appended from now on can be read.
async fn cursor_now(store: &dyn EventStore) -> Cursor {
    let head = store.head_position().await.expect("head_position");
    if head == 0 {
        return Cursor::START;
    }
    // NOTE: walk down, since the head event itself may not be readable yet on stores that
    // hold back events of open transactions.
    let mut p = head;
    while p > 0 {
        if let Some(c) = store.cursor_of(p).await.expect("cursor_of") {
            return c;
        }
        p -= 1;
    }
    Cursor::START
}

/// Reads the all-stream after `from` to its end in batches of `batch`, keeping only `streams`.
async fn read_all_of(
    store: &dyn EventStore,
    from: Cursor,
    batch: usize,
    streams: &HashSet<StreamId>,
) -> Vec<RecordedEvent> {
    let mut cursor = from;
    let mut out = Vec::new();
    loop {
        let events = store.read_all(cursor, batch).await.expect("read_all");
        assert!(
            events.len() <= batch,
            "read_all returned {} events for a limit of {batch}",
            events.len()
        );
        let Some(last) = events.last() else { break };
        for w in events.windows(2) {
            assert!(
                w[0].cursor < w[1].cursor,
                "read_all is not in cursor order: {} then {}",
                w[0].cursor,
                w[1].cursor
            );
        }
        assert!(
            events[0].cursor > cursor,
            "read_all returned an event at or before its cursor"
        );
        cursor = last.cursor;
        out.extend(events.into_iter().filter(|e| streams.contains(&e.stream)));
    }
    out
}

/// Runs every event-store check.
pub async fn event_store(store: Arc<dyn EventStore>) {
    append_and_read(&*store).await;
    stream_reads(&*store).await;
    expected_versions(&*store).await;
    racing_writers(store.clone()).await;
    all_stream_order_and_batches(&*store).await;
    all_stream_under_concurrent_writers(store.clone()).await;
    idempotent_command_ids(&*store).await;
    command_id_fingerprints(&*store).await;
    racing_repeats_of_a_command_id(store.clone()).await;
    duplicate_event_id_rejected(&*store).await;
    wake_ups_on_append(&*store).await;
}

/// Appended events read back whole, in order, with versions from 1.
pub async fn append_and_read(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        0,
        "a new stream is at version 0"
    );
    assert!(store.read_stream(&stream, 1, 100).await.unwrap().is_empty());
    let events: Vec<_> = (0..3).map(sample_event).collect();
    let before = Utc::now() - chrono::Duration::seconds(5);
    let res = store
        .append(&stream, ExpectedVersion::NoStream, events.clone(), None)
        .await
        .expect("append");
    assert_eq!(res.version, 3);
    assert!(res.position > 0 && !res.duplicate);
    assert!(store.head_position().await.unwrap() >= res.position);
    let read = store.read_stream(&stream, 1, 100).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (r, e)) in read.iter().zip(&events).enumerate() {
        assert_eq!(r.stream, stream);
        assert_eq!(r.stream_version, i as u64 + 1);
        assert_eq!(r.event_id, e.event_id);
        assert_eq!(r.event_type, e.event_type);
        assert_eq!(r.schema_version, e.schema_version);
        assert_eq!(
            r.payload_value().unwrap(),
            e.payload,
            "payload must round-trip exactly"
        );
        assert_eq!(r.metadata, e.metadata, "metadata must round-trip exactly");
        assert!(
            r.recorded_at >= before && r.recorded_at <= Utc::now() + chrono::Duration::seconds(5)
        );
    }
    assert!(
        read[0].cursor.position < read[1].cursor.position
            && read[1].cursor.position < read[2].cursor.position
    );
    assert_eq!(
        read[2].cursor.position, res.position,
        "the append returns the last event's position"
    );
    let tail = store.read_stream(&stream, 2, 1).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(tail[0].stream_version, 2);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 3);
    assert_eq!(
        store.cursor_of(res.position).await.unwrap(),
        Some(read[2].cursor)
    );
    let other = fresh_stream("conformance");
    assert!(
        store.read_stream(&other, 1, 10).await.unwrap().is_empty(),
        "streams are separate"
    );
}

/// What one [`read_stream_into`](crate::StreamReader::read_stream_into) of `versions` hands
/// its sink: the versions it told, and the events.
async fn read_range(
    store: &dyn EventStore,
    stream: &StreamId,
    versions: std::ops::RangeInclusive<u64>,
) -> (u64, Vec<u64>, Vec<StreamEvent>) {
    let (mut told, mut events) = (Vec::new(), Vec::new());
    let head = store
        .read_stream_into(stream, versions.clone(), &mut |item| {
            match item {
                StreamItem::Version(v) => {
                    assert!(
                        events.is_empty(),
                        "{versions:?}: the version comes before the events"
                    );
                    told.push(v);
                }
                StreamItem::Event(e) => events.push(e),
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("read_stream_into({versions:?}): {e}"));
    (head, told, events)
}

/// A stream read of any range tells the stream's version once, first, then hands over the
/// events of the range in order, as `read_stream` reads them, the payload and the metadata as
/// their JSON text; an error from the sink ends the read.
pub async fn stream_reads(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    // Enough events for a store that reads long ranges in pieces to use several.
    let events: Vec<_> = (0..1203).map(sample_event).collect();
    for batch in events.chunks(400) {
        store
            .append(&stream, ExpectedVersion::Any, batch.to_vec(), None)
            .await
            .expect("append");
    }
    let full = store.read_stream(&stream, 1, 10_000).await.unwrap();
    assert_eq!(full.len(), 1203);
    #[allow(clippy::reversed_empty_ranges)]
    for versions in [
        1..=1203,
        1..=250,
        251..=900,
        999..=1100,
        1100..=5000,
        5..=4,
        7..=u64::MAX,
    ] {
        let (head, told, got) = read_range(store, &stream, versions.clone()).await;
        assert_eq!(
            (head, told),
            (1203, vec![1203]),
            "{versions:?}: the stream's version, once"
        );
        let want: Vec<u64> = (1..=1203).filter(|v| versions.contains(v)).collect();
        assert_eq!(
            got.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
            want,
            "{versions:?}: the events of the range, in order"
        );
        for e in got {
            let stored = &full[e.stream_version as usize - 1];
            assert_eq!(
                e.payload, stored.payload,
                "{versions:?}: the payload as stored"
            );
            assert_eq!(
                e.clone()
                    .into_recorded(&stream)
                    .expect("the event reads whole"),
                *stored,
                "{versions:?}: the event as read_stream reads it"
            );
        }
    }
    // An error from the sink ends the read and comes back.
    let mut calls = 0;
    let refused = store
        .read_stream_into(&stream, 1..=1203, &mut |item| {
            calls += 1;
            match item {
                StreamItem::Version(_) => Ok(()),
                StreamItem::Event(_) => Err(Error::Backend("the sink refused".into())),
            }
        })
        .await;
    assert!(
        matches!(&refused, Err(Error::Backend(e)) if e.to_string() == "the sink refused"),
        "{refused:?}"
    );
    assert_eq!(calls, 2, "nothing after the sink's error");
    let empty = fresh_stream("conformance");
    let (head, told, got) = read_range(store, &empty, 1..=1000).await;
    assert_eq!((head, told, got), (0, vec![0], Vec::new()), "no stream");
    assert_eq!(store.stream_version(&empty).await.unwrap(), 0);
    assert_eq!(store.stream_version(&stream).await.unwrap(), 1203);
}

/// Expected versions: exact, no stream, any; a mismatch writes nothing.
pub async fn expected_versions(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    store
        .append(
            &stream,
            ExpectedVersion::Exact(0),
            vec![sample_event(1)],
            None,
        )
        .await
        .expect("exact 0 on a new stream");
    let err = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![sample_event(2)],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Conflict { actual: 1, .. }),
        "NoStream on an existing stream: {err:?}"
    );
    let err = store
        .append(
            &stream,
            ExpectedVersion::Exact(5),
            vec![sample_event(2), sample_event(3)],
            None,
        )
        .await
        .unwrap_err();
    match err {
        Error::Conflict {
            stream: s,
            expected,
            actual,
        } => {
            assert_eq!(
                (s, expected, actual),
                (stream.clone(), ExpectedVersion::Exact(5), 1)
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        1,
        "a conflicting append writes nothing"
    );
    store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![sample_event(2)],
            None,
        )
        .await
        .expect("exact 1");
    let res = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![sample_event(3), sample_event(4)],
            None,
        )
        .await
        .expect("any");
    assert_eq!(res.version, 4);
    assert_eq!(store.read_stream(&stream, 1, 100).await.unwrap().len(), 4);
}

/// Many writers at the same expected version: exactly one wins, the others get the conflict.
pub async fn racing_writers(store: Arc<dyn EventStore>) {
    for round in 0..5 {
        let stream = fresh_stream("conformance");
        if round > 0 {
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    vec![sample_event(0)],
                    None,
                )
                .await
                .unwrap();
        }
        let expected = if round > 0 {
            ExpectedVersion::Exact(1)
        } else {
            ExpectedVersion::NoStream
        };
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, stream) = (store.clone(), stream.clone());
            tasks.push(tokio::spawn(async move {
                store
                    .append(
                        &stream,
                        expected,
                        vec![sample_event(i), sample_event(i + 100)],
                        None,
                    )
                    .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("writer task") {
                Ok(_) => wins += 1,
                Err(e) => assert!(
                    e.is_conflict(),
                    "a losing writer must get the conflict error, got {e:?}"
                ),
            }
        }
        assert_eq!(wins, 1, "exactly one racing writer wins");
        let base = if round > 0 { 1 } else { 0 };
        assert_eq!(
            store.stream_version(&stream).await.unwrap(),
            base + 2,
            "only the winner's events are written"
        );
    }
}

/// The all-stream is totally ordered, holds every event once, and batches of any size resume
/// exactly where the last one ended.
pub async fn all_stream_order_and_batches(store: &dyn EventStore) {
    let start = cursor_now(store).await;
    let streams: Vec<_> = (0..4).map(|_| fresh_stream("conformance")).collect();
    let mut ids = Vec::new();
    for round in 0..5u64 {
        for s in &streams {
            let events: Vec<_> = (0..(round % 3 + 1))
                .map(|i| sample_event(round * 10 + i))
                .collect();
            ids.extend(events.iter().map(|e| e.event_id));
            store
                .append(s, ExpectedVersion::Any, events, None)
                .await
                .unwrap();
        }
    }
    let set: HashSet<_> = streams.iter().cloned().collect();
    let whole = read_all_of(store, start, 10_000, &set).await;
    assert_eq!(
        whole.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids,
        "the all-stream holds every event once, in append order"
    );
    for batch in [1, 3, 7] {
        let again = read_all_of(store, start, batch, &set).await;
        assert_eq!(
            again, whole,
            "reading in batches of {batch} gives the same all-stream"
        );
    }
    let mut versions: HashMap<&StreamId, u64> = HashMap::new();
    for e in &whole {
        let v = versions.entry(&e.stream).or_default();
        assert_eq!(
            e.stream_version,
            *v + 1,
            "per-stream order holds in the all-stream"
        );
        *v += 1;
        assert_eq!(
            store.cursor_of(e.cursor.position).await.unwrap(),
            Some(e.cursor)
        );
    }
}

/// A reader following the all-stream while writers append sees every event exactly once.
pub async fn all_stream_under_concurrent_writers(store: Arc<dyn EventStore>) {
    let start = cursor_now(&*store).await;
    let streams: Vec<_> = (0..4).map(|_| fresh_stream("conformance")).collect();
    let set: HashSet<_> = streams.iter().cloned().collect();
    let mut writers = Vec::new();
    for s in streams.clone() {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .append(
                        &s,
                        ExpectedVersion::Any,
                        vec![sample_event(i), sample_event(i + 1)],
                        None,
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    let mut seen = Vec::new();
    let mut cursor = start;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader did not see all 200 events, saw {}",
            seen.len()
        );
        let events = store.read_all(cursor, 17).await.unwrap();
        if let Some(last) = events.last() {
            assert!(last.cursor > cursor);
            cursor = last.cursor;
        } else {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        seen.extend(
            events
                .into_iter()
                .filter(|e| set.contains(&e.stream))
                .map(|e| e.event_id),
        );
    }
    for w in writers {
        w.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rest = read_all_of(&*store, cursor, 100, &set).await;
    seen.extend(rest.into_iter().map(|e| e.event_id));
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(seen.len(), 200, "every event seen once");
    assert_eq!(unique.len(), 200, "no event seen twice");
}

/// The same command id on the same stream appends once; the repeat gets the first result.
pub async fn idempotent_command_ids(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    let cid = Uuid::new_v4();
    assert_eq!(
        store.command_result(&stream, cid.into()).await.unwrap(),
        None
    );
    let first = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![sample_event(1), sample_event(2)],
            Some(cid.into()),
        )
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![sample_event(3)],
            Some(cid.into()),
        )
        .await
        .unwrap();
    assert!(
        again.duplicate,
        "a repeated command id is reported as a duplicate"
    );
    assert_eq!(
        (again.version, again.position),
        (first.version, first.position),
        "the repeat returns the first result"
    );
    let stale = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![sample_event(3)],
            Some(cid.into()),
        )
        .await
        .unwrap();
    assert!(
        stale.duplicate,
        "a repeat wins over a now-stale expected version"
    );
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        2,
        "nothing new appended"
    );
    let found = store
        .command_result(&stream, cid.into())
        .await
        .unwrap()
        .expect("command result kept");
    assert_eq!(
        (found.version, found.position),
        (first.version, first.position)
    );
    let other = fresh_stream("conformance");
    let res = store
        .append(
            &other,
            ExpectedVersion::Any,
            vec![sample_event(4)],
            Some(cid.into()),
        )
        .await
        .unwrap();
    assert!(!res.duplicate, "command ids are per stream");
    let next = store
        .append(
            &stream,
            ExpectedVersion::Exact(2),
            vec![sample_event(5)],
            Some(Uuid::new_v4().into()),
        )
        .await
        .unwrap();
    assert_eq!(next.version, 3);
}

/// A command id is kept with the fingerprint of its request: the same id with the same
/// fingerprint is a repeat, with another one [`Error::CommandIdReused`] and nothing written;
/// an id without a fingerprint, on either side, accepts any repeat.
pub async fn command_id_fingerprints(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    let (a, b) = (
        Fingerprint::of("request a").unwrap(),
        Fingerprint::of("request b").unwrap(),
    );
    let id = Uuid::new_v4();
    let first = store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            vec![sample_event(1)],
            Some(CommandId::with_fingerprint(id, a)),
        )
        .await
        .unwrap();
    let again = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![sample_event(2)],
            Some(CommandId::with_fingerprint(id, a)),
        )
        .await
        .unwrap();
    assert!(
        again.duplicate && (again.version, again.position) == (first.version, first.position),
        "the same id and fingerprint is a repeat: {again:?}"
    );
    let reused = |r: crate::Result<_>| matches!(r, Err(Error::CommandIdReused { stream: s, command_id }) if s == stream && command_id == id);
    let other = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![sample_event(3)],
            Some(CommandId::with_fingerprint(id, b)),
        )
        .await;
    assert!(
        reused(other.map(|_| ())),
        "the same id with another fingerprint is refused"
    );
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        1,
        "and writes nothing"
    );
    assert!(
        reused(
            store
                .command_result(&stream, CommandId::with_fingerprint(id, b))
                .await
                .map(|_| ())
        ),
        "command_result refuses another fingerprint too"
    );
    let found = store
        .command_result(&stream, CommandId::with_fingerprint(id, a))
        .await
        .unwrap()
        .expect("kept");
    assert_eq!(
        (found.version, found.position),
        (first.version, first.position)
    );
    let any = store
        .command_result(&stream, CommandId::new(id))
        .await
        .unwrap();
    assert!(
        any.is_some(),
        "an id without a fingerprint accepts the stored one"
    );
    // Recorded without a fingerprint: any request repeats it.
    let plain = Uuid::new_v4();
    store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![sample_event(4)],
            Some(CommandId::new(plain)),
        )
        .await
        .unwrap();
    let repeat = store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![sample_event(5)],
            Some(CommandId::with_fingerprint(plain, b)),
        )
        .await
        .unwrap();
    assert!(
        repeat.duplicate,
        "a stored id without a fingerprint accepts any repeat"
    );
    // Per stream: the same id on another stream is another command.
    let other_stream = fresh_stream("conformance");
    let res = store
        .append(
            &other_stream,
            ExpectedVersion::Any,
            vec![sample_event(6)],
            Some(CommandId::with_fingerprint(id, b)),
        )
        .await
        .unwrap();
    assert!(!res.duplicate);
}

/// Writers racing with one command id and two requests: exactly one appends; those with its
/// fingerprint get its result as a repeat, the others [`Error::CommandIdReused`].
pub async fn racing_repeats_of_a_command_id(store: Arc<dyn EventStore>) {
    let stream = fresh_stream("conformance");
    let id = Uuid::new_v4();
    let fingerprints = [
        Fingerprint::of("request a").unwrap(),
        Fingerprint::of("request b").unwrap(),
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, stream) = (store.clone(), stream.clone());
        let fingerprint = fingerprints[i % 2];
        tasks.push(tokio::spawn(async move {
            let res = store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    vec![sample_event(i as u64)],
                    Some(CommandId::with_fingerprint(id, fingerprint)),
                )
                .await;
            (fingerprint, res)
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("writer task"));
    }
    let winners: Vec<_> = outcomes
        .iter()
        .filter_map(|(f, r)| match r {
            Ok(res) if !res.duplicate => Some((*f, *res)),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "exactly one append: {outcomes:?}");
    let (winner, first) = winners[0];
    for (f, r) in &outcomes {
        match r {
            Ok(res) if res.duplicate => {
                assert_eq!(*f, winner, "only the winner's request repeats");
                assert_eq!((res.version, res.position), (first.version, first.position));
            }
            Ok(_) => {}
            Err(Error::CommandIdReused { .. }) => assert_ne!(*f, winner),
            Err(e) => panic!("a racing repeat failed otherwise: {e:?}"),
        }
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 1);
}

/// An event id already stored is refused, and the append writes nothing.
pub async fn duplicate_event_id_rejected(store: &dyn EventStore) {
    let stream = fresh_stream("conformance");
    let e = sample_event(1);
    store
        .append(&stream, ExpectedVersion::Any, vec![e.clone()], None)
        .await
        .unwrap();
    let err = store
        .append(
            &stream,
            ExpectedVersion::Exact(1),
            vec![sample_event(2), e],
            None,
        )
        .await;
    assert!(err.is_err(), "an append repeating a stored event id fails");
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        1,
        "and writes nothing"
    );
}

/// Appends wake subscribers.
pub async fn wake_ups_on_append(store: &dyn EventStore) {
    let mut rx = store.wake_ups();
    rx.borrow_and_update();
    let stream = fresh_stream("conformance");
    store
        .append(&stream, ExpectedVersion::Any, vec![sample_event(1)], None)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("an append wakes subscribers within 5 s")
        .expect("wake-up channel open");
}

/// Snapshots: none at first, latest kept, never moved backwards.
pub async fn snapshot_store(store: &dyn SnapshotStore) {
    let stream = fresh_stream("conformance");
    assert_eq!(store.load(&stream).await.unwrap(), None);
    let snap = |v: u64| Snapshot {
        version: v,
        state: json!({ "v": v, "s": "ü" }),
        schema: 2,
    };
    store.save(&stream, snap(5)).await.unwrap();
    assert_eq!(store.load(&stream).await.unwrap(), Some(snap(5)));
    store.save(&stream, snap(3)).await.unwrap();
    assert_eq!(
        store.load(&stream).await.unwrap(),
        Some(snap(5)),
        "a snapshot never moves backwards"
    );
    store.save(&stream, snap(10)).await.unwrap();
    assert_eq!(store.load(&stream).await.unwrap(), Some(snap(10)));
    assert_eq!(
        store.load(&fresh_stream("conformance")).await.unwrap(),
        None
    );
}

/// Checkpoints: start at zero, saved per name, reset.
pub async fn checkpoint_store(store: &dyn CheckpointStore) {
    let (a, b) = (
        format!("cp-{}", Uuid::new_v4()),
        format!("cp-{}", Uuid::new_v4()),
    );
    assert_eq!(store.load(&a).await.unwrap(), Cursor::START);
    store.save(&a, Cursor::new(7, 42)).await.unwrap();
    store.save(&b, Cursor::new(0, 3)).await.unwrap();
    assert_eq!(store.load(&a).await.unwrap(), Cursor::new(7, 42));
    store.save(&a, Cursor::new(9, 43)).await.unwrap();
    assert_eq!(store.load(&a).await.unwrap(), Cursor::new(9, 43));
    store.reset(&a).await.unwrap();
    assert_eq!(store.load(&a).await.unwrap(), Cursor::START);
    assert_eq!(
        store.load(&b).await.unwrap(),
        Cursor::new(0, 3),
        "names are independent"
    );
}

fn letter(subscriber: &str, n: u64) -> DeadLetter {
    let e = sample_event(n);
    DeadLetter {
        id: Uuid::new_v4(),
        subscriber: subscriber.to_owned(),
        event: RecordedEvent {
            event_id: e.event_id,
            stream: fresh_stream("conformance"),
            stream_version: n,
            cursor: Cursor::new(n, n * 10),
            recorded_at: Utc::now(),
            event_type: e.event_type,
            schema_version: e.schema_version,
            payload: e.payload.to_string(),
            metadata: e.metadata,
        },
        error: format!("boom {n}: caused by ✗"),
        attempts: 5,
        parked_at: Utc::now(),
        status: DeadLetterStatus::Parked,
    }
}

/// Dead letters: parked, listed oldest first per subscriber, counted, those asked to retry
/// listed, status set, removed; one letter per subscriber and event; found by position;
/// cleared per subscriber.
pub async fn dead_letter_store(store: &dyn DeadLetterStore) {
    let (a, b) = (
        format!("dl-{}", Uuid::new_v4()),
        format!("dl-{}", Uuid::new_v4()),
    );
    let (a1, a2, b1) = (letter(&a, 1), letter(&a, 2), letter(&b, 3));
    for l in [&a1, &b1, &a2] {
        store.park(l.clone()).await.unwrap();
    }
    let listed = store.list(Some(&a)).await.unwrap();
    assert_eq!(
        listed.iter().map(|l| l.id).collect::<Vec<_>>(),
        vec![a1.id, a2.id],
        "oldest first, one subscriber"
    );
    assert_kept(&listed[0].event, &a1.event);
    assert_eq!(listed[0].error, a1.error);
    assert_eq!(listed[0].attempts, 5);
    let all = store.list(None).await.unwrap();
    assert!(
        [a1.id, a2.id, b1.id]
            .iter()
            .all(|id| all.iter().any(|l| l.id == *id))
    );
    store
        .set_status(a1.id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    assert_eq!(
        store.list(Some(&a)).await.unwrap()[0].status,
        DeadLetterStatus::RetryRequested
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.get(&a), counts.get(&b)),
        (Some(&2), Some(&1)),
        "counts"
    );
    let retry = store.retry_requested(&a).await.unwrap();
    assert_eq!(
        retry.iter().map(|l| (l.id, l.status)).collect::<Vec<_>>(),
        vec![(a1.id, DeadLetterStatus::RetryRequested)],
        "only the letters asked to retry"
    );
    assert_kept(&retry[0].event, &a1.event);
    assert!(store.retry_requested(&b).await.unwrap().is_empty());
    let mut again = a1.clone();
    again.attempts = 6;
    again.error = "still failing".into();
    store.park(again).await.unwrap();
    let listed = store.list(Some(&a)).await.unwrap();
    assert_eq!(listed.len(), 2, "parking the same id again replaces it");
    assert_eq!(
        (listed[0].id, listed[0].attempts, listed[0].status),
        (a1.id, 6, DeadLetterStatus::Parked)
    );
    assert!(
        store.retry_requested(&a).await.unwrap().is_empty(),
        "parked again: no longer asked to retry"
    );
    let mut held = letter(&b, 4);
    held.status = DeadLetterStatus::Held;
    store.park(held.clone()).await.unwrap();
    assert_eq!(
        store.list(Some(&b)).await.unwrap()[1].status,
        DeadLetterStatus::Held,
        "a held letter is kept as held"
    );
    store.remove(held.id).await.unwrap();
    store.remove(a1.id).await.unwrap();
    assert_eq!(store.list(Some(&a)).await.unwrap().len(), 1);
    assert_eq!(store.counts().await.unwrap().get(&a), Some(&1));
    assert!(
        matches!(store.remove(a1.id).await, Err(Error::NotFound(_))),
        "removing twice is NotFound"
    );
    assert!(matches!(
        store
            .set_status(Uuid::new_v4(), DeadLetterStatus::Parked)
            .await,
        Err(Error::NotFound(_))
    ));

    // One letter per subscriber and event: a park repeated under a new id updates the letter
    // there is (id and place kept); the same event for another subscriber is a letter of its own.
    let mut repeat = letter(&a, 2);
    repeat.event = a2.event.clone();
    repeat.attempts = 7;
    store.park(repeat.clone()).await.unwrap();
    let listed = store.list(Some(&a)).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|l| (l.id, l.attempts))
            .collect::<Vec<_>>(),
        vec![(a2.id, 7)],
        "a repeated park updates the letter"
    );
    let mut other = letter(&b, 2);
    other.event = a2.event.clone();
    store.park(other.clone()).await.unwrap();
    assert_eq!(store.list(Some(&b)).await.unwrap().len(), 2);
    let position = a2.event.cursor.position;
    assert_eq!(
        store.find(&a, position).await.unwrap().map(|l| l.id),
        Some(a2.id)
    );
    assert_eq!(
        store.find(&b, position).await.unwrap().map(|l| l.id),
        Some(other.id)
    );
    assert!(store.find(&a, position + 1).await.unwrap().is_none());

    // Clearing a subscriber's letters leaves the others'.
    assert_eq!(store.clear(&b).await.unwrap(), 2);
    assert!(store.list(Some(&b)).await.unwrap().is_empty());
    assert_eq!(store.list(Some(&a)).await.unwrap().len(), 1);
    assert_eq!(store.clear(&a).await.unwrap(), 1);
}

/// A parked event kept whole. NOTE: a store may keep the payload in a JSON type of its own,
/// which respaces it: the payload must mean the same, the rest must be equal.
fn assert_kept(kept: &RecordedEvent, parked: &RecordedEvent) {
    assert_eq!(
        kept.payload_value().unwrap(),
        parked.payload_value().unwrap(),
        "the parked event's payload is kept"
    );
    let blank = |e: &RecordedEvent| RecordedEvent {
        payload: String::new(),
        ..e.clone()
    };
    assert_eq!(blank(kept), blank(parked), "the parked event is kept whole");
}
