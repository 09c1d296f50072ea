//! Leases across runtimes: one runner at a time runs a projector; when the holder dies the
//! other takes over within seconds and the read model ends exact; a holder that lost its lease
//! cannot commit.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{
    AllStreamReader, Cursor, DeadLetterStore, EventAppender, ExpectedVersion, Leases, Runner,
    RunnerHandle, StreamId, Subscriber,
};
use cqrs_postgres::{PgEventStore, sqlx};
use tokio::runtime::{Builder, Runtime};

const NAME: &str = "leased";

/// A runner of the `leased` projector with leases, in a runtime of its own ("a process").
fn start_process(db: &support::TestDb) -> (Runtime, RunnerHandle, PgEventStore) {
    let rt = Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (handle, store) = rt.block_on(async {
        let store = db.store("public").await;
        let leases = store.leases();
        let recorder = support::Recorder::new(store.pool(), NAME).await;
        let handle = Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
            .with_config(support::fast_config())
            .with_leases(Arc::new(leases.clone()))
            .with(store.transactional(recorder).fenced_by(leases))
            .start();
        (handle, store)
    });
    (rt, handle, store)
}

fn active(rt: &Runtime, handle: &RunnerHandle) -> bool {
    rt.block_on(handle.status()).unwrap()[0].active
}

#[test]
fn one_holder_at_a_time_and_takeover_within_seconds() {
    let control = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = control.block_on(support::TestDb::new());
    let writer_store = control.block_on(db.store("public"));

    let (rt_a, a, store_a) = start_process(&db);
    let (rt_b, b, store_b) = start_process(&db);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !active(&rt_a, &a) && !active(&rt_b, &b) {
        assert!(Instant::now() < deadline, "nobody took the lease");
        std::thread::sleep(Duration::from_millis(20));
    }
    let writer = control.spawn(async move {
        for i in 0..40u64 {
            let events = vec![
                sample_event(i),
                sample_event(i + 100),
                sample_event(i + 200),
            ];
            writer_store
                .append(
                    &StreamId::new("leased", format!("{}", i % 4)),
                    ExpectedVersion::Any,
                    events,
                    None,
                )
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        writer_store
    });
    for _ in 0..15 {
        let (x, y) = (active(&rt_a, &a), active(&rt_b, &b));
        assert!(
            x != y,
            "exactly one process runs the projector (a: {x}, b: {y})"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Kill the holder as a crash would: its tasks and connections vanish with its runtime.
    let a_held = active(&rt_a, &a);
    let (rt_dead, dead, dead_store, rt_live, live, live_store) = if a_held {
        (rt_a, a, store_a, rt_b, b, store_b)
    } else {
        (rt_b, b, store_b, rt_a, a, store_a)
    };
    dead.abort();
    rt_dead.block_on(async move { drop(dead_store) });
    rt_dead.shutdown_timeout(Duration::from_secs(1));
    let killed_at = Instant::now();
    while !active(&rt_live, &live) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "no takeover within 5 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let takeover = killed_at.elapsed();

    let writer_store = control.block_on(writer).unwrap();
    let head = control.block_on(writer_store.head_position()).unwrap();
    rt_live
        .block_on(live.wait_for(NAME, head, Duration::from_secs(20)))
        .unwrap();
    let counts = control.block_on(support::seen_counts(writer_store.pool(), NAME));
    assert_eq!(
        counts,
        (120, 120, 120),
        "the read model is exact across the takeover"
    );
    let diag = control.block_on(writer_store.diagnostics()).unwrap();
    let lease = diag
        .leases
        .iter()
        .find(|l| l.name == NAME)
        .expect("lease row");
    assert_eq!(
        lease.epoch, 2,
        "two acquisitions: the first holder's and the takeover"
    );
    println!("takeover after {takeover:?}");
    rt_live.block_on(async move {
        live.shutdown().await;
        drop(live_store);
    });
    control.block_on(async move { drop(writer_store) });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lost_its_lease_cannot_commit() {
    let db = support::TestDb::new().await;
    let (store_a, store_b) = (db.store("public").await, db.store("public").await);
    let recorder = support::Recorder::new(store_a.pool(), "fenced").await;
    store_a
        .append(
            &StreamId::new("f", "1"),
            ExpectedVersion::Any,
            (0..3).map(sample_event).collect(),
            None,
        )
        .await
        .unwrap();
    // NOTE: other tests' open transactions may hold the events back for a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events = store_a.read_all(Cursor::START, 10).await.unwrap();
        if events.len() == 3 || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(events.len(), 3);

    let (leases_a, leases_b) = (store_a.leases(), store_b.leases());
    let mut lease_a = leases_a
        .try_acquire("fenced")
        .await
        .unwrap()
        .expect("the lease is free");
    assert!(
        leases_b.try_acquire("fenced").await.unwrap().is_none(),
        "held by a"
    );
    let sub_a = store_a
        .transactional(recorder.clone())
        .fenced_by(leases_a.clone());
    sub_a
        .process(&events[..1], events[0].cursor)
        .await
        .expect("the holder commits");

    let lease_pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(store_a.pool())
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(lease_pid)
        .execute(store_a.pool())
        .await
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(5);
    let _lease_b = loop {
        assert!(Instant::now() < deadline, "b did not take over");
        if let Ok(Some(l)) = leases_b.try_acquire("fenced").await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // `a` has not noticed yet; its next batch must not commit. It is rolled back and fails as
    // fenced out (its own outcome: the runner parks nothing); the new holder handles it.
    let err = sub_a
        .process(&events[1..2], events[1].cursor)
        .await
        .expect_err("a fenced batch does not commit");
    assert!(cqrs_core::is_fenced_out(&*err), "{err}");
    assert_eq!(
        sub_a.checkpoint().await.unwrap(),
        events[0].cursor,
        "nothing of it was committed"
    );
    assert_eq!(support::seen_counts(store_a.pool(), "fenced").await.0, 1);
    let err = sub_a
        .process(&events[1..2], events[1].cursor)
        .await
        .expect_err("a stale holder stays fenced out");
    assert!(cqrs_core::is_fenced_out(&*err), "{err}");
    assert!(
        !lease_a.renew().await.unwrap(),
        "a learns it lost the lease"
    );

    let sub_b = store_b.transactional(recorder).fenced_by(leases_b.clone());
    sub_b
        .process(&events[1..], events[2].cursor)
        .await
        .expect("the new holder commits");
    let counts = support::seen_counts(store_a.pool(), "fenced").await;
    assert_eq!(counts, (3, 3, 3), "each event once across the takeover");
}

/// Fails every batch of more than one event (so the runner goes one by one), and holds its
/// first single event until released.
#[derive(Debug)]
struct Gate {
    inner: Arc<support::Recorder>,
    held: std::sync::atomic::AtomicBool,
    reached: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[cqrs_core::async_trait]
impl cqrs_postgres::PgProjector for Gate {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn handle(
        &self,
        tx: &mut sqlx::PgConnection,
        event: &cqrs_core::RecordedEvent,
    ) -> Result<(), cqrs_core::BoxError> {
        self.inner.handle(tx, event).await
    }
    async fn handle_batch(
        &self,
        tx: &mut sqlx::PgConnection,
        events: &[cqrs_core::RecordedEvent],
    ) -> Result<(), cqrs_core::BoxError> {
        if events.len() > 1 {
            return Err("a whole batch fails this time".into());
        }
        if !self.held.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.reached.notify_one();
            self.release.notified().await;
        }
        self.inner.handle_batch(tx, events).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_during_one_by_one_tries_parks_nothing_and_counts_nothing() {
    let db = support::TestDb::new().await;
    let (store_a, store_b) = (db.store("public").await, db.store("public").await);
    let gate = Arc::new(Gate {
        inner: support::Recorder::new(store_a.pool(), "gated").await,
        held: Default::default(),
        reached: Default::default(),
        release: Default::default(),
    });
    let leases_a = store_a.leases();
    let runner = Runner::new(Arc::new(store_a.clone()), Arc::new(store_a.dead_letters()))
        .with_config(support::fast_config())
        .with_leases(Arc::new(leases_a.clone()))
        .with(store_a.transactional(gate.clone()).fenced_by(leases_a))
        .start();
    store_a
        .append(
            &StreamId::new("g", "1"),
            ExpectedVersion::Any,
            (0..3).map(sample_event).collect(),
            None,
        )
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), gate.reached.notified())
        .await
        .expect("the runner reaches the first event alone");

    // The lease is taken over while the first event is being handled.
    let lease_pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = \
         (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(store_a.pool())
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(lease_pid)
        .execute(store_a.pool())
        .await
        .unwrap();
    let leases_b = store_b.leases();
    let deadline = Instant::now() + Duration::from_secs(5);
    let lease_b = loop {
        assert!(Instant::now() < deadline, "b did not take over");
        if let Ok(Some(l)) = leases_b.try_acquire("gated").await {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    gate.release.notify_one();
    // Long enough for the old one-by-one tries and their parking.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        store_a.dead_letters().list(None).await.unwrap().is_empty(),
        "no healthy event parked"
    );
    let status = &runner.status().await.unwrap()[0];
    assert_eq!(
        (status.handled, status.parked_here, status.position),
        (0, 0, 0),
        "nothing counted, the cursor unmoved: {status:?}"
    );
    assert_eq!(support::seen_counts(store_a.pool(), "gated").await.0, 0);

    // The lease back: every event once.
    drop(lease_b);
    let head = store_a.head_position().await.unwrap();
    runner
        .wait_for("gated", head, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(
        support::seen_counts(store_a.pool(), "gated").await,
        (3, 3, 3)
    );
    runner.shutdown().await;
}
