//! Leases between processes sharing a database file: one holder per name, freed when its
//! holder dies, and runners that take turns without applying an event twice.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{
    AllStreamReader, BoxError, EventAppender, ExpectedVersion, Leases, NewEvent, RecordedEvent,
    Runner, RunnerConfig, StreamId,
};
use cqrs_sqlite::{SqliteConfig, SqliteDatabase, SqliteProjector};
use serde_json::json;
use sqlx::SqliteConnection;
use support::file_db;

#[tokio::test]
async fn one_holder_per_name_and_a_dropped_lease_is_free_again() {
    let (dir, db) = file_db().await;
    let leases = db.leases().expect("a file database has leases");
    // Another handle on the same file, as another process would open it.
    let other = SqliteDatabase::open_path(dir.path().join("test.db"), SqliteConfig::default())
        .await
        .unwrap()
        .leases()
        .unwrap();

    let mut first = leases.try_acquire("accounts").await.unwrap().expect("free");
    assert!(other.try_acquire("accounts").await.unwrap().is_none());
    assert!(leases.try_acquire("accounts").await.unwrap().is_none());
    assert!(
        other.try_acquire("transfers").await.unwrap().is_some(),
        "names are independent"
    );
    assert!(first.renew().await.unwrap());

    drop(first);
    assert!(other.try_acquire("accounts").await.unwrap().is_some());
    assert!(
        SqliteDatabase::in_memory()
            .await
            .unwrap()
            .leases()
            .is_none(),
        "an in-memory database belongs to one process"
    );
}

#[tokio::test]
async fn a_lease_held_by_a_killed_process_is_free_at_once() {
    let (_dir, db) = file_db().await;
    let leases = db.leases().unwrap();
    let file = leases.lock_file("accounts");
    // NOTE: flock(1) takes the same kind of lock (flock(2)) in another process; `--close`
    // keeps it out of the `cat` it runs, so that killing flock(1) is killing the holder (and
    // `cat` ends when the test drops its input).
    let mut holder = std::process::Command::new("flock")
        .arg("--close")
        .arg(&file)
        .arg("cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("flock(1) runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while leases.try_acquire("accounts").await.unwrap().is_some() {
        assert!(
            Instant::now() < deadline,
            "the other process never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    drop(holder.stdin.take());
    assert!(
        leases.try_acquire("accounts").await.unwrap().is_some(),
        "freed with the process"
    );
}

#[tokio::test]
async fn a_lease_whose_lock_file_was_removed_is_lost() {
    let (_dir, db) = file_db().await;
    let leases = db.leases().unwrap();
    let mut lease = leases.try_acquire("accounts").await.unwrap().unwrap();
    std::fs::remove_file(leases.lock_file("accounts")).unwrap();
    assert!(
        leases.try_acquire("accounts").await.unwrap().is_some(),
        "a new lock file is free"
    );
    assert!(!lease.renew().await.unwrap(), "the old holder learns it");
}

/// Records which runner handled each event (no key: an event applied twice shows twice).
#[derive(Debug)]
struct Hits(&'static str);

#[async_trait::async_trait]
impl SqliteProjector for Hits {
    fn name(&self) -> &str {
        "hits"
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS hits (position INTEGER NOT NULL, runner TEXT NOT NULL)",
        )
        .execute(conn)
        .await?;
        Ok(())
    }
    async fn handle(&self, conn: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO hits VALUES (?, ?)")
            .bind(e.position() as i64)
            .bind(self.0)
            .execute(conn)
            .await?;
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM hits").execute(conn).await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_with_leases_take_turns_and_apply_each_event_once() {
    let (dir, db) = file_db().await;
    let other = SqliteDatabase::open_path(dir.path().join("test.db"), SqliteConfig::default())
        .await
        .unwrap();
    let config = RunnerConfig {
        batch_size: 7,
        lease_interval: Duration::from_millis(50),
        ..RunnerConfig::default()
    };
    let start = |db: &SqliteDatabase, who: &'static str| {
        Runner::new(Arc::new(db.events()), Arc::new(db.dead_letters()))
            .with_config(config.clone())
            .with_leases(Arc::new(db.leases().unwrap()))
            .with(db.transactional(Hits(who)))
            .start()
    };
    let append = |n: u64| {
        let store = db.events();
        async move {
            let mut last = 0;
            for v in 0..n {
                let e = NewEvent::new("Noted", json!({ "v": v }));
                let stream = StreamId::new("demo", format!("s{}", v % 3));
                last = store
                    .append(&stream, ExpectedVersion::Any, vec![e], None)
                    .await
                    .unwrap()
                    .position;
            }
            last
        }
    };

    let a = start(&db, "a");
    let b = start(&other, "b");
    let head = append(200).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let active = loop {
        let sa = a.status().await.unwrap().remove(0);
        let sb = b.status().await.unwrap().remove(0);
        if sa.position.max(sb.position) >= head {
            break [sa.active, sb.active];
        }
        assert!(Instant::now() < deadline, "not caught up: {sa:?} {sb:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        active.iter().filter(|x| **x).count(),
        1,
        "one runner holds the lease: {active:?}"
    );

    // The holder stops; the other takes over and goes on from the checkpoint.
    let (holder, stand_by) = if active[0] { (a, b) } else { (b, a) };
    holder.shutdown().await;
    let head = append(100).await;
    stand_by
        .wait_for("hits", head, Duration::from_secs(20))
        .await
        .unwrap();

    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT position), COUNT(DISTINCT runner) FROM hits",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert_eq!(
        counts,
        (300, 300, 2),
        "each event once, by both runners in turn"
    );
    stand_by.shutdown().await;
}

#[tokio::test]
async fn a_holder_whose_lease_was_lost_cannot_commit() {
    let (dir, db) = file_db().await;
    let other = SqliteDatabase::open_path(dir.path().join("test.db"), SqliteConfig::default())
        .await
        .unwrap();
    let store = db.events();
    for v in 0..2 {
        let e = NewEvent::new("Noted", json!({ "v": v }));
        store
            .append(
                &StreamId::new("demo", "1"),
                ExpectedVersion::Any,
                vec![e],
                None,
            )
            .await
            .unwrap();
    }
    let events = store.read_all(cqrs_core::Cursor::START, 10).await.unwrap();
    let leases = db.leases().unwrap();
    let sub = db.transactional(Hits("a")).fenced_by(leases.clone());
    let err = cqrs_core::Subscriber::process(&sub, &events[..1], events[0].cursor)
        .await
        .expect_err("no lease, no commit");
    assert!(cqrs_core::is_fenced_out(&*err), "{err}");

    let lease = leases.try_acquire("hits").await.unwrap().expect("free");
    cqrs_core::Subscriber::process(&sub, &events[..1], events[0].cursor)
        .await
        .expect("the holder commits");
    // The lock file replaced by hand; another process takes the new one.
    std::fs::remove_file(leases.lock_file("hits")).unwrap();
    let _theirs = other
        .leases()
        .unwrap()
        .try_acquire("hits")
        .await
        .unwrap()
        .expect("a new lock file is free");
    let err = cqrs_core::Subscriber::process(&sub, &events[1..], events[1].cursor)
        .await
        .expect_err("a stale holder is fenced out");
    assert!(cqrs_core::is_fenced_out(&*err), "{err}");
    assert_eq!(
        cqrs_core::Subscriber::checkpoint(&sub).await.unwrap(),
        events[0].cursor,
        "nothing of it was committed"
    );
    let hits: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hits")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(hits, 1);
    drop(lease);
}
