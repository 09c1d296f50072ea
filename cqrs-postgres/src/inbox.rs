//! Inboxes for transactional projectors: events from a broker take effect once.

use async_trait::async_trait;
use cqrs_core::{BoxError, InboxSubscriber, RecordedEvent};

use crate::projector::{PgProjector, PgTransactional};

#[async_trait]
impl<P: PgProjector> InboxSubscriber for PgTransactional<P> {
    fn name(&self) -> &str {
        self.projector().name()
    }

    /// Records the event id in the `inbox` table and runs the handler, in one transaction; an
    /// id already there rolls back and returns `false`.
    ///
    /// NOTE: a delivery racing another of the same id waits on the key until that one ends:
    /// if it committed, this one does nothing; if it rolled back, this one handles the event.
    async fn handle_once(&self, event: &RecordedEvent) -> Result<bool, BoxError> {
        self.setup().await?;
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO inbox (subscriber, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(self.projector().name())
        .bind(event.event_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        self.projector().handle(&mut tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }
}
