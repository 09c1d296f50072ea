//! The shapes an append takes on SQLite: one statement for a few events without a command id,
//! a transaction for many events (several statements) or a command id. Each keeps the version
//! check, gap-free versions and positions, and all-or-nothing writes.

mod support;

use cqrs_core::{
    AllStreamReader, CommandId, Cursor, EventAppender, ExpectedVersion, NewEvent, StreamId,
    StreamReaderExt,
};
use serde_json::json;
use support::file_db;
use uuid::Uuid;

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::new("Added", json!({ "i": i })))
        .collect()
}

/// Every event of the store, in order, as (stream id, version, position).
async fn all(store: &impl AllStreamReader) -> Vec<(String, u64, u64)> {
    let batch = store.read_all(Cursor::START, 100_000).await.expect("read");
    batch
        .into_iter()
        .map(|e| (e.stream.id.clone(), e.stream_version, e.cursor.position))
        .collect()
}

#[tokio::test]
async fn an_append_larger_than_a_statement_is_one_gap_free_transaction() {
    let (_dir, db) = file_db().await;
    let store = db.events();
    let a = StreamId::new("big", "a");
    store
        .append(&a, ExpectedVersion::NoStream, events(3), None)
        .await
        .expect("first");
    // 700 events take several statements: versions 4..=703, positions 4..=703.
    let out = store
        .append(&a, ExpectedVersion::Exact(3), events(700), None)
        .await
        .expect("large append");
    assert_eq!((out.version, out.position), (703, 703));
    let stored = all(&store).await;
    assert_eq!(stored.len(), 703);
    for (i, (id, version, position)) in stored.iter().enumerate() {
        assert_eq!(id, "a");
        assert_eq!((*version, *position), (i as u64 + 1, i as u64 + 1));
    }
    let read = store.read_stream(&a, 700, 10).await.expect("read stream");
    assert_eq!(read.len(), 4);
    assert_eq!(read[3].payload_value().unwrap()["i"], 699);

    // A large append at a stale version writes nothing, and a large one whose last event
    // repeats a stored id writes nothing either: no first statement's events are left behind.
    let stale = store
        .append(&a, ExpectedVersion::Exact(3), events(700), None)
        .await
        .expect_err("stale");
    assert!(stale.is_conflict(), "{stale:?}");
    let mut repeat = events(700);
    repeat[699].event_id = stored_first_id(&store).await;
    let dup = store
        .append(&a, ExpectedVersion::Exact(703), repeat, None)
        .await
        .expect_err("a stored event id");
    assert!(matches!(dup, cqrs_core::Error::Invalid(_)), "{dup:?}");
    assert_eq!(store.head_position().await.unwrap(), 703);
    assert_eq!(store.stream_version(&a).await.unwrap(), 703);
}

async fn stored_first_id(store: &impl AllStreamReader) -> Uuid {
    store.read_all(Cursor::START, 1).await.unwrap()[0].event_id
}

#[tokio::test]
async fn a_conflict_of_a_one_statement_append_names_the_actual_version() {
    let (_dir, db) = file_db().await;
    let store = db.events();
    let s = StreamId::new("small", "s");
    store
        .append(&s, ExpectedVersion::Any, events(2), None)
        .await
        .expect("first");
    let Err(cqrs_core::Error::Conflict {
        expected, actual, ..
    }) = store
        .append(&s, ExpectedVersion::NoStream, events(1), None)
        .await
    else {
        panic!("an append to an existing stream with NoStream is a conflict");
    };
    assert_eq!((expected, actual), (ExpectedVersion::NoStream, 2));
    let out = store
        .append(&s, ExpectedVersion::Any, events(2), None)
        .await
        .expect("any");
    assert_eq!((out.version, out.position), (4, 4));

    // An empty append with a command id records the command at the stream's version.
    let cmd = CommandId::new(Uuid::new_v4());
    let empty = store
        .append(&s, ExpectedVersion::Exact(4), vec![], Some(cmd))
        .await
        .expect("empty");
    assert_eq!(empty.version, 4);
    let again = store
        .append(&s, ExpectedVersion::Exact(4), vec![], Some(cmd))
        .await
        .expect("repeat");
    assert!(again.duplicate);
    assert_eq!(all(&store).await.len(), 4);
}
