//! Dead letters of a transactional projector on SQLite: a retried letter is removed in the
//! transaction that applies it; a park repeated keeps one letter; a replay starts without old
//! letters; and a process that does not hold a subscriber's lease still sees it move.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_core::{
    BoxError, DeadLetter, DeadLetterStatus, DeadLetterStore, Error, EventAppender, ExpectedVersion,
    NewEvent, RecordedEvent, Replay, Runner, RunnerConfig, StreamId,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase, SqliteDeadLetterStore, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;
use support::file_db;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(10);

fn fast() -> RunnerConfig {
    RunnerConfig {
        max_attempts: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        dead_letter_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(50),
        lease_interval: Duration::from_millis(50),
        ..RunnerConfig::default()
    }
}

/// Records each event it handles (no key: an event applied twice shows twice); fails while
/// `fail` is set.
#[derive(Debug, Default)]
struct Hits {
    fail: AtomicBool,
}

#[async_trait::async_trait]
impl SqliteProjector for Hits {
    fn name(&self) -> &str {
        "hits"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS hits (position INTEGER NOT NULL)")
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn handle(&self, conn: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err("the read model refuses it".into());
        }
        sqlx::query("INSERT INTO hits VALUES (?)")
            .bind(e.position() as i64)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM hits").execute(conn).await?;
        Ok(())
    }
}

async fn hits(db: &SqliteDatabase) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM hits")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn append(db: &SqliteDatabase, stream: &str) -> u64 {
    let e = NewEvent::new("Noted", json!({}));
    db.events()
        .append(
            &StreamId::new("demo", stream),
            ExpectedVersion::Any,
            vec![e],
            None,
        )
        .await
        .unwrap()
        .position
}

/// The database's dead letters, except that removing one fails (as a crash would, between the
/// commit of the read model and the removal).
#[derive(Debug)]
struct RemoveFails(SqliteDeadLetterStore);

#[async_trait::async_trait]
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
        Err(Error::backend("crashed before the removal"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_letter_is_removed_with_the_effect_and_applied_once() {
    let (_dir, db) = file_db().await;
    let dead = db.dead_letters();
    let hits_model = Arc::new(Hits::default());
    hits_model.fail.store(true, Ordering::SeqCst);
    let runner = Runner::new(Arc::new(db.events()), Arc::new(RemoveFails(dead.clone())))
        .with_config(fast())
        .with(db.transactional(hits_model.clone()))
        .start();
    let position = append(&db, "1").await;
    match runner.wait_for("hits", position, WAIT).await {
        Err(Error::Parked { error, .. }) => assert!(error.contains("refuses"), "{error}"),
        other => panic!("expected the event parked, got {other:?}"),
    }
    let letters = dead.list(None).await.unwrap();
    assert_eq!(letters.len(), 1);

    hits_model.fail.store(false, Ordering::SeqCst);
    dead.set_status(letters[0].id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dead.list(None).await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the letter stays: {:?}",
            dead.list(None).await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits(&db).await, 1, "the retried event applied once");
    runner.wait_for("hits", position, WAIT).await.unwrap();
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_park_repeated_keeps_one_letter_and_a_replay_starts_without_old_ones() {
    let (_dir, db) = file_db().await;
    let dead = db.dead_letters();
    let model = Arc::new(Hits::default());
    model.fail.store(true, Ordering::SeqCst);
    append(&db, "1").await;
    append(&db, "1").await;
    let sub = db.transactional(model.clone());
    let replay = Replay::new(Arc::new(db.events()), Arc::new(dead.clone())).with_config(fast());
    assert_eq!(replay.run(&sub, |_| {}).await.unwrap().parked, 2);
    let letters = dead.list(None).await.unwrap();
    assert_eq!(letters.len(), 2);

    let again = DeadLetter {
        id: Uuid::new_v4(),
        error: "again".into(),
        attempts: 9,
        ..letters[0].clone()
    };
    dead.park(again).await.unwrap();
    let now = dead.list(None).await.unwrap();
    assert_eq!(now.len(), 2, "one letter per subscriber and event");
    assert_eq!(
        (now[0].id, now[0].attempts, now[0].error.as_str()),
        (letters[0].id, 9, "again")
    );

    model.fail.store(false, Ordering::SeqCst);
    let report = replay.run(&sub, |_| {}).await.unwrap();
    assert_eq!((report.events, report.parked), (2, 0));
    assert!(
        dead.list(None).await.unwrap().is_empty(),
        "the rebuild's own clean set of dead letters"
    );
    assert_eq!(hits(&db).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_works_in_a_process_that_does_not_hold_the_lease() {
    let (dir, db) = file_db().await;
    let other = SqliteDatabase::open_path(dir.path().join("test.db"), SqliteConfig::default())
        .await
        .unwrap();
    let start = |db: &SqliteDatabase| {
        let leases = db.leases().unwrap();
        Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
            .with_config(fast())
            .with_leases(Arc::new(leases.clone()))
            .with(db.transactional(Hits::default()).fenced_by(leases))
            .start()
    };
    let holder = start(&db);
    let deadline = Instant::now() + WAIT;
    while !holder.status().await.unwrap()[0].active {
        assert!(Instant::now() < deadline, "no runner took the lease");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let passive = start(&other);
    for i in 0..5 {
        let position = append(&other, &format!("s{i}")).await;
        tokio::time::timeout(WAIT, passive.wait_for("hits", position, WAIT))
            .await
            .expect("no hang")
            .expect("the passive process sees the holder's checkpoint");
        assert_eq!(hits(&other).await, i + 1);
    }
    let status = passive.status().await.unwrap();
    assert!(!status[0].active, "the second process only follows");
    assert_eq!(status[0].handled, 0);
    passive.shutdown().await;
    holder.shutdown().await;
}
