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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_fails_only_its_conflict_and_answers_a_repeated_command_with_its_first_result() {
    let (_dir, db) = file_db().await;
    let store = std::sync::Arc::new(db.events());
    let repeated = CommandId::new(Uuid::new_v4());
    let r = StreamId::new("group", "repeated");
    let first = store
        .append(&r, ExpectedVersion::NoStream, events(1), Some(repeated))
        .await
        .expect("the command's first append");

    // Hold the one writer, so that the eight appends below queue and are written together: a
    // first append takes the turn and waits for the writer alone, the eight queue behind it.
    let held = db.begin_write().await.expect("write transaction");
    let blocker = {
        let store = store.clone();
        tokio::spawn(async move {
            let stream = StreamId::new("group", "blocker");
            store
                .append(&stream, ExpectedVersion::NoStream, events(1), None)
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let conflict_command = CommandId::new(Uuid::new_v4());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (stream, expected, command) = match i {
                // Expects a version the fresh stream does not have.
                0 => (
                    StreamId::new("group", "conflict"),
                    ExpectedVersion::Exact(5),
                    Some(conflict_command),
                ),
                // Repeats the command id of the append above.
                1 => (
                    StreamId::new("group", "repeated"),
                    ExpectedVersion::NoStream,
                    Some(repeated),
                ),
                // Six that succeed, two of them with a command id of their own.
                i => (
                    StreamId::new("group", format!("ok-{i}")),
                    ExpectedVersion::NoStream,
                    (i % 3 == 0).then(|| CommandId::new(Uuid::new_v4())),
                ),
            };
            store.append(&stream, expected, events(2), command).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    held.rollback().await.expect("release the writer");
    let blocked = blocker.await.expect("task").expect("the first append");
    assert_eq!(blocked.position, 2);
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }

    let Err(cqrs_core::Error::Conflict { actual, .. }) = &results[0] else {
        panic!(
            "the conflicting append fails with the typed conflict: {:?}",
            results[0]
        );
    };
    assert_eq!(*actual, 0);
    let again = results[1]
        .as_ref()
        .expect("a repeated command id is answered");
    assert!(again.duplicate);
    assert_eq!(
        (again.version, again.position),
        (first.version, first.position)
    );
    let mut positions = Vec::new();
    for (i, r) in results.iter().enumerate().skip(2) {
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("append {i} failed: {e:?}"));
        assert!(!r.duplicate);
        assert_eq!(r.version, 2);
        positions.push(r.position);
    }
    positions.sort_unstable();
    assert_eq!(
        positions,
        vec![4, 6, 8, 10, 12, 14],
        "gap-free, two events each"
    );

    // Exactly the first two appends and the six are stored; the conflict left no command.
    let stored = all(&*store).await;
    assert_eq!(stored.len(), 2 + 6 * 2);
    for (i, (_, _, position)) in stored.iter().enumerate() {
        assert_eq!(*position, i as u64 + 1);
    }
    let conflict = StreamId::new("group", "conflict");
    assert_eq!(
        store
            .command_result(&conflict, conflict_command)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.stream_version(&conflict).await.unwrap(), 0);
}
