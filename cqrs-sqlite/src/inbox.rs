//! Inboxes for transactional projectors: events from a broker take effect once.

use async_trait::async_trait;
use cqrs_core::{BoxError, InboxSubscriber, RecordedEvent};

use crate::error::{Failure, retry_busy};
use crate::projector::{SqliteProjector, SqliteTransactional, unwrap_handler};

#[async_trait]
impl<P: SqliteProjector> InboxSubscriber for SqliteTransactional<P> {
    fn name(&self) -> &str {
        self.projector().name()
    }

    /// Records the event id in the `inbox` table and runs the handler, in one write
    /// transaction; an id already there rolls back and returns `false`.
    async fn handle_once(&self, event: &RecordedEvent) -> Result<bool, BoxError> {
        SqliteTransactional::setup(self).await?;
        let name = self.projector().name();
        let db = self.database();
        retry_busy!(&db.inner.config, async {
            let mut tx = db.inner.writer.begin_with("BEGIN IMMEDIATE").await?;
            let inserted = sqlx::query(
                "INSERT INTO inbox (subscriber, event_id, received_at) VALUES (?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(event.event_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            self.projector()
                .handle(&mut tx, event)
                .await
                .map_err(|e| self.handler_error(e))?;
            tx.commit().await?;
            Ok::<bool, Failure>(true)
        })
        .map_err(unwrap_handler)
    }
}
