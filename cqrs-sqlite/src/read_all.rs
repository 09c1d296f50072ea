//! The all-stream: every event by position, which follows commit order under the one write lock.

use async_trait::async_trait;
use cqrs_core::{AllStreamReader, Cursor, Error, RecordedEvent, Result, WakeUps};

use crate::error::{Failure, retry_busy, to_u64};
use crate::event_store::{SqliteEventStore, capped};
use crate::rows::event_from_row;
use crate::sql::{HEAD_POSITION, POSITION_EXISTS, READ_ALL};

#[async_trait]
impl AllStreamReader for SqliteEventStore {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        let after = capped(after.position);
        if let Some(raw) = &self.db.inner.raw {
            return retry_busy!(&self.db.inner.config, async {
                let raw = raw.clone();
                let limit = capped(limit as u64);
                tokio::task::spawn_blocking(move || raw.read_all(after, limit))
                    .await
                    .map_err(|e| Failure::Core(Error::backend(e)))?
                    .map_err(Failure::Raw)
            })?;
        }
        let rows = self
            .read(READ_ALL, |q| q.bind(after).bind(capped(limit as u64)))
            .await?;
        // NOTE: the events before a corrupt row are handed out, so that subscribers stop right
        // before it; the next read starts at the corrupt row and reports it.
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match event_from_row(row) {
                Ok(e) => out.push(e),
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        Ok(out)
    }

    async fn head_position(&self) -> Result<u64> {
        let reader = &self.db.inner.reader;
        let head: i64 = retry_busy!(&self.db.inner.config, async {
            Ok(sqlx::query_scalar(HEAD_POSITION).fetch_one(reader).await?)
        })?;
        Ok(to_u64(head).unwrap_or(0))
    }

    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        let Ok(p) = i64::try_from(position) else {
            return Ok(None);
        };
        let reader = &self.db.inner.reader;
        let found: Option<i64> = retry_busy!(&self.db.inner.config, async {
            Ok(sqlx::query_scalar(POSITION_EXISTS)
                .bind(p)
                .fetch_optional(reader)
                .await?)
        })?;
        Ok(found.map(|_| Cursor::new(0, position)))
    }

    fn wake_ups(&self) -> WakeUps {
        self.db.inner.wake.subscribe()
    }
}
