//! Rows the code can no longer read: a clear error naming the stream, version and type, no
//! panic, and no event hidden.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    AllStreamReader, CheckpointStore, CommandError, CommandHandler, Cursor, DeadLetterStatus,
    DeadLetterStore, Error, EventAppender, ExpectedVersion, NewEvent, Runner, RunnerConfig,
    StreamId, StreamReaderExt,
};
use cqrs_sqlite::SqliteDatabase;
use serde_json::json;
use support::balances::{Totals, totals};
use support::{Counter, CounterEvent, file_db};
use uuid::Uuid;

/// Inserts an event row with raw SQL, as a bad migration or a hand edit would.
async fn insert_raw(
    db: &SqliteDatabase,
    id: &str,
    version: i64,
    event_type: &str,
    payload: &str,
    metadata: &str,
) -> Result<(), sqlx::Error> {
    let mut tx = db.begin_write().await.unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
         VALUES (?, 'counter', ?, ?, ?, 1, ?, ?, '2026-01-01T00:00:00Z')",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(id)
    .bind(version)
    .bind(event_type)
    .bind(payload)
    .bind(metadata)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

fn added(n: u64) -> Vec<NewEvent> {
    vec![NewEvent::from_domain(&CounterEvent::Added { n }, Default::default()).unwrap()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_payload_is_named_and_parked_while_the_rest_goes_on() {
    let (_dir, db) = file_db().await;
    let store = Arc::new(db.events());
    let (c1, c2) = (
        StreamId::new("counter", "c1"),
        StreamId::new("counter", "c2"),
    );
    store
        .append(&c1, ExpectedVersion::NoStream, added(1), None)
        .await
        .unwrap();
    store
        .append(&c1, ExpectedVersion::Exact(1), added(2), None)
        .await
        .unwrap();
    insert_raw(&db, "c1", 3, "Added", r#"{"n": "lots"}"#, "{}")
        .await
        .unwrap();
    insert_raw(&db, "c2", 1, "Exploded", "{}", "{}")
        .await
        .unwrap();
    store
        .append(&c1, ExpectedVersion::Exact(3), added(4), None)
        .await
        .unwrap();
    store
        .append(&c2, ExpectedVersion::Exact(1), added(10), None)
        .await
        .unwrap();

    // Reading gives the rows as stored; decoding names stream, version and type.
    let row = &store.read_stream(&c1, 3, 1).await.unwrap()[0];
    let err = row.decode::<CounterEvent>().unwrap_err();
    assert!(
        matches!(&err, Error::Decode { stream, version: 3, event_type, .. } if *stream == c1 && event_type == "Added"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "cannot decode event Added (schema v1) at counter-c1 version 3"
    );
    let err = CommandHandler::<Counter>::new(store.clone())
        .load("c2")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Decode { version: 1, event_type, .. } if event_type == "Exploded"),
        "{err:?}"
    );
    let err = CommandHandler::<Counter>::new(store.clone())
        .execute("c1", &5)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CommandError::Store(Error::Decode { version: 3, .. })),
        "a command on the broken stream fails clearly"
    );

    // The runner parks the two broken events; the later events of their streams wait behind
    // them (held), and are applied in order once the broken ones are skipped.
    let config = RunnerConfig {
        max_attempts: 2,
        backoff: Duration::from_millis(1),
        dead_letter_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with_config(config)
        .with(db.transactional(Totals::default()))
        .start();
    let head = store.head_position().await.unwrap();
    let held = runner
        .wait_for("totals", head, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(matches!(held, Error::Parked { .. }), "{held:?}");

    let letters = db.dead_letters().list(Some("totals")).await.unwrap();
    let seen: Vec<_> = letters
        .iter()
        .map(|l| (l.event.stream.id.as_str(), l.event.stream_version, l.status))
        .collect();
    assert_eq!(
        seen,
        [
            ("c1", 3, DeadLetterStatus::Parked),
            ("c2", 1, DeadLetterStatus::Parked),
            ("c1", 4, DeadLetterStatus::Held),
            ("c2", 2, DeadLetterStatus::Held),
        ],
        "both broken events are parked, their streams' later events held"
    );
    assert_eq!(
        (
            letters[0].event.stream.id.as_str(),
            letters[0].event.stream_version
        ),
        ("c1", 3)
    );
    assert!(
        letters[0]
            .error
            .contains("cannot decode event Added (schema v1) at counter-c1 version 3"),
        "{}",
        letters[0].error
    );
    assert!(
        letters[0].error.contains("invalid type"),
        "the serde cause is kept: {}",
        letters[0].error
    );
    assert!(
        letters[1]
            .error
            .contains("cannot decode event Exploded (schema v1) at counter-c2 version 1"),
        "{}",
        letters[1].error
    );
    assert_eq!(
        letters[1].event.payload_value().unwrap(),
        json!({}),
        "the parked event is kept whole"
    );
    assert_eq!(totals(&db).await, vec![("c1".into(), 3, 2)]);

    // Skipped by an operator, the broken events release the held ones.
    for letter in &letters[..2] {
        db.dead_letters().remove(letter.id).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !db
        .dead_letters()
        .list(Some("totals"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "held events not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.shutdown().await;
    assert_eq!(
        totals(&db).await,
        vec![("c1".into(), 7, 3), ("c2".into(), 10, 1)],
        "the good events are all counted"
    );
    assert_eq!(
        db.checkpoints().load("totals").await.unwrap(),
        Cursor::new(0, head)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_that_is_not_json_cannot_be_stored() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    let err = insert_raw(&db, "c1", 1, "Added", "{not json", "{}")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    let err = insert_raw(&db, "c1", 1, "Added", "{}", "[1, 2]")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("CHECK constraint failed"),
        "metadata must be an object: {err}"
    );
    let err = insert_raw(&db, "c1", 0, "Added", "{}", "{}")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("CHECK constraint failed"),
        "versions start at 1: {err}"
    );
    assert_eq!(db.events().head_position().await.unwrap(), 0);
}

/// Metadata, ids and times are written by the store alone; a row where they do not parse is
/// reported as corrupt, naming stream and version, and subscribers stop before it rather than
/// skip it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_envelope_is_corrupt_and_stops_subscribers_loudly() {
    let (_dir, db) = file_db().await;
    let store = Arc::new(db.events());
    let c9 = StreamId::new("counter", "c9");
    store
        .append(&c9, ExpectedVersion::NoStream, added(1), None)
        .await
        .unwrap();
    insert_raw(
        &db,
        "c9",
        2,
        "Added",
        r#"{"n": 2}"#,
        r#"{"correlation_id": 5}"#,
    )
    .await
    .unwrap();
    store
        .append(&c9, ExpectedVersion::Exact(2), added(3), None)
        .await
        .unwrap();

    let err = store.read_stream(&c9, 1, 10).await.unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { stream, version: 2, .. } if *stream == c9),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("corrupt stored event at counter-c9 version 2: metadata"),
        "{err}"
    );
    let before = store.read_all(Cursor::START, 10).await.unwrap();
    assert_eq!(
        before.len(),
        1,
        "a batch of the all-stream ends before the corrupt row"
    );
    let err = store.read_all(before[0].cursor, 10).await.unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { version: 2, .. }),
        "the next batch reports it: {err:?}"
    );

    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with_config(RunnerConfig {
            poll_interval: Duration::from_millis(20),
            ..Default::default()
        })
        .with(db.transactional(Totals::default()))
        .start();
    let status = async {
        loop {
            let s = runner.status().await.unwrap().remove(0);
            if s.last_error.is_some() {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let status = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("the runner reports the broken row");
    assert!(
        status
            .last_error
            .unwrap()
            .contains("corrupt stored event at counter-c9 version 2")
    );
    assert_eq!(
        status.position, 1,
        "the subscriber stops before the broken row, skipping nothing"
    );
    runner.shutdown().await;
    assert_eq!(totals(&db).await, vec![("c9".into(), 1, 1)]);
}
