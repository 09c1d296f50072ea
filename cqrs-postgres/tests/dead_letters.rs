//! Faults around a transactional projector's commit and its dead letters: a COMMIT that gets
//! no answer is applied once; a retried letter is removed in the transaction that applies it;
//! a park repeated keeps one letter; a replay starts without old letters; a process that does
//! not hold a subscriber's lease still sees it move (`wait_for` works there).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::testkit::FaultyLink;
use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{
    AllStreamReader, BoxError, Cursor, DeadLetter, DeadLetterStatus, DeadLetterStore, Error,
    EventAppender, ExpectedVersion, RecordedEvent, Replay, Runner, RunnerConfig, StreamId,
    Subscriber,
};
use cqrs_postgres::sqlx::{self, PgConnection};
use cqrs_postgres::{PgConfig, PgDeadLetterStore, PgEventStore, PgProjector};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

async fn events(store: &PgEventStore, n: usize) -> Vec<RecordedEvent> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = store.read_all(Cursor::START, 100).await.unwrap();
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "events not readable");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn append(store: &PgEventStore, stream: &str, n: u64) -> u64 {
    store
        .append(
            &StreamId::new("t", stream),
            ExpectedVersion::Any,
            (0..n).map(sample_event).collect(),
            None,
        )
        .await
        .unwrap()
        .position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_with_no_answer_is_applied_once() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let recorder = support::Recorder::new(store.pool(), "slow").await;
    // NOTE: a deferred constraint trigger runs at COMMIT: the commit takes a second and a
    // half, long enough to cut the client's connection while the server is still committing.
    sqlx::raw_sql(
        "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON seen \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();",
    )
    .execute(store.pool())
    .await
    .unwrap();
    append(&store, "1", 1).await;
    let batch = events(&store, 1).await;

    let link = FaultyLink::to("127.0.0.1:5432").await.unwrap();
    let through = PgEventStore::connect_with(
        db.options
            .clone()
            .host("127.0.0.1")
            .port(link.addr().port()),
        PgConfig::with_schema("public").max_connections(4),
    )
    .await
    .unwrap();
    let sub = Arc::new(through.transactional(recorder));
    let to = batch[0].cursor;
    let run = {
        let (sub, batch) = (sub.clone(), batch.clone());
        // NOTE: tried again on an error, as the runner does (first the batch, then one by one).
        tokio::spawn(async move {
            let mut tries = 0;
            loop {
                let done = sub.process(&batch, to).await;
                tries += 1;
                if done.is_ok() || tries == 3 {
                    break (done, tries);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    // Cut once the COMMIT is running on the server.
    let deadline = Instant::now() + WAIT;
    loop {
        let committing: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state = 'active' AND query ILIKE 'COMMIT%'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if committing > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the COMMIT never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(link.cut() > 0, "the batch's connection was cut");
    let (done, tries) = run.await.unwrap();
    // Whatever a wrong retry would have done is committed by now (it waits for the first).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        support::seen_counts(store.pool(), "slow").await,
        (1, 1, 1),
        "the event counted once"
    );
    done.expect("the batch committed, and the projector finds it out");
    assert_eq!(tries, 1, "the first try's fate was decided");
    assert_eq!(sub.checkpoint().await.unwrap(), to);
}

/// A recorder that fails while `fail` is set.
#[derive(Debug)]
struct Failing {
    inner: Arc<support::Recorder>,
    fail: AtomicBool,
}

#[cqrs_core::async_trait]
impl PgProjector for Failing {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("the read model refuses it".into());
        }
        self.inner.handle(tx, event).await
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        self.inner.reset(tx).await
    }
}

/// The store's dead letters, except that removing one fails (as a lost connection would,
/// between the commit of the read model and the removal).
#[derive(Debug)]
struct RemoveFails(PgDeadLetterStore);

#[cqrs_core::async_trait]
impl DeadLetterStore for RemoveFails {
    async fn park(&self, letter: DeadLetter) -> cqrs_core::Result<()> {
        self.0.park(letter).await
    }
    async fn list(&self, subscriber: Option<&str>) -> cqrs_core::Result<Vec<DeadLetter>> {
        self.0.list(subscriber).await
    }
    async fn set_status(&self, id: Uuid, status: DeadLetterStatus) -> cqrs_core::Result<()> {
        self.0.set_status(id, status).await
    }
    async fn remove(&self, _id: Uuid) -> cqrs_core::Result<()> {
        Err(Error::backend("connection lost before the removal"))
    }
}

fn fast() -> RunnerConfig {
    RunnerConfig {
        dead_letter_interval: Duration::from_millis(50),
        poll_interval: Duration::from_millis(50),
        ..support::fast_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_letter_is_removed_with_the_effect_and_applied_once() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let failing = Arc::new(Failing {
        inner: support::Recorder::new(store.pool(), "retried").await,
        fail: AtomicBool::new(true),
    });
    let dead = store.dead_letters();
    let runner = Runner::new(Arc::new(store.clone()), Arc::new(RemoveFails(dead.clone())))
        .with_config(fast())
        .with(store.transactional(failing.clone()))
        .start();
    let position = append(&store, "1", 1).await;
    match runner.wait_for("retried", position, WAIT).await {
        Err(Error::Parked { error, .. }) => {
            assert!(error.contains("refuses"), "{error}")
        }
        other => panic!("expected the event parked, got {other:?}"),
    }
    let letters = dead.list(Some("retried")).await.unwrap();
    assert_eq!(letters.len(), 1);

    failing.fail.store(false, Ordering::SeqCst);
    dead.set_status(letters[0].id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dead.list(Some("retried")).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the letter stays: {:?}",
            dead.list(None).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Several retry rounds later: still applied once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        support::seen_counts(store.pool(), "retried").await.0,
        1,
        "the retried event applied once"
    );
    runner.wait_for("retried", position, WAIT).await.unwrap();
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_park_repeated_keeps_one_letter_and_a_replay_starts_without_old_ones() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    let failing = Arc::new(Failing {
        inner: support::Recorder::new(store.pool(), "rebuilt").await,
        fail: AtomicBool::new(true),
    });
    append(&store, "1", 2).await;
    events(&store, 2).await;
    let dead = store.dead_letters();
    let sub = store.transactional(failing.clone());
    let replay = Replay::new(Arc::new(store.clone()), Arc::new(dead.clone())).with_config(fast());
    let report = replay.run(&sub, |_| {}).await.unwrap();
    assert_eq!(report.parked, 2);
    let letters = dead.list(Some("rebuilt")).await.unwrap();
    assert_eq!(letters.len(), 2);

    // Parked again (a crash between the park and the checkpoint, a second holder): one letter.
    let again = DeadLetter {
        id: Uuid::new_v4(),
        error: "again".into(),
        attempts: 9,
        ..letters[0].clone()
    };
    dead.park(again).await.unwrap();
    let now = dead.list(Some("rebuilt")).await.unwrap();
    assert_eq!(now.len(), 2, "one letter per subscriber and event");
    assert_eq!(
        (now[0].id, now[0].attempts, now[0].error.as_str()),
        (letters[0].id, 9, "again")
    );

    failing.fail.store(false, Ordering::SeqCst);
    let report = replay.run(&sub, |_| {}).await.unwrap();
    assert_eq!((report.events, report.parked), (2, 0));
    assert!(
        dead.list(Some("rebuilt")).await.unwrap().is_empty(),
        "the rebuild's own clean set of dead letters"
    );
    assert_eq!(support::seen_counts(store.pool(), "rebuilt").await.0, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_works_in_a_process_that_does_not_hold_the_lease() {
    let db = support::TestDb::new().await;
    let mut handles = Vec::new();
    let mut stores = Vec::new();
    for _ in 0..2 {
        let store = db.store("public").await;
        let leases = store.leases();
        let recorder = support::Recorder::new(store.pool(), "shared").await;
        let handle = Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
            .with_config(fast())
            .with_leases(Arc::new(leases.clone()))
            .with(store.transactional(recorder).fenced_by(leases))
            .start();
        // NOTE: the first runner takes the lease before the second starts.
        let deadline = Instant::now() + WAIT;
        while handles.is_empty() && !handle.status().await.unwrap()[0].active {
            assert!(Instant::now() < deadline, "no runner took the lease");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        handles.push(handle);
        stores.push(store);
    }
    let passive = &handles[1];
    for i in 0..5 {
        let position = append(&stores[1], &format!("s{i}"), 1).await;
        tokio::time::timeout(WAIT, passive.wait_for("shared", position, WAIT))
            .await
            .expect("no hang")
            .expect("the passive process sees the holder's checkpoint");
        assert_eq!(
            support::seen_counts(stores[1].pool(), "shared").await.0,
            i + 1
        );
    }
    let status = passive.status().await.unwrap();
    assert!(!status[0].active, "the second process only follows");
    assert_eq!(status[0].handled, 0);
    for h in handles {
        h.shutdown().await;
    }
}

/// Writes each event it applies to `applied`, in the order applied; fails on version 1 of
/// stream `hot` while `poisoned` is set.
#[derive(Debug)]
struct Ordered {
    poisoned: Arc<AtomicBool>,
}

#[cqrs_core::async_trait]
impl PgProjector for Ordered {
    fn name(&self) -> &str {
        "ordered"
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.stream.id == "hot"
            && event.stream_version == 1
            && self.poisoned.load(Ordering::SeqCst)
        {
            return Err("the read model refuses hot v1".into());
        }
        sqlx::query("INSERT INTO applied (stream, version) VALUES ($1, $2)")
            .bind(&event.stream.id)
            .bind(event.stream_version as i64)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// Waits until `runner` runs `subscriber` and has passed `position`.
async fn until_passed(runner: &cqrs_core::RunnerHandle, subscriber: &str, position: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = runner.status().await.unwrap();
        if status
            .iter()
            .any(|s| s.name == subscriber && s.active && s.position >= position)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{subscriber} did not pass {position}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_holds_back_its_stream_across_a_lease_takeover_until_retried() {
    let db = support::TestDb::new().await;
    let poisoned = Arc::new(AtomicBool::new(true));
    let start = |store: PgEventStore| {
        let leases = store.leases();
        let sub = store
            .transactional(Ordered {
                poisoned: poisoned.clone(),
            })
            .fenced_by(leases.clone());
        Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
            .with_config(fast())
            .with_leases(Arc::new(leases))
            .with(sub)
            .start()
    };
    let first = db.store("public").await;
    sqlx::query("CREATE TABLE applied (seq BIGSERIAL PRIMARY KEY, stream TEXT, version BIGINT)")
        .execute(first.pool())
        .await
        .unwrap();
    let applied = |stream: &'static str| {
        let pool = first.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT version FROM applied WHERE stream = $1 ORDER BY seq",
            )
            .bind(stream)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    let letters = || async {
        first
            .dead_letters()
            .list(Some("ordered"))
            .await
            .unwrap()
            .into_iter()
            .map(|l| (l.event.stream.id, l.event.stream_version, l.status))
            .collect::<Vec<_>>()
    };
    let runner = start(first.clone());
    append(&first, "hot", 2).await;
    let head = append(&first, "cold", 1).await;
    until_passed(&runner, "ordered", head).await;
    let hot = |v, s| ("hot".to_owned(), v, s);
    assert_eq!(
        letters().await,
        [
            hot(1, DeadLetterStatus::Parked),
            hot(2, DeadLetterStatus::Held)
        ]
    );
    assert_eq!(
        (applied("hot").await, applied("cold").await),
        (vec![], vec![1])
    );
    assert_eq!(runner.status().await.unwrap()[0].blocked_streams, 1);
    runner.shutdown().await;

    // Another process takes over: it learns the held-back stream from the store.
    let second = db.store("public").await;
    let runner = start(second.clone());
    let head = append(&second, "hot", 1).await;
    until_passed(&runner, "ordered", head).await;
    assert_eq!(
        letters().await,
        [
            hot(1, DeadLetterStatus::Parked),
            hot(2, DeadLetterStatus::Held),
            hot(3, DeadLetterStatus::Held)
        ]
    );

    // Retried once fixed: the parked event, then the held ones, each once and in order.
    poisoned.store(false, Ordering::SeqCst);
    let list = second.dead_letters().list(Some("ordered")).await.unwrap();
    second
        .dead_letters()
        .set_status(list[0].id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while !letters().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "stream not released: {:?}",
            letters().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(applied("hot").await, [1, 2, 3]);
    assert_eq!(runner.status().await.unwrap()[0].blocked_streams, 0);
    let next = append(&second, "hot", 1).await;
    runner.wait_for("ordered", next, WAIT).await.unwrap();
    assert_eq!(applied("hot").await, [1, 2, 3, 4]);
    runner.shutdown().await;
}
