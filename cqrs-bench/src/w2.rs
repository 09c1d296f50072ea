//! W2: one more command on a long stream, without and with a snapshot, against a command on a
//! new stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{
    CommandHandler, EventAppender, EventStore, ExpectedVersion, NewEvent, Snapshot, SnapshotStore,
    StreamId,
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
        diagnose(&shared, long).await?;
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
            timed(handler.execute(long, &AccountCommand::Deposit(0, LONG + 2 * SAMPLES + i)))
                .await?,
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

/// `W2_DIAG=1`: where the time of a load of the long stream goes, for 1 to 3 range reads at
/// once: wall time, and CPU time of this process and of every local `postgres` process (Linux,
/// server on this machine), per load, over 100 loads.
async fn diagnose(store: &Arc<dyn EventStore>, id: &str) -> Result<(), BenchError> {
    fn ticks(stat: &std::path::Path) -> u64 {
        std::fs::read_to_string(stat)
            .ok()
            .and_then(|s| {
                let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
                Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    }
    fn server_ticks() -> u64 {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return 0;
        };
        procs
            .filter_map(|e| e.ok())
            .filter(|e| {
                std::fs::read_to_string(e.path().join("comm"))
                    .is_ok_and(|c| c.starts_with("postgres"))
            })
            .map(|e| ticks(&e.path().join("stat")))
            .sum()
    }
    const LOADS: u32 = 100;
    // NOTE: /proc counts in ticks of 10 ms; over 100 loads a tick is 0.1 ms per load.
    let per_load = |ticks: u64| ticks as f64 * 10.0 / f64::from(LOADS);
    for parallel in 1..=3 {
        let me = std::path::Path::new("/proc/self/stat");
        let (client, server, t) = (ticks(me), server_ticks(), Instant::now());
        for _ in 0..LOADS {
            CommandHandler::<Account>::new(store.clone())
                .with_load_parallelism(parallel)
                .load(id)
                .await?;
        }
        eprintln!(
            "W2 load, {parallel} range read(s) at once: {:.1} ms a load; CPU {:.1} ms here, {:.1} ms in postgres",
            t.elapsed().as_secs_f64() * 1000.0 / f64::from(LOADS),
            per_load(ticks(me) - client),
            per_load(server_ticks() - server)
        );
    }
    Ok(())
}
