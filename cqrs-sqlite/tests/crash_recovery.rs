//! The store dropped mid-run, without any shutdown, and reopened from its file: everything
//! committed is there, and a transactional subscriber resumes from its checkpoint with an
//! exact read model.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::{
    CheckpointStore, CommandHandler, Cursor, DeadLetterStore, EventStore, Runner, RunnerConfig,
    StreamId,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase};
use support::Counter;
use support::balances::{Totals, expected_totals, totals};

fn config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 7,
        poll_interval: Duration::from_millis(50),
        ..Default::default()
    }
}

#[test]
fn a_dropped_store_reopens_with_everything_committed_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.db");
    // Appends acknowledged before the crash: (counter id, version, amount).
    let acked: Arc<Mutex<Vec<(String, u64, u64)>>> = Arc::default();

    // Phase 1, on a runtime of its own: writers and a slow transactional projector, then the
    // runtime is torn down wherever every task is (mid-append, mid-batch), as a crash would.
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (path, acked) = (path.clone(), acked.clone());
        rt.block_on(async move {
            let db = SqliteDatabase::open_path(&path, SqliteConfig::default())
                .await
                .unwrap();
            let store: Arc<dyn EventStore> = Arc::new(db.events());
            // A backlog first, which the slow projector (3 ms an event) needs over 600 ms to
            // work off: the crash at 250 ms surely finds it behind.
            let backlog = CommandHandler::<Counter>::new(store.clone());
            for i in 1..=200u64 {
                let id = format!("c{}", i % 4);
                let out = backlog.execute(&id, &i).await.expect("append");
                acked.lock().unwrap().push((id, out.version, i));
            }
            let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
                .with_config(config())
                .with(db.transactional(Totals {
                    delay: Duration::from_millis(3),
                }))
                .start();
            for w in 0..4u64 {
                let (handler, acked) =
                    (CommandHandler::<Counter>::new(store.clone()), acked.clone());
                tokio::spawn(async move {
                    for i in 1.. {
                        let id = format!("c{w}");
                        let out = handler.execute(&id, &(w * 1000 + i)).await.expect("append");
                        acked.lock().unwrap().push((id, out.version, w * 1000 + i));
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            // NOTE: no shutdown, no close: the runner and the writers are mid-work.
            std::mem::forget(runner);
        });
        rt.shutdown_background();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "the writers got going before the crash ({} appends)",
        acked.len()
    );

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let db = SqliteDatabase::open_path(&path, SqliteConfig::default())
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
                    e.payload["n"], *n,
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
                "acknowledged {}, stored {head}, checkpoint at the crash {checkpoint}",
                acked.len()
            );
            assert!(
                checkpoint.position > 0,
                "the projector committed batches before the crash"
            );
            assert!(
                checkpoint.position < head,
                "the projector was behind at the crash ({checkpoint} of {head})"
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
