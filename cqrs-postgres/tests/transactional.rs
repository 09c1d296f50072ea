//! `PgTransactional` on its own: the read model and the checkpoint commit or roll back
//! together, the checkpoint never moves backwards, and a reset clears both.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};

use cqrs_core::testkit::conformance::sample_event;
use cqrs_core::{
    BoxError, Cursor, EventAppender, ExpectedVersion, RecordedEvent, StreamId, StreamReaderExt,
    Subscriber,
};
use cqrs_postgres::PgProjector;
use cqrs_postgres::sqlx::{self, PgConnection};

/// Records events, then fails after writing while `fail` is set.
#[derive(Debug, Default)]
struct Flaky {
    fail: AtomicBool,
}

#[cqrs_core::async_trait]
impl PgProjector for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        sqlx::query("INSERT INTO flaky (event_id) VALUES ($1)")
            .bind(event.event_id)
            .execute(&mut *tx)
            .await?;
        if self.fail.load(Ordering::SeqCst) {
            return Err("handler failed after writing".into());
        }
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM flaky").execute(tx).await?;
        Ok(())
    }
}

async fn rows(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM flaky")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_and_checkpoint_commit_together() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    sqlx::query("CREATE TABLE flaky (event_id UUID PRIMARY KEY)")
        .execute(store.pool())
        .await
        .unwrap();
    store
        .append(
            &StreamId::new("t", "1"),
            ExpectedVersion::Any,
            (0..4).map(sample_event).collect(),
            None,
        )
        .await
        .unwrap();
    let events = store
        .read_stream(&StreamId::new("t", "1"), 1, 10)
        .await
        .unwrap();
    let sub = store.transactional(Flaky::default());
    assert_eq!(sub.checkpoint().await.unwrap(), Cursor::START);

    sub.process(&events[..2], events[1].cursor).await.unwrap();
    assert_eq!(
        (rows(store.pool()).await, sub.checkpoint().await.unwrap()),
        (2, events[1].cursor)
    );

    sub.projector().fail.store(true, Ordering::SeqCst);
    assert!(sub.process(&events[2..], events[3].cursor).await.is_err());
    assert_eq!(
        (rows(store.pool()).await, sub.checkpoint().await.unwrap()),
        (2, events[1].cursor),
        "a failed batch leaves neither rows nor checkpoint"
    );
    sub.projector().fail.store(false, Ordering::SeqCst);

    // The runner hands a parked event back at the current checkpoint, or moves the cursor alone.
    sub.process(&events[2..], events[3].cursor).await.unwrap();
    sub.process(&[], events[1].cursor).await.unwrap();
    assert_eq!(
        sub.checkpoint().await.unwrap(),
        events[3].cursor,
        "the checkpoint never moves backwards"
    );
    sqlx::query("DELETE FROM flaky WHERE event_id = $1")
        .bind(events[0].event_id)
        .execute(store.pool())
        .await
        .unwrap();
    sub.process(&events[..1], events[3].cursor).await.unwrap();
    assert_eq!(
        (rows(store.pool()).await, sub.checkpoint().await.unwrap()),
        (4, events[3].cursor)
    );

    sub.reset().await.unwrap();
    assert_eq!(
        (rows(store.pool()).await, sub.checkpoint().await.unwrap()),
        (0, Cursor::START),
        "reset clears both"
    );
}
