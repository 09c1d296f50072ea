//! Group append (`PgConfig::group_appends`): the conformance suite with grouping on; a group
//! whose members fail their own checks without taking their neighbours down; racing writers
//! with a tailing reader (nothing lost, nothing doubled, the all-stream gap-safe); a group whose
//! connection is terminated mid-statement.
//!
//! A group is forced deterministically by holding every slot: lone appends blocked on rows an
//! open transaction inserted (same stream and version) keep the slots taken while the members
//! queue (`PgDatabase::queued_appends`); committing that transaction lets them go, and the
//! queued appends leave as one group.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::testkit::conformance::{self, sample_event};
use cqrs_core::{
    AllStreamReader, AppendResult, CommandId, Cursor, Error, EventAppender, ExpectedVersion,
    Fingerprint, Result, StreamId, StreamReaderExt,
};
use cqrs_postgres::sqlx::{self, Connection, PgConnection, Postgres, Transaction};
use cqrs_postgres::{PgConfig, PgEventStore};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The slots a store runs appends in at once (the group appender's `IN_FLIGHT`).
const SLOTS: usize = 1;

async fn grouped(db: &support::TestDb, schema: &str) -> PgEventStore {
    PgEventStore::connect_with(
        db.options.clone(),
        PgConfig::with_schema(schema)
            .max_connections(16)
            .group_appends(true),
    )
    .await
    .expect("connect store")
}

/// Waits (up to 20 s) for `what` to hold.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !check().await {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sessions of this database waiting on a lock.
async fn lock_waiters(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND wait_event_type = 'Lock'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}

/// Takes every slot of `store`: an open transaction holds version 1 of `SLOTS` streams, and
/// a lone append to each waits on it. Commit the transaction to free the slots.
async fn hold_slots(
    store: &PgEventStore,
    watcher: &mut PgConnection,
) -> (
    Transaction<'static, Postgres>,
    Vec<JoinHandle<Result<AppendResult>>>,
) {
    let mut tx = store.pool().begin().await.unwrap();
    let mut lone = Vec::new();
    for i in 0..SLOTS {
        let stream = StreamId::new("slot", format!("{i}"));
        store
            .append_in(
                &mut tx,
                &stream,
                ExpectedVersion::NoStream,
                vec![sample_event(0)],
                None,
            )
            .await
            .unwrap();
        let store = store.clone();
        lone.push(tokio::spawn(async move {
            store
                .append(&stream, ExpectedVersion::Any, vec![sample_event(1)], None)
                .await
        }));
    }
    let t = Instant::now();
    while lock_waiters(watcher).await < SLOTS as i64 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the lone appends never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (tx, lone)
}

fn spawn_append(
    store: &PgEventStore,
    stream: StreamId,
    expected: ExpectedVersion,
    command: Option<CommandId>,
) -> JoinHandle<Result<AppendResult>> {
    let store = store.clone();
    tokio::spawn(async move {
        store
            .append(&stream, expected, vec![sample_event(7)], command)
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_store_passes_the_conformance_suite_with_grouping_on() {
    let db = support::TestDb::new().await;
    let store = grouped(&db, "public").await;
    conformance::event_store(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_one_group_a_conflict_and_a_reused_command_id_fail_alone() {
    let db = support::TestDb::new().await;
    let store = grouped(&db, "public").await;
    let mut watcher = db.connect().await;
    let (conflicting, reused) = (StreamId::new("g", "conflict"), StreamId::new("g", "reused"));
    store
        .append(
            &conflicting,
            ExpectedVersion::NoStream,
            vec![sample_event(0)],
            None,
        )
        .await
        .unwrap();
    let command = Uuid::new_v4();
    let first = CommandId::with_fingerprint(command, Fingerprint::of(&"first").unwrap());
    let recorded = store
        .append(
            &reused,
            ExpectedVersion::NoStream,
            vec![sample_event(0)],
            Some(first),
        )
        .await
        .unwrap();

    let (tx, lone) = hold_slots(&store, &mut watcher).await;
    let conflict = spawn_append(&store, conflicting.clone(), ExpectedVersion::Exact(5), None);
    let other = CommandId::with_fingerprint(command, Fingerprint::of(&"other").unwrap());
    let reuse = spawn_append(&store, reused.clone(), ExpectedVersion::Any, Some(other));
    let six: Vec<_> = (0..6)
        .map(|i| {
            let stream = StreamId::new("g", format!("ok{i}"));
            let command = Some(CommandId::new(Uuid::new_v4()));
            spawn_append(&store, stream, ExpectedVersion::NoStream, command)
        })
        .collect();
    until("eight appends queue", || async {
        store.queued_appends() == 8
    })
    .await;
    tx.commit().await.unwrap();
    for l in lone {
        l.await
            .unwrap()
            .expect("the lone appends go on after the commit");
    }

    match conflict.await.unwrap() {
        Err(Error::Conflict { actual, .. }) => assert_eq!(actual, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    match reuse.await.unwrap() {
        Err(Error::CommandIdReused { .. }) => {}
        other => panic!("expected a reused command id, got {other:?}"),
    }
    let mut positions = Vec::new();
    for s in six {
        let r = s.await.unwrap().expect("the neighbours are written");
        assert_eq!((r.version, r.duplicate), (1, false));
        positions.push(r.position);
    }
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), 6, "each its own position");
    let (rows, txs): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT tx_id) FROM events WHERE stream_id LIKE 'ok%'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        (rows, txs),
        (6, 1),
        "the six were written by one transaction"
    );
    assert_eq!(store.stream_version(&conflicting).await.unwrap(), 1);
    assert_eq!(store.stream_version(&reused).await.unwrap(), 1);
    assert_eq!(
        store.command_result(&reused, first).await.unwrap(),
        Some(AppendResult {
            duplicate: true,
            ..recorded
        }),
        "the recorded command is untouched"
    );
    let _ = watcher.close().await;
}

/// A small xorshift, for delays that differ per writer and per append.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

const WRITERS: usize = 8;
const STREAMS_PER_WRITER: usize = 10;
const EVENTS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_lose_nothing_double_nothing_and_stay_gap_safe() {
    let db = support::TestDb::new().await;
    let store = grouped(&db, "public").await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // A reader tailing the all-stream while the writers run: it never reads a cursor twice,
    // so an event committed behind its cursor would be missing from what it saw.
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        tokio::spawn(async move {
            let mut cursor = Cursor::START;
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                let batch = store.read_all(cursor, 500).await.unwrap();
                for e in &batch {
                    assert!(e.cursor > cursor, "the all-stream goes forward");
                    cursor = e.cursor;
                    seen.push(e.event_id);
                }
                if batch.is_empty() {
                    if finished {
                        return seen;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        })
    };

    let per_writer = EVENTS / WRITERS;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64 ^ ((w as u64 + 1) * 0x2545_F491);
            let mut versions = [0_u64; STREAMS_PER_WRITER];
            let mut written = Vec::with_capacity(per_writer);
            for n in 0..per_writer {
                let s = n % STREAMS_PER_WRITER;
                let stream = StreamId::new("race", format!("{w}-{s}"));
                let event = sample_event(n as u64);
                let id = event.event_id;
                // Half with a command id, half without; every one with its exact version.
                let command = (n % 2 == 0).then(|| CommandId::new(Uuid::new_v4()));
                let expected = match versions[s] {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v),
                };
                let r = store
                    .append(&stream, expected, vec![event], command)
                    .await
                    .expect("an append on a writer's own stream succeeds");
                versions[s] += 1;
                assert_eq!(r.version, versions[s]);
                written.push(id);
                match next(&mut seed) % 10 {
                    0 => tokio::time::sleep(Duration::from_millis(1)).await,
                    1..=3 => tokio::task::yield_now().await,
                    _ => {}
                }
            }
            written
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        for id in w.await.unwrap() {
            assert!(written.insert(id));
        }
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.await.unwrap();
    let distinct: HashSet<_> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), seen.len(), "no event read twice");
    assert_eq!(distinct, written, "the reader saw every event, none late");
    let (rows, ids): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((rows, ids), (EVENTS as i64, EVENTS as i64));
    let groups: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT tx_id FROM events GROUP BY tx_id HAVING COUNT(*) > 1) g",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(groups > 0, "some appends were grouped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_whose_connection_is_terminated_is_all_or_nothing() {
    let db = support::TestDb::new().await;
    let store = grouped(&db, "public").await;
    let mut watcher = db.connect().await;
    let (tx, lone) = hold_slots(&store, &mut watcher).await;

    // A second open transaction holds version 1 of `k0`: the group will wait on it.
    let mut hold = store.pool().begin().await.unwrap();
    let holder: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *hold)
        .await
        .unwrap();
    store
        .append_in(
            &mut hold,
            &StreamId::new("k", "k0"),
            ExpectedVersion::NoStream,
            vec![sample_event(0)],
            None,
        )
        .await
        .unwrap();
    let members: Vec<_> = (0..8)
        .map(|i| {
            let stream = StreamId::new("k", format!("k{i}"));
            let event = sample_event(i);
            let id = event.event_id;
            let store = store.clone();
            let command = Some(CommandId::new(Uuid::new_v4()));
            let task = tokio::spawn(async move {
                store
                    .append(&stream, ExpectedVersion::NoStream, vec![event], command)
                    .await
            });
            (id, task)
        })
        .collect();
    until("eight appends queue", || async {
        store.queued_appends() == 8
    })
    .await;
    tx.commit().await.unwrap();
    for l in lone {
        l.await.unwrap().unwrap();
    }
    let t = Instant::now();
    let group_pid = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
        )
        .bind(holder)
        .fetch_optional(&mut watcher)
        .await
        .unwrap();
        if let Some(pid) = pid {
            break pid;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the group never waited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(group_pid)
        .fetch_one(&mut watcher)
        .await
        .unwrap();
    assert!(killed);
    hold.rollback().await.unwrap();

    let mut failed = 0;
    for (id, task) in members {
        let res = task.await.unwrap();
        let present: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM events WHERE event_id = $1)")
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(
            res.is_ok(),
            present,
            "acknowledged if and only if present: {res:?}"
        );
        failed += usize::from(res.is_err());
    }
    assert_eq!(
        failed, 8,
        "the group died before its commit: all failed, none written"
    );
    // The store goes on: the members can be appended now, grouped or not.
    store
        .append(
            &StreamId::new("k", "k0"),
            ExpectedVersion::NoStream,
            vec![sample_event(9)],
            None,
        )
        .await
        .unwrap();
    let _ = watcher.close().await;
}
