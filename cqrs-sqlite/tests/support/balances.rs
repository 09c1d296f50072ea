//! A transactional read model of counters: per stream, the total and the number of events.

use std::time::Duration;

use cqrs_core::{BoxError, RecordedEvent};
use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
use sqlx::SqliteConnection;

use super::CounterEvent;

/// Totals per counter, in the table `totals`.
#[derive(Debug, Default)]
pub struct Totals {
    /// A pause per event, to keep the projector behind the writers.
    pub delay: Duration,
}

#[async_trait::async_trait]
impl SqliteProjector for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS totals (stream_id TEXT PRIMARY KEY, total INTEGER NOT NULL, events INTEGER NOT NULL)",
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        let CounterEvent::Added { n } = event.decode::<CounterEvent>()?.payload;
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        sqlx::query(
            "INSERT INTO totals VALUES (?, ?, 1) \
             ON CONFLICT (stream_id) DO UPDATE SET total = total + excluded.total, events = events + 1",
        )
        .bind(&event.stream.id)
        .bind(n as i64)
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM totals").execute(conn).await?;
        Ok(())
    }
}

/// The read model: (stream id, total, events), by stream id.
pub async fn totals(db: &SqliteDatabase) -> Vec<(String, i64, i64)> {
    sqlx::query_as("SELECT stream_id, total, events FROM totals ORDER BY stream_id")
        .fetch_all(db.pool())
        .await
        .unwrap()
}

/// What the read model must hold after the events of `log` up to `position`.
pub fn expected_totals(log: &[RecordedEvent], position: u64) -> Vec<(String, i64, i64)> {
    let mut map = std::collections::BTreeMap::<String, (i64, i64)>::new();
    for e in log.iter().filter(|e| e.position() <= position) {
        let CounterEvent::Added { n } = e.decode::<CounterEvent>().unwrap().payload;
        let entry = map.entry(e.stream.id.clone()).or_default();
        entry.0 += n as i64;
        entry.1 += 1;
    }
    map.into_iter().map(|(k, (t, n))| (k, t, n)).collect()
}
