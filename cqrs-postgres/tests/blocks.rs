//! Packed blocks: loads keep whole blocks of 500 events of a long stream in `event_blocks`,
//! later loads read them, and hand edits of `events` make the store forget the blocks they
//! touch.

mod support;

use std::time::Duration;

use cqrs_core::{EventStore, ExpectedVersion, LoadedEvent, NewEvent, StreamId};
use cqrs_postgres::PgEventStore;
use cqrs_postgres::sqlx::{self, Connection};
use serde_json::json;

fn stream(id: &str) -> StreamId {
    StreamId::new("tally", id)
}

async fn fill(store: &PgEventStore, id: &str, events: u64) {
    let mut n = 1;
    while n <= events {
        let batch = (n..=events.min(n + 999))
            .map(|i| NewEvent::new("Added", json!({ "n": i, "note": format!("\"{i}\" ü") })))
            .collect();
        store
            .append(&stream(id), ExpectedVersion::Any, batch, None)
            .await
            .unwrap();
        n += 1000;
    }
}

/// What a load reads of versions `from..=to`, once what it packs is packed.
async fn load(store: &PgEventStore, id: &str, from: u64, to: u64) -> Vec<LoadedEvent> {
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        store.read_stream_range_for_load(&stream(id), from, to),
    )
    .await
    .expect("a load never waits for a lock")
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), store.wait_for_packing())
        .await
        .expect("packing never waits for a lock");
    read.events
}

/// What the rows of `events` hold for versions `from..=to`.
async fn rows(store: &PgEventStore, id: &str, from: u64, to: u64) -> Vec<LoadedEvent> {
    let mut events: Vec<LoadedEvent> = store
        .read_stream(&stream(id), from, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(LoadedEvent::from)
        .collect();
    events.retain(|e| e.stream_version <= to);
    events
}

/// The first versions of the packed blocks of `id`.
async fn blocks(store: &PgEventStore, id: &str) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT first_version FROM event_blocks WHERE stream_id = $1 ORDER BY first_version",
    )
    .bind(id)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_pack_whole_blocks_and_later_loads_read_them() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    fill(&store, "t", 2_300).await;
    let want = rows(&store, "t", 1, 2_300).await;
    assert!(blocks(&store, "t").await.is_empty(), "appends pack nothing");

    assert!(load(&store, "t", 1, 2_300).await == want);
    assert_eq!(
        blocks(&store, "t").await,
        [1, 501, 1_001, 1_501],
        "the whole blocks the load read; 2,001..2,300 is not whole yet"
    );
    // A range that only partly covers blocks packs none of them; a short read (the first read
    // of a load) of a whole block packs it.
    fill(&store, "u", 1_200).await;
    assert_eq!(load(&store, "u", 250, 1_100).await.len(), 851);
    assert_eq!(blocks(&store, "u").await, [501]);
    assert_eq!(load(&store, "u", 1, 499).await.len(), 499);
    assert_eq!(blocks(&store, "u").await, [501]);
    assert!(load(&store, "u", 1, 500).await == rows(&store, "u", 1, 500).await);
    assert_eq!(blocks(&store, "u").await, [1, 501]);

    // A block changed behind the store's back (a test only: the triggers forget blocks whose
    // rows change) shows that loads now read the packed rows, and only for whole blocks.
    sqlx::query("UPDATE event_blocks SET types = replace(types, 'Added', 'Packed')")
        .execute(store.pool())
        .await
        .unwrap();
    let packed = |events: &[LoadedEvent]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e.event_type == "Packed")
            .map(|e| e.stream_version)
            .collect()
    };
    assert_eq!(
        packed(&load(&store, "t", 1, 2_300).await),
        (1..=2_000).collect::<Vec<_>>()
    );
    assert_eq!(
        packed(&load(&store, "t", 400, 1_200).await),
        (501..=1_000).collect::<Vec<_>>()
    );
    assert_eq!(
        packed(&load(&store, "t", 501, 1_000).await),
        (501..=1_000).collect::<Vec<_>>(),
        "a short read of a whole block reads it packed"
    );
    assert!(
        packed(&load(&store, "t", 502, 1_001).await).is_empty(),
        "any other short read reads rows"
    );
    sqlx::query("UPDATE event_blocks SET types = replace(types, 'Packed', 'Added')")
        .execute(store.pool())
        .await
        .unwrap();
    // A block that does not split into its versions is read as rows.
    sqlx::query("UPDATE event_blocks SET types = types || E'\\x1e' WHERE first_version = 501")
        .execute(store.pool())
        .await
        .unwrap();
    assert!(load(&store, "t", 501, 1_000).await == rows(&store, "t", 501, 1_000).await);
    assert!(load(&store, "t", 1, 2_300).await == want);

    // A load packs at most ten blocks; the next one packs more.
    fill(&store, "w", 6_000).await;
    let want_w = rows(&store, "w", 1, 6_000).await;
    assert!(load(&store, "w", 1, 6_000).await == want_w);
    assert_eq!(blocks(&store, "w").await.len(), 10);
    assert!(load(&store, "w", 1, 6_000).await == want_w);
    assert_eq!(blocks(&store, "w").await.len(), 12);

    // The stream grows; the next load packs the block it completes and reads the rest.
    fill(&store, "t", 300).await;
    let want = rows(&store, "t", 1, 2_600).await;
    assert_eq!(want.len(), 2_600);
    assert!(load(&store, "t", 1, 2_600).await == want);
    assert_eq!(blocks(&store, "t").await, [1, 501, 1_001, 1_501, 2_001]);
    assert!(load(&store, "t", 1, 2_600).await == want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_of_events_forget_the_blocks_they_touch() {
    let db = support::TestDb::new().await;
    let store = db.store("ledger").await;
    fill(&store, "t", 2_000).await;
    fill(&store, "other", 1_000).await;
    load(&store, "t", 1, 2_000).await;
    load(&store, "other", 1, 1_000).await;
    assert_eq!(blocks(&store, "t").await, [1, 501, 1_001, 1_501]);

    // From a session whose search_path is another schema: the triggers find the blocks in the
    // schema of the edited table.
    let mut conn = db.connect().await;
    sqlx::query("UPDATE ledger.events SET payload = '{\"n\":0,\"note\":\"mended\"}' WHERE stream_id = 't' AND stream_version = 700")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(blocks(&store, "t").await, [1, 1_001, 1_501]);
    sqlx::query(
        "DELETE FROM ledger.events WHERE stream_id = 't' AND stream_version IN (1200, 1800)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(blocks(&store, "t").await, [1]);
    assert_eq!(
        blocks(&store, "other").await,
        [1, 501],
        "other streams keep theirs"
    );

    // Loads read the edited rows and pack again what is whole and regular.
    let want = rows(&store, "t", 1, 2_000).await;
    assert_eq!(want.len(), 1_998);
    assert_eq!(&*want[699].payload, "{\"n\":0,\"note\":\"mended\"}");
    assert!(load(&store, "t", 1, 2_000).await == want);
    assert_eq!(
        blocks(&store, "t").await,
        [1, 501],
        "blocks with a gap are not packed"
    );
    assert!(load(&store, "t", 1, 2_000).await == want);

    // An edit that moves an event to another version forgets the blocks at both.
    sqlx::query("UPDATE ledger.events SET stream_version = 1800 WHERE stream_id = 't' AND stream_version = 600")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(blocks(&store, "t").await, [1]);
    sqlx::query("TRUNCATE ledger.events")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    assert!(blocks(&store, "t").await.is_empty());
    assert!(blocks(&store, "other").await.is_empty());
    assert!(load(&store, "t", 1, 2_000).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irregular_blocks_are_not_packed_nor_any_when_packing_is_off() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    fill(&store, "t", 2_000).await;
    store.set_pack_blocks(false);
    let want = rows(&store, "t", 1, 2_000).await;
    assert!(load(&store, "t", 1, 2_000).await == want);
    assert!(blocks(&store, "t").await.is_empty(), "packing is off");

    store.set_pack_blocks(true);
    sqlx::query("UPDATE events SET schema_version = 2 WHERE stream_version = 600")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("UPDATE events SET event_type = E'Odd\\x1eType' WHERE stream_version = 1600")
        .execute(store.pool())
        .await
        .unwrap();
    let want = rows(&store, "t", 1, 2_000).await;
    assert!(load(&store, "t", 1, 2_000).await == want);
    assert_eq!(
        blocks(&store, "t").await,
        [1, 1_001],
        "not a block with two schema versions, nor one with a type holding the separator"
    );
    assert!(load(&store, "t", 1, 2_000).await == want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packing_and_a_hand_edit_in_flight_never_miss_each_other() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    fill(&store, "t", 1_500).await;

    // An edit in flight: the load neither waits for it nor packs the block it touches.
    let mut editor = db.connect().await;
    sqlx::query("BEGIN").execute(&mut editor).await.unwrap();
    sqlx::query("UPDATE events SET payload = '{\"n\":-1}' WHERE stream_version = 900")
        .execute(&mut editor)
        .await
        .unwrap();
    let before = rows(&store, "t", 1, 1_500).await;
    assert!(load(&store, "t", 1, 1_500).await == before);
    assert_eq!(blocks(&store, "t").await, [1, 1_001]);
    sqlx::query("COMMIT").execute(&mut editor).await.unwrap();
    let after = rows(&store, "t", 1, 1_500).await;
    assert_eq!(&*after[899].payload, "{\"n\":-1}");
    assert!(load(&store, "t", 1, 1_500).await == after);
    assert_eq!(blocks(&store, "t").await, [1, 501, 1_001]);

    // A packing in flight (its row locks held in an open transaction, as while its statement
    // runs): the edit waits for it, then forgets the block.
    sqlx::query("DELETE FROM event_blocks WHERE first_version = 501")
        .execute(store.pool())
        .await
        .unwrap();
    let mut packer = db.connect().await;
    sqlx::query("BEGIN").execute(&mut packer).await.unwrap();
    sqlx::query(
        "INSERT INTO event_blocks (stream_category, stream_id, first_version, last_version, schema_version, types, payloads) \
         SELECT 'tally', 't', 501, 1000, 1, string_agg(event_type, E'\\x1e' ORDER BY stream_version), \
                string_agg(payload::text, E'\\x1e' ORDER BY stream_version) \
         FROM (SELECT * FROM events WHERE stream_version BETWEEN 501 AND 1000 FOR SHARE) AS e",
    )
    .execute(&mut packer)
    .await
    .unwrap();
    let edit = tokio::spawn({
        let pool = store.pool().clone();
        async move {
            sqlx::query("UPDATE events SET payload = '{\"n\":-2}' WHERE stream_version = 901")
                .execute(&pool)
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !edit.is_finished(),
        "the edit waits for the packing's locks"
    );
    sqlx::query("COMMIT").execute(&mut packer).await.unwrap();
    edit.await.unwrap();
    assert_eq!(
        blocks(&store, "t").await,
        [1, 1_001],
        "the edit forgot the block"
    );
    let after = rows(&store, "t", 1, 1_500).await;
    assert_eq!(&*after[900].payload, "{\"n\":-2}");
    assert!(load(&store, "t", 1, 1_500).await == after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_never_wait_for_packing() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    fill(&store, "t", 1_000).await;
    // Another session packing the first block, not committed yet: a packing of the same block
    // waits for it to end (the key is taken or not).
    let mut other = db.connect().await;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query(
        "INSERT INTO event_blocks (stream_category, stream_id, first_version, last_version, schema_version, types, payloads) \
         VALUES ('tally', 't', 1, 500, 1, '', '')",
    )
    .execute(&mut other)
    .await
    .unwrap();
    let want = rows(&store, "t", 1, 1_000).await;
    for _ in 0..3 {
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            store.read_stream_range_for_load(&stream("t"), 1, 1_000),
        )
        .await
        .expect("the load does not wait for the packing it started");
        assert!(read.unwrap().events == want);
    }
    let waiting = tokio::time::timeout(Duration::from_millis(300), store.wait_for_packing()).await;
    assert!(waiting.is_err(), "the packing waits for the other session");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    store.wait_for_packing().await;
    assert_eq!(blocks(&store, "t").await, [1, 501]);
    assert!(load(&store, "t", 1, 1_000).await == want);
}
