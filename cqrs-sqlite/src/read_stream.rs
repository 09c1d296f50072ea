//! Reading one stream: its events of a range of versions and its version, in one statement.

use std::ops::RangeInclusive;

use async_trait::async_trait;
use cqrs_core::{Result, StreamId, StreamItem, StreamReader, StreamSink};

use crate::error::{Failure, retry_busy, to_u64};
use crate::event_store::{SqliteEventStore, capped};
use crate::rows::stream_event_from_row;
use crate::sql::READ_STREAM;

#[async_trait]
impl StreamReader for SqliteEventStore {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        let (from, to) = (capped(*versions.start()), capped(*versions.end()));
        if let Some(raw) = &self.db.inner.raw {
            let (head, events) = retry_busy!(&self.db.inner.config, async {
                let (raw, stream) = (raw.clone(), stream.clone());
                tokio::task::spawn_blocking(move || raw.read_stream(&stream, from, to))
                    .await
                    .map_err(|e| Failure::Core(cqrs_core::Error::backend(e)))?
                    .map_err(Failure::Raw)
            })??;
            sink(StreamItem::Version(head))?;
            for event in events {
                sink(StreamItem::Event(event))?;
            }
            return Ok(head);
        }
        let rows = self
            .read(READ_STREAM, |q| {
                q.bind(stream.category.clone())
                    .bind(stream.id.clone())
                    .bind(from)
                    .bind(to)
            })
            .await?;
        let head = match rows.first() {
            Some(row) => {
                to_u64(sqlx::Row::try_get(row, 0).map_err(cqrs_core::Error::backend)?).unwrap_or(0)
            }
            None => 0,
        };
        sink(StreamItem::Version(head))?;
        for row in &rows {
            if let Some(event) = stream_event_from_row(stream, row)? {
                sink(StreamItem::Event(event))?;
            }
        }
        Ok(head)
    }
}
