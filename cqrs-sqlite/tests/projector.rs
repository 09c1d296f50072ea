//! Transactional projectors: the read model and the checkpoint commit together or not at all.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::{
    AllStreamReader, BoxError, Cursor, EventAppender, EventStore, ExpectedVersion, NewEvent,
    RecordedEvent, Replay, Runner, RunnerConfig, RunnerHandle, StreamId, StreamReaderExt,
    Subscriber,
};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;
use support::balances::{Totals, expected_totals, totals};
use support::{CounterEvent, file_db};

/// Counts events per stream, fails on a payload with `"fail": true`, and counts its setups.
#[derive(Debug, Default)]
struct Strict {
    setups: AtomicUsize,
}

#[async_trait::async_trait]
impl SqliteProjector for Strict {
    fn name(&self) -> &str {
        "strict"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        self.setups.fetch_add(1, Ordering::SeqCst);
        sqlx::query("CREATE TABLE IF NOT EXISTS seen (position INTEGER PRIMARY KEY)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO seen VALUES (?)")
            .bind(event.position() as i64)
            .execute(&mut *conn)
            .await?;
        if event.payload_value()?["fail"] == json!(true) {
            return Err("refused".into());
        }
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM seen").execute(conn).await?;
        Ok(())
    }
}

async fn seen(db: &SqliteDatabase) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM seen ORDER BY position")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

async fn append(db: &SqliteDatabase, payloads: &[serde_json::Value]) -> Vec<RecordedEvent> {
    let store = db.events();
    let stream = StreamId::new("strict", uuid::Uuid::new_v4().to_string());
    let events = payloads
        .iter()
        .map(|p| NewEvent::new("Noted", p.clone()))
        .collect();
    store
        .append(&stream, ExpectedVersion::NoStream, events, None)
        .await
        .unwrap();
    store.read_stream(&stream, 1, 100).await.unwrap()
}

#[tokio::test]
async fn a_failing_handler_rolls_back_the_batch_and_its_checkpoint() {
    let (_dir, db) = file_db().await;
    let sub = db.transactional(Strict::default());
    let events = append(&db, &[json!({}), json!({ "fail": true }), json!({})]).await;
    let err = sub.process(&events, events[2].cursor).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "refused",
        "the handler's own error comes back"
    );
    assert_eq!(
        seen(&db).await,
        Vec::<i64>::new(),
        "no row of the failed batch is kept"
    );
    assert_eq!(Subscriber::checkpoint(&sub).await.unwrap(), Cursor::START);
    sub.process(&events[..1], events[0].cursor).await.unwrap();
    assert_eq!(seen(&db).await, vec![1]);
    assert_eq!(
        Subscriber::checkpoint(&sub).await.unwrap(),
        events[0].cursor
    );
}

#[tokio::test]
async fn the_checkpoint_never_moves_backwards_and_committed_events_are_not_redone() {
    let db = SqliteDatabase::in_memory().await.unwrap();
    let sub = db.transactional(Strict::default());
    let events = append(&db, &[json!({}), json!({}), json!({}), json!({})]).await;
    sub.process(&events[..2], events[1].cursor).await.unwrap();
    // Another runner handing the same events again (it read them before this commit).
    sub.process(&events[..3], events[2].cursor).await.unwrap();
    assert_eq!(
        seen(&db).await,
        vec![1, 2, 3],
        "events at or before the checkpoint are skipped"
    );
    sub.process(&[], events[0].cursor).await.unwrap();
    assert_eq!(
        Subscriber::checkpoint(&sub).await.unwrap(),
        events[2].cursor,
        "the checkpoint never moves backwards"
    );
    // A parked event retried: handled, checkpoint unchanged.
    sqlx::query("DELETE FROM seen WHERE position = 2")
        .execute(db.pool())
        .await
        .unwrap();
    sub.process(&events[1..2], events[2].cursor).await.unwrap();
    assert_eq!(seen(&db).await, vec![1, 2, 3]);
    assert_eq!(
        Subscriber::checkpoint(&sub).await.unwrap(),
        events[2].cursor
    );
    sub.process(&[], events[3].cursor).await.unwrap();
    assert_eq!(
        Subscriber::checkpoint(&sub).await.unwrap(),
        events[3].cursor,
        "an empty batch moves the checkpoint"
    );
    assert_eq!(
        sub.projector().setups.load(Ordering::SeqCst),
        1,
        "setup runs once"
    );
    Subscriber::reset(&sub).await.unwrap();
    assert_eq!(seen(&db).await, Vec::<i64>::new());
    assert_eq!(Subscriber::checkpoint(&sub).await.unwrap(), Cursor::START);
}

/// A runner with a long poll interval still follows at once: appends wake it.
async fn follows_live(db: SqliteDatabase) {
    let store = Arc::new(db.events());
    let config = RunnerConfig {
        poll_interval: Duration::from_secs(30),
        dead_letter_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with_config(config)
        .with(db.transactional(Totals::default()))
        .start();
    append_each_and_expect_wake_up(&*store, &runner, "live", 20, "the append").await;
    runner.shutdown().await;
    assert_eq!(totals(&db).await, vec![("live".into(), 210, 20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_follow_live_on_a_file() {
    follows_live(file_db().await.1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_follow_live_in_memory() {
    follows_live(SqliteDatabase::in_memory().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_rebuilds_the_same_read_model() {
    let (_dir, db) = file_db().await;
    let store = Arc::new(db.events());
    for i in 1..=300u64 {
        let event =
            NewEvent::from_domain(&CounterEvent::Added { n: i }, Default::default()).unwrap();
        let stream = StreamId::new("counter", format!("r{}", i % 7));
        store
            .append(&stream, ExpectedVersion::Any, vec![event], None)
            .await
            .unwrap();
    }
    let sub = db.transactional(Totals::default());
    let runner = Runner::new(store.clone(), Arc::new(db.dead_letters()))
        .with(db.transactional(Totals::default()))
        .start();
    runner
        .wait_for("totals", 300, Duration::from_secs(10))
        .await
        .unwrap();
    runner.shutdown().await;
    let live = totals(&db).await;
    let log = store.read_all(Cursor::START, 1000).await.unwrap();
    assert_eq!(live, expected_totals(&log, 300));
    let report = Replay::new(store.clone(), Arc::new(db.dead_letters()))
        .with_config(RunnerConfig {
            batch_size: 64,
            ..Default::default()
        })
        .run(&sub, |_| {})
        .await
        .unwrap();
    assert_eq!((report.events, report.parked), (300, 0));
    assert_eq!(
        totals(&db).await,
        live,
        "the replay gives the live read model"
    );
}

/// Fails on `"fail": true` payloads until told otherwise.
#[derive(Debug, Default)]
struct Picky {
    fixed: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl SqliteProjector for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS picked (position INTEGER PRIMARY KEY)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        if event.payload_value()?["fail"] == json!(true) && !self.fixed.load(Ordering::SeqCst) {
            return Err("not yet".into());
        }
        sqlx::query("INSERT INTO picked VALUES (?)")
            .bind(event.position() as i64)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM picked").execute(conn).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_holds_back_its_stream_until_retried_then_all_apply_once_in_order() {
    use cqrs_core::{DeadLetterStatus, DeadLetterStore};
    let (_dir, db) = file_db().await;
    let picky = Arc::new(Picky::default());
    let config = RunnerConfig {
        max_attempts: 2,
        backoff: Duration::from_millis(1),
        dead_letter_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with_config(config)
        .with(db.transactional(picky.clone()))
        .start();
    let events = append(&db, &[json!({}), json!({ "fail": true }), json!({})]).await;
    let held = runner
        .wait_for("picky", events[2].position(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(held, cqrs_core::Error::Parked { .. }), "{held:?}");
    // NOTE: rowid order is the order the rows were written in.
    let picked = || async {
        sqlx::query_scalar::<_, i64>("SELECT position FROM picked ORDER BY rowid")
            .fetch_all(db.pool())
            .await
            .unwrap()
    };
    assert_eq!(
        picked().await,
        vec![1],
        "the stream waits behind the parked event"
    );
    let letters = db.dead_letters().list(Some("picky")).await.unwrap();
    let seen: Vec<_> = letters
        .iter()
        .map(|l| (l.event.stream_version, l.status))
        .collect();
    assert_eq!(
        seen,
        [(2, DeadLetterStatus::Parked), (3, DeadLetterStatus::Held)]
    );
    assert_eq!(letters[0].error, "not yet");
    assert!(
        letters[1]
            .error
            .contains(&letters[0].event.event_id.to_string()),
        "a held letter names the event it waits behind: {}",
        letters[1].error
    );

    picky.fixed.store(true, Ordering::SeqCst);
    db.dead_letters()
        .set_status(letters[0].id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !db
        .dead_letters()
        .list(Some("picky"))
        .await
        .unwrap()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the retried dead letter is handled and removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    runner.shutdown().await;
    assert_eq!(picked().await, vec![1, 2, 3], "once each, in order");
    let checkpoint = db
        .transactional(Picky::default())
        .checkpoint()
        .await
        .unwrap();
    assert_eq!(
        checkpoint, events[2].cursor,
        "the retry leaves the checkpoint where it was"
    );
}

/// Appends through another handle on the same file (another process, in real life) wake the
/// subscribers too, within the watch interval rather than the poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_wake_for_appends_of_another_handle() {
    let (dir, db) = file_db().await;
    let other = SqliteDatabase::open_path(dir.path().join("test.db"), Default::default())
        .await
        .unwrap();
    let config = RunnerConfig {
        poll_interval: Duration::from_secs(30),
        dead_letter_interval: Duration::from_secs(30),
        ..Default::default()
    };
    let runner = Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
        .with_config(config)
        .with(db.transactional(Totals::default()))
        .start();
    let store = other.events();
    append_each_and_expect_wake_up(&store, &runner, "elsewhere", 5, "the watcher").await;
    runner.shutdown().await;
    assert_eq!(totals(&db).await, vec![("elsewhere".into(), 15, 5)]);
    db.close().await;
    other.close().await;
}

/// Appends `Added { n }` for n in 1..=count to `counter-<stream>`, one at a time, and checks that
/// `totals` handles each within 5 s: far below the 30 s poll interval, so woken by `by`.
async fn append_each_and_expect_wake_up(
    store: &dyn EventStore,
    runner: &RunnerHandle,
    stream: &str,
    count: u64,
    by: &str,
) {
    for i in 1..=count {
        let event =
            NewEvent::from_domain(&CounterEvent::Added { n: i }, Default::default()).unwrap();
        let started = Instant::now();
        let out = store
            .append(
                &StreamId::new("counter", stream),
                ExpectedVersion::Any,
                vec![event],
                None,
            )
            .await
            .unwrap();
        runner
            .wait_for("totals", out.position, Duration::from_secs(20))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "woken by {by}, not by polling"
        );
    }
}
