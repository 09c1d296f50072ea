//! Guarantee 2, deterministically: a transaction that inserted events and stays open holds
//! every later commit back from subscribers until it ends; then each event comes once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{
    AllStreamReader, Cursor, EventAppender, EventStore, ExpectedVersion, RecordedEvent, StreamId,
};
use cqrs_postgres::sqlx;
use uuid::Uuid;

async fn read_to_end(store: &dyn EventStore, cursor: &mut Cursor) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    loop {
        let batch = store.read_all(*cursor, 3).await.unwrap();
        let Some(last) = batch.last() else { return out };
        assert!(last.cursor > *cursor);
        *cursor = last.cursor;
        out.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscriber_never_passes_an_open_transaction() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let stream = |n: &str| StreamId::new("gap", n);

    let first = sample_event(0);
    store
        .append(
            &stream("first"),
            ExpectedVersion::NoStream,
            vec![first.clone()],
            None,
        )
        .await
        .unwrap();
    let mut cursor = Cursor::START;
    let seen = read_to_end(&store, &mut cursor).await;
    assert_eq!(
        seen.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![first.event_id]
    );

    // The open transaction writes first: lower transaction id, lower positions.
    let mut open = store.pool().begin().await.unwrap();
    let open_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *open)
        .await
        .unwrap();
    let mut open_ids = Vec::new();
    let early = vec![sample_event(1), sample_event(2)];
    open_ids.extend(early.iter().map(|e| e.event_id));
    store
        .append_in(
            &mut open,
            &stream("open"),
            ExpectedVersion::NoStream,
            early,
            None,
        )
        .await
        .unwrap();

    // Others commit after it, with higher positions.
    let mut later_ids = Vec::new();
    let mut last_later = 0;
    for i in 0..5u64 {
        let events = vec![sample_event(10 + i), sample_event(20 + i)];
        later_ids.extend(events.iter().map(|e| e.event_id));
        last_later = store
            .append(
                &stream(&format!("later-{i}")),
                ExpectedVersion::NoStream,
                events,
                None,
            )
            .await
            .unwrap()
            .position;
    }
    // And the open transaction writes again, now with the highest position.
    let late = sample_event(3);
    open_ids.push(late.event_id);
    store
        .append_in(
            &mut open,
            &stream("open"),
            ExpectedVersion::Exact(2),
            vec![late],
            None,
        )
        .await
        .unwrap();

    for _ in 0..3 {
        assert!(
            read_to_end(&store, &mut cursor).await.is_empty(),
            "nothing past the open transaction is readable"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        store.cursor_of(last_later).await.unwrap(),
        None,
        "a held-back event has no cursor yet"
    );

    let diag = store.diagnostics().await.unwrap();
    assert_eq!(
        diag.held_back, 10,
        "the ten committed events wait: {diag:#?}"
    );
    let blocker = diag
        .blocker()
        .expect("the diagnostics name the blocking transaction");
    assert_eq!(blocker.pid, Some(open_pid), "{diag:#?}");
    assert!(blocker.since.is_some_and(|t| t <= chrono::Utc::now()));

    // A reader that trusted positions would now stand at `last_later` and skip the open
    // transaction's first two events forever.
    let naive: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE position > $1")
        .bind(last_later as i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        naive, 0,
        "before the commit nothing lies past the later events"
    );

    open.commit().await.unwrap();
    let naive: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE position > $1")
        .bind(last_later as i64)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        naive, 1,
        "a position-based reader would have missed two of the three"
    );

    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 13 && tokio::time::Instant::now() < deadline {
        got.extend(read_to_end(&store, &mut cursor).await);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ids: Vec<Uuid> = got.iter().map(|e| e.event_id).collect();
    let expected: Vec<Uuid> = open_ids.iter().chain(&later_ids).copied().collect();
    assert_eq!(
        ids, expected,
        "after the commit every event comes once, the open transaction's first"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 13);
    assert!(
        read_to_end(&store, &mut cursor).await.is_empty(),
        "and nothing comes twice"
    );
    assert!(store.cursor_of(last_later).await.unwrap().is_some());
    let diag = store.diagnostics().await.unwrap();
    assert_eq!(diag.held_back, 0);
    assert!(diag.blocker().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_in_another_database_holds_nothing_back() {
    let (db, other) = (support::TestDb::new().await, support::TestDb::new().await);
    let store = db.store("public").await;
    let mut conn = other.connect().await;
    let mut open = sqlx::Connection::begin(&mut conn).await.unwrap();
    let other_xid: i64 = sqlx::query_scalar("SELECT pg_current_xact_id()::text::int8")
        .fetch_one(&mut *open)
        .await
        .unwrap();

    let out = store
        .append(
            &StreamId::new("db", "1"),
            ExpectedVersion::NoStream,
            vec![sample_event(1)],
            None,
        )
        .await
        .unwrap();
    let xmin: i64 =
        sqlx::query_scalar("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        xmin <= other_xid,
        "the cluster-wide snapshot xmin is held by the other database's transaction"
    );

    let started = std::time::Instant::now();
    let events = store.read_all(Cursor::START, 10).await.unwrap();
    assert_eq!(
        events.len(),
        1,
        "the event is readable although the other database's transaction is open"
    );
    assert!(
        events[0].cursor.tx as i64 > xmin,
        "a reader below the plain snapshot xmin would have waited"
    );
    assert!(
        started.elapsed() < Duration::from_millis(150),
        "and it was not held back"
    );
    assert_eq!(
        store.cursor_of(out.position).await.unwrap(),
        Some(events[0].cursor)
    );
    let diag = store.diagnostics().await.unwrap();
    assert_eq!(diag.held_back, 0);
    assert!(diag.blocker().is_none());
    open.rollback().await.unwrap();
}
