//! Loading long streams: the handler reads ranges in parallel, the store hands each event over
//! as its row arrives; the result is the same as a fold over the stream read in order, also
//! when rows are missing.

mod support;

use std::sync::Arc;

use cqrs_core::{
    Aggregate, CommandHandler, DomainEvent, EventStore, ExpectedVersion, NewEvent, StreamEvent,
    StreamId, StreamItem, StreamReaderExt,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum TallyEvent {
    Added { n: u64, note: String },
}
impl DomainEvent for TallyEvent {}

/// Folds every event it sees: the sum, the count and a checksum of the order they came in.
#[derive(Debug, Clone, Default, PartialEq)]
struct Tally {
    sum: u64,
    count: u64,
    order: u64,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = u64;
    type Event = TallyEvent;
    type Error = std::convert::Infallible;

    fn handle(&self, n: &u64) -> Result<Vec<TallyEvent>, Self::Error> {
        Ok(vec![TallyEvent::Added {
            n: *n,
            note: "x".into(),
        }])
    }

    fn apply(&mut self, TallyEvent::Added { n, .. }: &TallyEvent) {
        self.sum += n;
        self.count += 1;
        self.order = self.order.wrapping_mul(31).wrapping_add(*n);
    }
}

async fn fill(store: &dyn EventStore, id: &str, events: u64) {
    let stream = StreamId::new(Tally::TYPE, id);
    let mut n = 1;
    while n <= events {
        let batch = (n..=events.min(n + 999))
            .map(|i| {
                NewEvent::from_domain(
                    &TallyEvent::Added {
                        n: i,
                        note: format!("note \"{i}\" ünïcode"),
                    },
                    Default::default(),
                )
                .unwrap()
            })
            .collect();
        store
            .append(&stream, ExpectedVersion::Any, batch, None)
            .await
            .unwrap();
        n += 1000;
    }
}

/// The state a fold over `read_stream` gives, and the last version.
async fn folded(store: &dyn EventStore, id: &str) -> (Tally, u64) {
    let stream = StreamId::new(Tally::TYPE, id);
    let mut state = Tally::default();
    let mut version = 0;
    for e in store.read_stream(&stream, 1, 1_000_000).await.unwrap() {
        state.apply(&e.decode::<TallyEvent>().unwrap().payload);
        version = e.stream_version;
    }
    (state, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_load_as_a_fold_over_the_stream_even_with_rows_missing() {
    let db = support::TestDb::new().await;
    let store = Arc::new(db.store("public").await);
    fill(store.as_ref(), "long", 7_321).await;
    fill(store.as_ref(), "gappy", 4_000).await;
    // Rows removed behind the store's back (a repair, a hand-made deletion): the ranges below
    // the head come back short, and the load must still apply every event there is, in order.
    sqlx::query(
        "DELETE FROM events WHERE stream_id = 'gappy' AND (stream_version BETWEEN 600 AND 640 \
         OR stream_version = 2500 OR stream_version BETWEEN 3000 AND 3700)",
    )
    .execute(store.pool())
    .await
    .unwrap();

    // An event type holding a control character (0x1E, once the separator of packed blocks).
    sqlx::query("UPDATE events SET event_type = E'Odd\\x1eType' WHERE stream_id = 'long' AND stream_version = 4321")
        .execute(store.pool())
        .await
        .unwrap();
    // Mixed schema versions within chunks (as after a partial migration).
    sqlx::query("UPDATE events SET schema_version = 2 WHERE stream_version % 97 = 0")
        .execute(store.pool())
        .await
        .unwrap();
    for id in ["long", "gappy"] {
        let stream = StreamId::new(Tally::TYPE, id);
        let full = store.read_stream(&stream, 1, 1_000_000).await.unwrap();
        for (from, to) in [(1, 10_000), (2, 3001), (590, 3050), (3001, 3701)] {
            let want: Vec<_> = full
                .iter()
                .filter(|e| e.stream_version >= from && e.stream_version <= to)
                .cloned()
                .collect();
            let (versions, events) = range(&store, &stream, from, to).await;
            let got = events
                .into_iter()
                .map(|e| e.into_recorded(&stream).unwrap())
                .collect::<Vec<_>>();
            assert!(got == want, "{id} {from}..={to}");
            assert_eq!(versions, [full.last().unwrap().stream_version]);
        }
    }
    sqlx::query("UPDATE events SET event_type = 'Added' WHERE stream_version = 4321")
        .execute(store.pool())
        .await
        .unwrap();
    for id in ["long", "gappy"] {
        let want = folded(store.as_ref(), id).await;
        for parallel in [1, 2, 4] {
            let handler =
                CommandHandler::<Tally>::new(store.clone()).with_load_parallelism(parallel);
            assert_eq!(
                handler.load(id).await.unwrap(),
                want,
                "{id}, parallelism {parallel}"
            );
        }
    }
    let (long, _) = folded(store.as_ref(), "long").await;
    assert_eq!((long.count, long.sum), (7_321, 7_321 * 7_322 / 2));
    let (gappy, version) = folded(store.as_ref(), "gappy").await;
    assert_eq!((gappy.count, version), (4_000 - 41 - 1 - 701, 4_000));
}

/// What one stream read of `from..=to` hands over: the versions it told, and the events.
async fn range(
    store: &dyn EventStore,
    stream: &StreamId,
    from: u64,
    to: u64,
) -> (Vec<u64>, Vec<StreamEvent>) {
    let (mut versions, mut events) = (Vec::new(), Vec::new());
    let head = store
        .read_stream_into(stream, from..=to, &mut |item| {
            match item {
                StreamItem::Version(v) => versions.push(v),
                StreamItem::Event(e) => {
                    assert!(!versions.is_empty(), "the version comes first");
                    events.push(e);
                }
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(versions.last(), Some(&head));
    (versions, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_tells_the_version_first_then_hands_over_its_events_in_order() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    fill(&store, "pieces", 1_300).await;
    let stream = StreamId::new(Tally::TYPE, "pieces");
    #[allow(clippy::reversed_empty_ranges)]
    for (from, to, n) in [
        (1, 500, 500),
        (1, 1_200, 1_200),
        (801, 5_000, 500),
        (1_301, 2_000, 0),
        (7, 6, 0),
    ] {
        let (versions, events) = range(&store, &stream, from, to).await;
        assert_eq!(versions, [1_300], "{from}..={to}: the version, once");
        assert_eq!(
            events.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
            (from..from + n).collect::<Vec<_>>(),
            "{from}..={to}: the events in order"
        );
    }
    let (versions, events) = range(&store, &StreamId::new(Tally::TYPE, "none"), 1, 500).await;
    assert_eq!((versions, events.len()), (vec![0], 0), "no stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_cancelled_at_any_point_leave_the_store_and_its_pool_working() {
    let db = support::TestDb::new().await;
    let store = Arc::new(db.store("public").await);
    fill(store.as_ref(), "long", 6_000).await;
    let want = folded(store.as_ref(), "long").await;
    let handler = CommandHandler::<Tally>::new(store.clone());
    let mut finished = 0;
    for i in 0..60u64 {
        // Dropped after 0 to 12 ms: before, during and after the first read and the range reads.
        let limit = std::time::Duration::from_micros(200 * i);
        if let Ok(loaded) = tokio::time::timeout(limit, handler.load("long")).await {
            assert_eq!(loaded.unwrap(), want);
            finished += 1;
        }
    }
    assert!(finished < 60, "some loads were cut short");
    for _ in 0..5 {
        assert_eq!(handler.load("long").await.unwrap(), want);
    }
    handler.execute("long", &1).await.unwrap();
    assert_eq!(handler.load("long").await.unwrap().1, 6_001);
    let pool = store.pool();
    assert!(pool.size() <= pool.options().get_max_connections());
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrations_leave_no_packed_blocks_nor_their_triggers() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let table: Option<String> = sqlx::query_scalar("SELECT to_regclass('event_blocks')::text")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(table, None, "event_blocks is dropped");
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events'::regclass AND NOT tgisinternal",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(triggers, 0, "no trigger left on events");
    let functions: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_proc WHERE proname = 'event_blocks_forget'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(functions, 0, "the trigger function is dropped");
}
