//! Measures the SQLite store on this machine beside the raw SQLite library measured in the same
//! run: appends, reads, and a transactional replay.
//!
//! Run with `cargo run --release -p cqrs-sqlite --example throughput`.
//!
//! The raw limits use the C library through rusqlite on the same file (or a fresh in-memory
//! database), with the store's own tables (its migrations), WAL and the same `synchronous`:
//! a `BEGIN IMMEDIATE` transaction of 1 or 100 plain `INSERT`s of the same row shape, and one
//! sequential `SELECT` of every column of every event, each read into an owned value and its id
//! and time parsed (as the store decodes them). The replays run in a child process each (the
//! same binary with `--replay FILE`), which prints its peak memory (VmHWM).

use std::sync::Arc;
use std::time::Instant;

use cqrs_core::{
    AllStreamReader, BoxError, Cursor, EventAppender, ExpectedVersion, NewEvent, RecordedEvent,
    Replay, RunnerConfig, StreamId, StreamReaderExt,
};
use cqrs_sqlite::{MIGRATOR, SqliteConfig, SqliteDatabase, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;

/// The read model of the replays: events per stream. Its batch handler folds a batch into
/// one count per stream and writes them with one statement, as a replay-minded projector does.
#[derive(Debug)]
struct Totals;

#[async_trait::async_trait]
impl SqliteProjector for Totals {
    fn name(&self) -> &str {
        "totals"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO totals VALUES (?, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1")
            .bind(&event.stream.id)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle_batch(
        &self,
        conn: &mut SqliteConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let mut counts: Vec<(&str, i64)> = Vec::new();
        for e in events {
            match counts.last_mut() {
                Some((id, n)) if *id == e.stream.id => *n += 1,
                _ => counts.push((&e.stream.id, 1)),
            }
        }
        sqlx::query(
            "INSERT INTO totals (id, n) SELECT value ->> 0, value ->> 1 FROM json_each(?) WHERE true \
             ON CONFLICT (id) DO UPDATE SET n = n + excluded.n",
        )
        .bind(serde_json::to_string(&counts)?)
        .execute(conn)
        .await?;
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM totals").execute(conn).await?;
        Ok(())
    }
}

/// The peak resident memory of this process (VmHWM), in MiB.
fn peak_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// The child process of a replay: rebuilds `Totals` in the file at `path` and prints the
/// events, the rate and its peak memory.
async fn replay_child(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    let config = SqliteConfig {
        durable: false,
        ..Default::default()
    };
    let db = SqliteDatabase::open_path(path, config).await?;
    let sub = db.transactional(Totals);
    let config = RunnerConfig {
        batch_size: 5000,
        ..Default::default()
    };
    let report = Replay::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with_config(config)
        .run(&sub, |_| {})
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT SUM(n) FROM totals")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(total as u64, report.events, "every event counted once");
    println!("{} {} {}", report.events, report.rate(), peak_mib());
    Ok(())
}

/// A replay child's figures: events, events/s and peak MiB.
type ReplayFigures = (u64, f64, f64);

/// Runs a replay of the file at `path` in a child process.
fn replay_in_child(path: &std::path::Path) -> Result<ReplayFigures, Box<dyn std::error::Error>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--replay")
        .arg(path)
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    let mut parts = text.split_whitespace();
    let mut next = || -> Result<f64, Box<dyn std::error::Error>> {
        Ok(parts
            .next()
            .ok_or("the replay child printed nothing")?
            .parse()?)
    };
    Ok((next()? as u64, next()?, next()?))
}

/// Appends `accounts` streams of 100 events each to `store`, from stream number `first`.
async fn fill(
    store: &cqrs_sqlite::SqliteEventStore,
    first: usize,
    accounts: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    for b in first..first + accounts {
        let events = (0..100).map(event).collect();
        let stream = StreamId::new("account", b.to_string());
        store
            .append(&stream, ExpectedVersion::NoStream, events, None)
            .await?;
    }
    Ok(())
}

fn event(i: usize) -> NewEvent {
    NewEvent::new(
        "Deposited",
        json!({ "amount": i, "note": "a deposit of some size" }),
    )
}

fn per_sec(n: usize, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

fn line(label: &str, ours: f64, raw: Option<f64>) {
    match raw {
        Some(raw) => println!(
            "{label:<56} {ours:>9.0}/s   raw {raw:>9.0}/s   {:.2} x raw",
            ours / raw
        ),
        None => println!("{label:<56} {ours:>9.0}/s"),
    }
}

/// The raw SQLite library on `conn`: `txs` transactions of `rows` inserts each; rows/s.
fn raw_inserts(conn: &rusqlite::Connection, txs: usize, rows: usize, tag: &str) -> f64 {
    let payload = event(0).payload.to_string();
    let started = Instant::now();
    for t in 0..txs {
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        {
            let mut insert = conn
                .prepare_cached(
                    "INSERT INTO events (event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .expect("prepare");
            for r in 0..rows {
                insert
                    .execute(rusqlite::params![
                        uuid::Uuid::new_v4().to_string(),
                        "raw",
                        format!("{tag}-{t}"),
                        (r + 1) as i64,
                        "Deposited",
                        1i64,
                        payload,
                        "{}",
                        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                    ])
                    .expect("insert");
            }
        }
        conn.execute_batch("COMMIT").expect("commit");
    }
    per_sec(txs * rows, started)
}

/// The raw SQLite library reading every event of `conn` in one sequential statement; rows/s.
fn raw_read(conn: &rusqlite::Connection) -> (usize, f64) {
    let started = Instant::now();
    let mut stmt = conn
        .prepare(
            "SELECT position, event_id, category, stream_id, version, event_type, schema_version, payload, metadata, recorded_at \
             FROM events WHERE position > 0 ORDER BY position",
        )
        .expect("prepare");
    let mut rows = stmt.query([]).expect("query");
    let mut n = 0;
    while let Some(row) = rows.next().expect("row") {
        let values: (
            i64,
            String,
            String,
            String,
            i64,
            String,
            i64,
            String,
            String,
            String,
        ) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
            row.get(3).unwrap(),
            row.get(4).unwrap(),
            row.get(5).unwrap(),
            row.get(6).unwrap(),
            row.get(7).unwrap(),
            row.get(8).unwrap(),
            row.get(9).unwrap(),
        );
        // Decoded as the store decodes them: the id and the time parsed.
        let id = uuid::Uuid::parse_str(&values.1).expect("uuid");
        let at = chrono::DateTime::parse_from_rfc3339(&values.9).expect("time");
        std::hint::black_box((values, id, at));
        n += 1;
    }
    (n, per_sec(n, started))
}

/// The raw SQLite library reading one stream's events as a load does; how many.
fn raw_read_stream(conn: &rusqlite::Connection, category: &str, id: &str) -> usize {
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, event_id, event_type, schema_version, payload, metadata, recorded_at, position \
             FROM events WHERE category = ? AND stream_id = ? ORDER BY version",
        )
        .expect("prepare");
    let mut rows = stmt.query((category, id)).expect("query");
    let mut n = 0;
    while let Some(row) = rows.next().expect("row") {
        let values: (i64, String, String, i64, String, String, String, i64) = (
            row.get(0).unwrap(),
            row.get(1).unwrap(),
            row.get(2).unwrap(),
            row.get(3).unwrap(),
            row.get(4).unwrap(),
            row.get(5).unwrap(),
            row.get(6).unwrap(),
            row.get(7).unwrap(),
        );
        let id = uuid::Uuid::parse_str(&values.1).expect("uuid");
        let at = chrono::DateTime::parse_from_rfc3339(&values.6).expect("time");
        std::hint::black_box((values, id, at));
        n += 1;
    }
    n
}

/// A raw connection like the store's: WAL for files, the given `synchronous`, the store's tables.
fn raw_connection(path: Option<&std::path::Path>, durable: bool) -> rusqlite::Connection {
    let conn = match path {
        Some(p) => rusqlite::Connection::open(p).expect("open"),
        None => {
            let conn = rusqlite::Connection::open_in_memory().expect("open");
            for m in MIGRATOR.iter() {
                conn.execute_batch(m.sql.as_str()).expect("migrate");
            }
            conn
        }
    };
    let sync = if durable { "FULL" } else { "NORMAL" };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA foreign_keys = ON;"
    ))
    .expect("pragmas");
    conn
}

/// The store's appends, each beside the raw library's on a connection like the store's.
async fn appends(
    db: &SqliteDatabase,
    raw: &rusqlite::Connection,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = Arc::new(db.events());
    let n = 2000;
    // NOTE: the disk's fsync time drifts by an order of magnitude within minutes on a shared
    // machine: each figure is compared with the mean of raw runs just before and just after.
    let raw_one_before = raw_inserts(raw, n / 2, 1, "one-a");
    let started = Instant::now();
    for i in 0..n {
        store
            .append(
                &StreamId::new("seq", (i % 10).to_string()),
                ExpectedVersion::Any,
                vec![event(i)],
                None,
            )
            .await?;
    }
    let ours = per_sec(n, started);
    let raw_one = (raw_one_before + raw_inserts(raw, n / 2, 1, "one-b")) / 2.0;
    line(
        &format!("{label}: one writer, 1 event per append"),
        ours,
        Some(raw_one),
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 8 {
                let stream = StreamId::new("par", w.to_string());
                store
                    .append(&stream, ExpectedVersion::Any, vec![event(i)], None)
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let ours = per_sec(n, started);
    let raw_after = raw_inserts(raw, n / 2, 1, "one-c");
    line(
        &format!("{label}: 8 writers, 1 event per append"),
        ours,
        Some((raw_one + raw_after) / 2.0),
    );

    let raw_hundred_before = raw_inserts(raw, 50, 100, "hundred-a");
    let started = Instant::now();
    for b in 0..100 {
        let events = (0..100).map(event).collect();
        store
            .append(
                &StreamId::new("batch", b.to_string()),
                ExpectedVersion::NoStream,
                events,
                None,
            )
            .await?;
    }
    let ours = per_sec(10_000, started);
    let raw_hundred = (raw_hundred_before + raw_inserts(raw, 50, 100, "hundred-b")) / 2.0;
    line(
        &format!("{label}: one writer, 100 events per append"),
        ours,
        Some(raw_hundred),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, path] = &args[..]
        && flag == "--replay"
    {
        return replay_child(path).await;
    }
    let dir = tempfile::tempdir()?;
    for durable in [true, false] {
        let name = if durable { "full" } else { "normal" };
        let raw_path = dir.path().join(format!("raw-{name}.db"));
        // The raw file gets the store's tables from the store itself, whose handle stays open
        // (idle) so that the file is in the same state as the store's: its WAL kept, not
        // deleted and grown anew.
        let _tables = SqliteDatabase::open_path(&raw_path, SqliteConfig::default()).await?;
        let raw = raw_connection(Some(&raw_path), durable);
        raw_inserts(&raw, 100, 1, "warm-up");
        let config = SqliteConfig {
            durable,
            ..Default::default()
        };
        let db = SqliteDatabase::open_path(dir.path().join(format!("{name}.db")), config).await?;
        let label = format!("file, synchronous={}", name.to_uppercase());
        let mut w = db.begin_write().await?;
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *w)
            .await?;
        let raw_sync: i64 = raw.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        w.rollback().await?;
        assert_eq!((sync, raw_sync), (if durable { 2 } else { 1 }, sync));
        appends(&db, &raw, &label).await?;
    }
    let raw = raw_connection(None, true);
    let memory = SqliteDatabase::in_memory().await?;
    appends(&memory, &raw, "memory").await?;

    // Reads and the replay work on a file of 100,000 events, also read by the raw library.
    let path = dir.path().join("read.db");
    let config = SqliteConfig {
        durable: false,
        ..Default::default()
    };
    let db = SqliteDatabase::open_path(&path, config).await?;
    let store = Arc::new(db.events());
    fill(&store, 0, 1000).await?;
    let raw_conn = raw_connection(Some(&path), false);
    let (raw_n, raw_rate) = raw_read(&raw_conn);
    let head = store.head_position().await? as usize;
    assert_eq!(raw_n, head);
    let started = Instant::now();
    let (mut cursor, mut read) = (Cursor::START, 0);
    loop {
        let batch = store.read_all(cursor, 500).await?;
        let Some(last) = batch.last() else { break };
        cursor = last.cursor;
        read += batch.len();
    }
    assert_eq!(read, head);
    let ours = per_sec(read, started);
    let raw_rate = raw_rate.max(raw_read(&raw_conn).1);
    line(
        "read_all in batches of 500 (vs one SELECT)",
        ours,
        Some(raw_rate),
    );

    // A command's load of a long stream: its 10,000 events read in one call (20 times).
    let long = StreamId::new("long", "1");
    for _ in 0..10 {
        let events = (0..1000).map(event).collect();
        store
            .append(&long, ExpectedVersion::Any, events, None)
            .await?;
    }
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(store.read_stream(&long, 1, 10_000).await?.len(), 10_000);
    }
    let ours = per_sec(20 * 10_000, started);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(raw_read_stream(&raw_conn, "long", "1"), 10_000);
    }
    line(
        "load of a 10,000-event stream (events/s)",
        ours,
        Some(per_sec(20 * 10_000, started)),
    );

    // Replays in a child process each (for its peak memory), batches of 5,000.
    let (n, rate, peak) = replay_in_child(&path)?;
    line(
        &format!("transactional replay of {n} (peak {peak:.0} MiB)"),
        rate,
        Some(raw_rate),
    );
    fill(&store, 1000, 9000).await?;
    let (n, rate, peak) = replay_in_child(&path)?;
    line(
        &format!("transactional replay of {n} (peak {peak:.0} MiB)"),
        rate,
        Some(raw_rate),
    );
    Ok(())
}
