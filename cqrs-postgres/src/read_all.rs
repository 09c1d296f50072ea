//! The all-stream: gap-safe reads below the watermark (guarantee 2), the head, cursors and
//! wake-ups.

use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{AllStreamReader, Cursor, RecordedEvent, Result, WakeUps};
use futures_util::TryStreamExt;

use crate::error::backend;
use crate::event_store::PgEventStore;
use crate::rows::{EventRow, to_i64, to_u64};
use crate::sql::{CURSOR_OF, HEAD_POSITION, HELD_BACK, READ_ALL};

/// Pauses of a read that finds committed events held back by an older transaction still in
/// flight (about 0.2 s in all): long enough for ordinary transactions to end, short enough not to
/// stall a subscriber behind a long one, which it finds again on its next read.
const HOLD_BACK_WAITS: [Duration; 8] = {
    const fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }
    [ms(1), ms(2), ms(4), ms(8), ms(16), ms(32), ms(64), ms(64)]
};

/// The most events `read_all` makes room for before its rows arrive (a larger batch grows).
const READ_ALL_PRESIZE: usize = 10_000;

impl PgEventStore {
    /// Whether committed events after the cursor wait below the watermark.
    async fn held_back(&self, tx: i64, position: i64) -> Result<bool> {
        sqlx::query_scalar(HELD_BACK)
            .bind(tx)
            .bind(position)
            .fetch_one(&self.db.inner.pool)
            .await
            .map_err(backend)
    }
}

#[async_trait]
impl AllStreamReader for PgEventStore {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        let (tx, position) = (
            to_i64(after.tx, "cursor transaction id")?,
            to_i64(after.position, "cursor position")?,
        );
        let mut waits = HOLD_BACK_WAITS.iter();
        loop {
            // NOTE: each row becomes its event as it arrives, into a vector sized once, at the
            // first row: a batch is neither held twice nor grown by copying, and an empty read
            // (a live subscriber at the tail, most of the time) allocates nothing.
            let mut rows = sqlx::query_as::<_, EventRow>(READ_ALL)
                .bind(tx)
                .bind(position)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch(&self.db.inner.pool);
            let mut events = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(backend)? {
                if events.is_empty() {
                    events.reserve_exact(limit.min(READ_ALL_PRESIZE));
                }
                events.push(row.into_recorded_lenient()?);
            }
            drop(rows);
            // NOTE: at the tail, committed events may be held back by a transaction that began
            // before them and ends in a moment (any writer of the database): rather than leave
            // them to the next wake-up or poll, wait a little for it. Only an empty read waits,
            // so a subscriber that has events to handle is never slowed down.
            if events.is_empty()
                && let Some(wait) = waits.next()
                && self.held_back(tx, position).await?
            {
                tokio::time::sleep(*wait).await;
                continue;
            }
            return Ok(events);
        }
    }

    async fn head_position(&self) -> Result<u64> {
        let head: Option<i64> = sqlx::query_scalar(HEAD_POSITION)
            .fetch_one(&self.db.inner.pool)
            .await
            .map_err(backend)?;
        Ok(head.map_or(0, to_u64))
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        let mut waits = HOLD_BACK_WAITS.iter();
        loop {
            let row: Option<(i64, bool)> = sqlx::query_as(CURSOR_OF)
                .bind(to_i64(position, "position")?)
                .fetch_optional(&self.db.inner.pool)
                .await
                .map_err(backend)?;
            match row {
                None => return Ok(None),
                Some((tx, true)) => return Ok(Some(Cursor::new(to_u64(tx), position))),
                Some((_, false)) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Ok(None),
                },
            }
        }
    }

    fn wake_ups(&self) -> WakeUps {
        self.db.inner.notifier.subscribe()
    }
}
