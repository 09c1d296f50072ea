//! Many concurrent writers: the only error a writer may see is the typed conflict, and no
//! event is lost or written twice.

mod support;

use std::collections::HashSet;
use std::sync::Arc;

use cqrs_core::{
    AllStreamReader, CommandError, CommandHandler, Cursor, EventAppender, EventStore,
    ExpectedVersion, NewEvent, RetryPolicy, StreamId, StreamReaderExt,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase};
use serde_json::json;
use std::time::Duration;
use support::{Counter, file_db};
use uuid::Uuid;

const WRITERS: usize = 8;
const APPENDS: usize = 40;

/// Appends one event at the stream's exact next version, retrying on conflicts. Returns the
/// event id and how many conflicts it took.
async fn append_next(
    store: &dyn EventStore,
    stream: &StreamId,
    writer: usize,
    i: usize,
) -> (Uuid, u32) {
    let mut conflicts = 0;
    loop {
        let version = store
            .stream_version(stream)
            .await
            .unwrap_or_else(|e| panic!("stream_version failed: {e:?}"));
        let event = NewEvent::new("Added", json!({ "writer": writer, "i": i }));
        let id = event.event_id;
        match store
            .append(stream, ExpectedVersion::Exact(version), vec![event], None)
            .await
        {
            Ok(res) => {
                assert_eq!(
                    res.version,
                    version + 1,
                    "an append at version {version} lands right after it"
                );
                return (id, conflicts);
            }
            Err(e) if e.is_conflict() => conflicts += 1,
            Err(e) => panic!("a writer got an error other than the typed conflict: {e:?}"),
        }
    }
}

/// Runs `WRITERS` writers, spread over `stores` (several handles on one file stand for several
/// processes), each appending `APPENDS` events to its own stream or to one shared stream; then
/// checks that every acknowledged event is stored once, in gap-free versions and positions.
async fn writers(stores: Vec<Arc<dyn EventStore>>, shared: bool) -> u32 {
    let run = Uuid::new_v4().to_string();
    let stream_of = |w: usize| {
        StreamId::new(
            "race",
            if shared {
                format!("{run}-shared")
            } else {
                format!("{run}-{w}")
            },
        )
    };
    let start = stores[0].head_position().await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = stores[w % stores.len()].clone();
        let stream = stream_of(w);
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut conflicts = 0;
            for i in 0..APPENDS {
                let (id, c) = append_next(&*store, &stream, w, i).await;
                acked.push(id);
                conflicts += c;
            }
            (acked, conflicts)
        }));
    }
    let mut acked = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        let (ids, c) = t.await.expect("writer task");
        acked.extend(ids);
        conflicts += c;
    }
    let acked_set: HashSet<Uuid> = acked.iter().copied().collect();
    assert_eq!(acked_set.len(), WRITERS * APPENDS);

    let store = &*stores[0];
    let streams: HashSet<StreamId> = (0..WRITERS).map(stream_of).collect();
    let mut stored = HashSet::new();
    for s in &streams {
        let events = store.read_stream(s, 1, 100_000).await.unwrap();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.stream_version,
                i as u64 + 1,
                "versions of {s} have no gaps"
            );
            assert!(
                stored.insert(e.event_id),
                "event {} stored twice",
                e.event_id
            );
        }
        assert_eq!(store.stream_version(s).await.unwrap(), events.len() as u64);
    }
    assert_eq!(
        stored, acked_set,
        "exactly the acknowledged events are stored"
    );

    let all = store
        .read_all(Cursor::new(0, start), 100_000)
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        WRITERS * APPENDS,
        "nobody else writes to this database"
    );
    for (i, e) in all.iter().enumerate() {
        assert_eq!(
            e.cursor,
            Cursor::new(0, start + i as u64 + 1),
            "the all-stream has no gaps"
        );
    }
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<HashSet<_>>(),
        acked_set
    );
    conflicts
}

fn handles(db: &SqliteDatabase) -> Vec<Arc<dyn EventStore>> {
    vec![Arc::new(db.events())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_eight_streams_of_a_file() {
    let (_dir, db) = file_db().await;
    let conflicts = writers(handles(&db), false).await;
    assert_eq!(conflicts, 0, "writers of separate streams never conflict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_one_stream_of_a_file() {
    let (_dir, db) = file_db().await;
    let conflicts = writers(handles(&db), true).await;
    println!("conflicts on the shared stream: {conflicts}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_in_memory() {
    let db = SqliteDatabase::open("sqlite::memory:").await.unwrap();
    assert_eq!(writers(handles(&db), false).await, 0);
    writers(handles(&db), true).await;
}

/// Two handles on one file stand for two processes: they race for SQLite's file lock, and the
/// loser waits or retries instead of failing with `database is locked`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_race_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    // A short busy timeout makes SQLite give up early, so the store's own retry is exercised.
    let config = SqliteConfig {
        busy_timeout: Duration::from_millis(1),
        ..Default::default()
    };
    let a = SqliteDatabase::open_path(&path, config.clone())
        .await
        .unwrap();
    let b = SqliteDatabase::open_path(&path, config).await.unwrap();
    let stores: Vec<Arc<dyn EventStore>> = vec![Arc::new(a.events()), Arc::new(b.events())];
    writers(stores.clone(), false).await;
    writers(stores, true).await;
}

/// The core's command handler on one hot aggregate: each command either lands or, once its
/// retries are spent, fails with the typed conflict; the state counts exactly the ones that
/// landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_handlers_on_one_aggregate() {
    let (_dir, db) = file_db().await;
    let store: Arc<dyn EventStore> = Arc::new(db.events());
    let retry = RetryPolicy {
        max_attempts: 50,
        backoff: Duration::from_micros(200),
        ..RetryPolicy::default()
    };
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let handler = CommandHandler::<Counter>::new(store.clone()).with_retry(retry);
        tasks.push(tokio::spawn(async move {
            let (mut landed, mut conflicted) = (0u64, 0u64);
            for _ in 0..25 {
                match handler.execute("hot", &(w as u64 + 1)).await {
                    Ok(out) => {
                        assert_eq!(out.appended, 1);
                        landed += w as u64 + 1;
                    }
                    Err(CommandError::Store(e)) if e.is_conflict() => conflicted += 1,
                    Err(e) => panic!(
                        "a command failed with an error other than the typed conflict: {e:?}"
                    ),
                }
            }
            (landed, conflicted)
        }));
    }
    let (mut landed, mut conflicted) = (0, 0);
    for t in tasks {
        let (l, c) = t.await.unwrap();
        landed += l;
        conflicted += c;
    }
    let (state, version) = CommandHandler::<Counter>::new(store.clone())
        .load("hot")
        .await
        .unwrap();
    assert_eq!(
        state.total, landed,
        "the aggregate counts exactly the commands that landed"
    );
    assert_eq!(
        version + conflicted,
        (WRITERS * 25) as u64,
        "every command either landed or got the conflict"
    );
}

/// Writers racing with one command id on one stream: one append lands, every other caller gets
/// its result as a duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_repeats_of_one_command_append_once() {
    let (_dir, db) = file_db().await;
    let store: Arc<dyn EventStore> = Arc::new(db.events());
    for round in 0..5 {
        let stream = StreamId::new("idem", round.to_string());
        let command_id = Uuid::new_v4();
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (store, stream) = (store.clone(), stream.clone());
            tasks.push(tokio::spawn(async move {
                let events = vec![NewEvent::new("Added", json!({ "writer": w }))];
                store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        events,
                        Some(command_id.into()),
                    )
                    .await
                    .unwrap()
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        assert_eq!(
            results.iter().filter(|r| !r.duplicate).count(),
            1,
            "exactly one append lands"
        );
        assert!(
            results
                .iter()
                .all(|r| (r.version, r.position) == (results[0].version, results[0].position))
        );
        assert_eq!(store.stream_version(&stream).await.unwrap(), 1);
    }
}
