//! W3 (rebuilding the `accounts` read model from zero with `Replay`) and L3 (a plain
//! sequential read of the same rows). Each replay runs in a child process of this binary, so
//! that its peak memory (VmHWM) is its own.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use cqrs_core::{ExpectedVersion, NewEvent, Replay, RunnerConfig, Segment, StreamId};
use cqrs_postgres::PgEventStore;
use futures_util::TryStreamExt;
use serde_json::Value;
use uuid::Uuid;

use crate::BenchError;
use crate::db::Db;
use crate::domain::{AccountEvent, AccountsProjector, account_id};

/// Events per account in W3.
pub(crate) const EVENTS_PER_ACCOUNT: usize = 100;
/// Events read and written per replay batch.
pub(crate) const REPLAY_BATCH: usize = 5_000;
/// Accounts appended per populating transaction.
const ACCOUNTS_PER_TX: usize = 50;
const POPULATE_TASKS: usize = 4;

/// Fills a new schema with `accounts` x [`EVENTS_PER_ACCOUNT`] events, appended through the
/// store (one statement per account, several accounts per transaction).
pub(crate) async fn populate(db: &Db, schema: &str, accounts: usize) -> Result<(), BenchError> {
    let store = db.store(schema).await?;
    let mut joins = Vec::new();
    for task in 0..POPULATE_TASKS {
        let store = store.clone();
        joins.push(tokio::spawn(async move {
            let chunks = (0..accounts)
                .step_by(ACCOUNTS_PER_TX)
                .skip(task)
                .step_by(POPULATE_TASKS);
            for first in chunks {
                let mut tx = store.pool().begin().await?;
                for a in first..(first + ACCOUNTS_PER_TX).min(accounts) {
                    let events = (0..EVENTS_PER_ACCOUNT)
                        .map(|n| {
                            let e = if n == 0 {
                                AccountEvent::opened(a)
                            } else {
                                AccountEvent::deposit(a, n)
                            };
                            NewEvent::from_domain(&e, Default::default())
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let stream = StreamId::new("account", account_id(a));
                    store
                        .append_in(&mut tx, &stream, ExpectedVersion::NoStream, events, None)
                        .await?;
                }
                tx.commit().await?;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for j in joins {
        j.await??;
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(store.pool())
        .await?;
    store.pool().close().await;
    Ok(())
}

/// What one replay measured (in the child process).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReplayRun {
    pub(crate) events: u64,
    pub(crate) per_sec: f64,
    /// Peak resident memory of the child, in MiB.
    pub(crate) hwm_mib: f64,
    /// Resident memory of the child before the replay started, in MiB.
    pub(crate) base_mib: f64,
}

/// Runs one replay of `schema` in a child process, with the read model split into `segments`
/// rebuilt side by side.
pub(crate) async fn replay_in_child(
    db: &Db,
    schema: &str,
    segments: u32,
) -> Result<ReplayRun, BenchError> {
    let exe = std::env::current_exe()?;
    let (url, schema) = (db.url.clone(), schema.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .args(["--database", &url, "--replay-child", &schema])
            .args(["--segments", &segments.to_string()])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(BenchError::Check(format!(
            "replay child failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("REPLAY "))
        .ok_or_else(|| BenchError::Check(format!("no result from the replay child: {stdout}")))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(f64::NAN))
        .collect();
    let [events, per_sec, hwm_mib, base_mib] = f[..] else {
        return Err(BenchError::Check(format!("bad replay line: {line}")));
    };
    Ok(ReplayRun {
        events: events as u64,
        per_sec,
        hwm_mib,
        base_mib,
    })
}

/// The child's side: rebuild the read model of `schema` (in `segments` side by side) and print
/// one `REPLAY` line.
pub(crate) async fn replay_child(db: &Db, schema: &str, segments: u32) -> Result<(), BenchError> {
    let store = db.open(schema).await?;
    let base = vm_kib("VmRSS:");
    let replay = Replay::new(Arc::new(store.clone()), Arc::new(store.dead_letters())).with_config(
        RunnerConfig {
            batch_size: REPLAY_BATCH,
            ..RunnerConfig::default()
        },
    );
    let started = Instant::now();
    let events = if segments <= 1 {
        let sub = store.transactional(AccountsProjector::whole());
        replay.run(&sub, |_| {}).await?.events
    } else {
        // NOTE: the segments share the table: it is emptied once, and each segment's reset
        // leaves it alone.
        sqlx::query("TRUNCATE accounts")
            .execute(store.pool())
            .await?;
        let subs = Segment::all(segments)
            .into_iter()
            .map(|s| Arc::new(store.transactional(AccountsProjector::segment(s))) as _)
            .collect();
        let reports = replay.run_parallel(subs).await?;
        reports.iter().map(|r| r.events).sum::<u64>()
    };
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let hwm = vm_kib("VmHWM:");
    check(&store, events).await?;
    println!(
        "REPLAY {} {} {} {}",
        events,
        rate,
        hwm / 1024.0,
        base / 1024.0
    );
    store.pool().close().await;
    Ok(())
}

async fn check(store: &PgEventStore, events: u64) -> Result<(), BenchError> {
    let (rows, total): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), SUM(events)::int8 FROM accounts")
            .fetch_one(store.pool())
            .await?;
    let want_rows = events as i64 / EVENTS_PER_ACCOUNT as i64;
    if rows != want_rows || total != Some(events as i64) {
        return Err(BenchError::Check(format!(
            "rebuilt read model has {rows} accounts and {total:?} events; expected {want_rows} and {events}"
        )));
    }
    Ok(())
}

/// A line of /proc/self/status, in KiB.
fn vm_kib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(f64::NAN)
}

/// The columns the store reads, decoded into the types it decodes them into.
pub(crate) type Row = (
    i64,
    i64,
    String,
    String,
    i64,
    Uuid,
    String,
    i32,
    Value,
    Value,
    DateTime<Utc>,
);

/// The store's columns, as `read_stream` selects them.
const COLUMNS: &str = "position, tx_id::text::int8, stream_category, stream_id, stream_version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at";

/// Every event of one stream, in order: the raw limit of loading an aggregate (L2).
pub(crate) const SELECT_EVENTS_OF_STREAM: &str = "SELECT position, tx_id::text::int8, stream_category, stream_id, stream_version, \
     event_id, event_type, schema_version, payload, metadata, recorded_at \
     FROM events WHERE stream_category = $1 AND stream_id = $2 ORDER BY stream_version";

/// L3: one sequential read of every event of `schema`, the columns the store reads decoded
/// into the same types; rows per second.
pub(crate) async fn raw_read(db: &Db, schema: &str) -> Result<f64, BenchError> {
    let pool = db.plain_pool(schema, 1).await?;
    let t = Instant::now();
    let sql = format!("SELECT {COLUMNS} FROM events ORDER BY position");
    let mut rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).fetch(&pool);
    let mut n = 0u64;
    while let Some(row) = rows.try_next().await? {
        std::hint::black_box(&row);
        n += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(rows);
    pool.close().await;
    Ok(rate)
}
