//! W2: one more command on a long stream, without and with a snapshot, against a command on a
//! new stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{
    CommandHandler, EventStore, ExpectedVersion, NewEvent, Snapshot, SnapshotStore, StreamId,
};

use crate::BenchError;
use crate::db::Db;
use crate::domain::{Account, AccountCommand, AccountEvent};
use crate::stats::median_ms;

const LONG: usize = 10_000;
const BULK: usize = 1_000;
const SAMPLES: usize = 20;
const SNAPSHOT_SCHEMA: u32 = 1;

/// Medians of one run of W2, in milliseconds.
#[derive(Debug)]
pub(crate) struct W2Run {
    pub(crate) no_snapshot_ms: f64,
    pub(crate) snapshot_ms: f64,
    pub(crate) new_stream_ms: f64,
    /// L2: the stream's rows read with one plain query, the store's columns decoded.
    pub(crate) raw_read_ms: f64,
    /// The same with only the columns a load needs (version, type, schema version, payload).
    pub(crate) lean_read_ms: f64,
}

pub(crate) async fn run(db: &Db, run: usize) -> Result<W2Run, BenchError> {
    let store = db.store(&db.schema(&format!("w2_{run}"))).await?;
    let shared: Arc<dyn EventStore> = Arc::new(store.clone());
    let long = "long";
    let stream = StreamId::new("account", long);
    let mut version = 0;
    while (version as usize) < LONG {
        let events = (version as usize..(version as usize + BULK).min(LONG))
            .map(|n| {
                let e = if n == 0 {
                    AccountEvent::opened(0)
                } else {
                    AccountEvent::deposit(0, n)
                };
                NewEvent::from_domain(&e, Default::default())
            })
            .collect::<Result<Vec<_>, _>>()?;
        version = store
            .append(&stream, ExpectedVersion::Exact(version), events, None)
            .await?
            .version;
    }

    if std::env::var_os("W2_DIAG").is_some() {
        for p in [1, 2, 3, 4, 2, 1] {
            let mut t = Vec::new();
            for _ in 0..SAMPLES {
                let handler =
                    CommandHandler::<Account>::new(shared.clone()).with_load_parallelism(p);
                t.push(timed(handler.load(long)).await?);
            }
            eprintln!("load p={p}: {:.2} ms", median_ms(&mut t));
        }
        fn ticks(pid: &str) -> u64 {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit_once(')')?.1.to_owned();
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
                })
                .unwrap_or(0)
        }
        fn pg_ticks() -> u64 {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .filter(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.starts_with("postgres"))
                })
                .map(|e| ticks(&e.file_name().to_string_lossy()))
                .sum()
        }
        for p in [1, 2, 3] {
            let (c0, s0, t0) = (ticks("self"), pg_ticks(), Instant::now());
            for _ in 0..100 {
                let handler =
                    CommandHandler::<Account>::new(shared.clone()).with_load_parallelism(p);
                handler.load(long).await?;
            }
            let (c1, s1, t1) = (ticks("self"), pg_ticks(), t0.elapsed());
            eprintln!(
                "p={p}: 100 loads: wall {:.1} ms/load, client cpu {:.1} ms/load, server cpu {:.1} ms/load",
                t1.as_secs_f64() * 10.0,
                (c1 - c0) as f64 / 10.0 * 10.0 / 10.0,
                (s1 - s0) as f64 / 10.0 * 10.0 / 10.0
            );
        }
        let mut t = Vec::new();
        for _ in 0..SAMPLES {
            t.push(timed(store.read_stream_for_load(&stream, 1, 20000)).await?);
        }
        eprintln!("read_stream_for_load all: {:.2} ms", median_ms(&mut t));
        let mut t = Vec::new();
        for _ in 0..SAMPLES {
            t.push(timed(store.stream_version(&stream)).await?);
        }
        eprintln!("stream_version: {:.2} ms", median_ms(&mut t));
    }
    let mut plain = Vec::with_capacity(SAMPLES);
    let mut fresh = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        // A fresh handler each time: no cache, so the command loads the whole stream.
        let handler = CommandHandler::<Account>::new(shared.clone());
        plain.push(timed(handler.execute(long, &AccountCommand::Deposit(0, LONG + i))).await?);
        let handler = CommandHandler::<Account>::new(shared.clone());
        let id = format!("new-{i}");
        fresh.push(timed(handler.execute(&id, &AccountCommand::Open(i + 1))).await?);
    }

    let pool = db.plain_pool(store.schema(), 1).await?;
    let mut raw = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let rows: Vec<crate::w3::Row> = sqlx::query_as(crate::w3::SELECT_EVENTS_OF_STREAM)
            .bind("account")
            .bind(long)
            .fetch_all(&pool)
            .await?;
        raw.push(t.elapsed());
        std::hint::black_box(rows);
    }
    let mut lean = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let rows: Vec<(i64, String, i32, serde_json::Value)> = sqlx::query_as(
            "SELECT stream_version, event_type, schema_version, payload FROM events \
             WHERE stream_category = $1 AND stream_id = $2 ORDER BY stream_version",
        )
        .bind("account")
        .bind(long)
        .fetch_all(&pool)
        .await?;
        lean.push(t.elapsed());
        std::hint::black_box(rows);
    }
    pool.close().await;

    let snapshots = Arc::new(store.snapshots());
    let with_snapshots = || {
        CommandHandler::<Account>::new(shared.clone()).with_snapshots(
            snapshots.clone(),
            1_000,
            SNAPSHOT_SCHEMA,
        )
    };
    let (state, at) = with_snapshots().load(long).await?;
    snapshots
        .save(
            &stream,
            Snapshot {
                version: at,
                state: serde_json::to_value(&state)?,
                schema: SNAPSHOT_SCHEMA,
            },
        )
        .await?;
    let mut snap = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let handler = with_snapshots();
        snap.push(
            timed(handler.execute(long, &AccountCommand::Deposit(0, LONG + SAMPLES + i))).await?,
        );
    }
    db.finish(store).await?;
    Ok(W2Run {
        no_snapshot_ms: median_ms(&mut plain),
        snapshot_ms: median_ms(&mut snap),
        new_stream_ms: median_ms(&mut fresh),
        raw_read_ms: median_ms(&mut raw),
        lean_read_ms: median_ms(&mut lean),
    })
}

async fn timed<T, E>(f: impl Future<Output = Result<T, E>>) -> Result<Duration, BenchError>
where
    BenchError: From<E>,
{
    let t = Instant::now();
    f.await?;
    Ok(t.elapsed())
}
