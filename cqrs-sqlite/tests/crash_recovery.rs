//! The store stopped mid-run without any shutdown (its runtime dropped, or its process killed)
//! and reopened from its file: everything committed is there, and a transactional subscriber
//! resumes from its checkpoint with an exact read model.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::{
    AllStreamReader, CheckpointStore, CommandHandler, Cursor, DeadLetterStore, EventStore, Runner,
    RunnerConfig, StreamId, StreamReaderExt,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase};
use support::Counter;
use support::balances::{Totals, expected_totals, totals};

/// An append acknowledged to its writer: (counter id, version, amount).
type Acked = (String, u64, u64);

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writers and a slow transactional projector at work on the file, until stopped from outside.
/// `ack` hears of every acknowledged append.
async fn work(path: &Path, ack: Arc<dyn Fn(Acked) + Send + Sync>) {
    let db = SqliteDatabase::open_path(path, SqliteConfig::default())
        .await
        .unwrap();
    let store: Arc<dyn EventStore> = Arc::new(db.events());
    // A backlog first, which the slow projector (3 ms an event) needs over 600 ms to work off:
    // a stop after 250 ms surely finds it behind.
    let backlog = CommandHandler::<Counter>::new(store.clone());
    for i in 1..=200u64 {
        let id = format!("c{}", i % 4);
        let out = backlog.execute(&id, &i).await.expect("append");
        ack((id, out.version, i));
    }
    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with_config(config())
        .with(db.transactional(Totals {
            delay: Duration::from_millis(3),
        }))
        .start();
    // NOTE: the handle is leaked, not shut down: the runner is mid-work when the stop comes.
    std::mem::forget(runner);
    let mut writers = Vec::new();
    for w in 0..4u64 {
        let (handler, ack) = (CommandHandler::<Counter>::new(store.clone()), ack.clone());
        writers.push(tokio::spawn(async move {
            for i in 1.. {
                let id = format!("c{w}");
                let out = handler.execute(&id, &(w * 1000 + i)).await.expect("append");
                ack((id, out.version, w * 1000 + i));
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
}

/// Reopens the file and checks it against the acknowledged appends, then resumes the projector.
fn reopen_and_check(path: &Path, acked: Vec<Acked>) {
    assert!(
        acked.len() > 200,
        "the writers got going before the stop ({} appends)",
        acked.len()
    );
    runtime().block_on(async move {
        let db = SqliteDatabase::open_path(path, SqliteConfig::default())
            .await
            .unwrap();
        let store = Arc::new(db.events());

        // Every acknowledged append is there, with its payload.
        for (id, version, n) in &acked {
            let events = store
                .read_stream(&StreamId::new("counter", id.clone()), *version, 1)
                .await
                .unwrap();
            let e = events
                .first()
                .unwrap_or_else(|| panic!("acknowledged event {id} v{version} lost"));
            assert_eq!(e.stream_version, *version);
            assert_eq!(
                e.payload_value().unwrap()["n"],
                *n,
                "event {id} v{version} holds what was appended"
            );
        }
        let head = store.head_position().await.unwrap();
        let log = store.read_all(Cursor::START, 1_000_000).await.unwrap();
        assert_eq!(log.len() as u64, head, "the all-stream has no gaps");
        assert!(
            log.len() >= acked.len() && log.len() <= acked.len() + 4,
            "at most the in-flight appends land unacknowledged"
        );

        // The read model holds exactly the events up to its checkpoint: no half batch, no double.
        let checkpoint = db.checkpoints().load("totals").await.unwrap();
        println!(
            "acknowledged {}, stored {head}, checkpoint at the stop {checkpoint}",
            acked.len()
        );
        assert!(
            checkpoint.position > 0,
            "the projector committed batches before the stop"
        );
        assert!(
            checkpoint.position < head,
            "the projector was behind at the stop ({checkpoint} of {head})"
        );
        assert_eq!(
            totals(&db).await,
            expected_totals(&log, checkpoint.position),
            "read model matches its checkpoint"
        );

        // Resume: the subscriber goes on from its checkpoint to the head, counting nothing twice.
        let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
            .with_config(RunnerConfig {
                batch_size: 100,
                ..config()
            })
            .with(db.transactional(Totals::default()))
            .start();
        runner
            .wait_for("totals", head, Duration::from_secs(20))
            .await
            .unwrap();
        let status = runner.status().await.unwrap();
        assert_eq!(
            status[0].handled,
            head - checkpoint.position,
            "only the events after the checkpoint are handled"
        );
        runner.shutdown().await;
        assert_eq!(
            totals(&db).await,
            expected_totals(&log, head),
            "read model exact after resuming"
        );
        assert!(db.dead_letters().list(None).await.unwrap().is_empty());
    });
}

#[test]
fn a_dropped_store_reopens_with_everything_committed_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.db");
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    {
        // The runtime is torn down wherever every task is (mid-append, mid-batch), and with it
        // every connection of the store.
        let rt = runtime();
        let sink = acked.clone();
        let ack: Arc<dyn Fn(Acked) + Send + Sync> = Arc::new(move |a| sink.lock().unwrap().push(a));
        let enough = {
            let acked = acked.clone();
            async move {
                while acked.lock().unwrap().len() <= 230 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        };
        rt.block_on(async {
            tokio::select! {
                _ = work(&path, ack) => unreachable!("the writers run until stopped"),
                _ = tokio::time::timeout(Duration::from_secs(60), enough) => {}
            }
        });
        rt.shutdown_background();
    }
    let acked = acked.lock().unwrap().clone();
    reopen_and_check(&path, acked);
}

/// Set in the child process of [`a_killed_process_loses_nothing`]: the database path.
const CHILD: &str = "CQRS_SQLITE_KILL_TEST_DB";

/// The same work in a child process (this test binary again), killed with SIGKILL: no
/// destructor runs, no connection is closed.
#[test]
fn a_killed_process_loses_nothing() {
    if let Some(path) = std::env::var_os(CHILD) {
        // The child: report each acknowledged append on stdout until killed.
        let ack: Arc<dyn Fn(Acked) + Send + Sync> = Arc::new(|(id, version, n)| {
            let mut out = std::io::stdout().lock();
            writeln!(out, "acked {id} {version} {n}").unwrap();
            out.flush().unwrap();
        });
        runtime().block_on(work(Path::new(&path), ack));
        unreachable!("the writers run until the process is killed");
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_killed_process_loses_nothing", "--nocapture"])
        .env(CHILD, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let parse = |line: &str| {
        let mut parts = line.strip_prefix("acked ")?.split(' ');
        let (id, version, n) = (parts.next()?, parts.next()?, parts.next()?);
        Some((id.to_owned(), version.parse().ok()?, n.parse().ok()?))
    };
    let mut acked: Vec<Acked> = Vec::new();
    let started = std::time::Instant::now();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        acked.extend(parse(&line.unwrap()));
        // Kill once the backlog is written and the projector and writers have run a while.
        if acked.len() > 230 {
            child.kill().unwrap();
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child makes progress"
        );
    }
    // NOTE: what the child wrote before the kill landed is still in the pipe: those appends were
    // acknowledged too.
    acked.extend(lines.map_while(Result::ok).filter_map(|l| parse(&l)));
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, it did not finish");
    reopen_and_check(&path, acked);
}
