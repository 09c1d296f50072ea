//! Reading one stream: the events of a range of versions and the stream's version, in one
//! statement whose rows are handed over as they arrive.

use std::ops::RangeInclusive;

use async_trait::async_trait;
use cqrs_core::{Result, StreamId, StreamItem, StreamReader, StreamSink};
use futures_util::TryStreamExt;
use sqlx::Row;

use crate::error::backend;
use crate::event_store::PgEventStore;
use crate::rows::{stream_event, to_u64};
use crate::sql::{READ_SHORT_RANGE, READ_STREAM, SHORT_RANGE, STREAM_VERSION};

/// A version as a `BIGINT` parameter, capped at the largest one (a range "to the end").
fn capped(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl StreamReader for PgEventStore {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        let pool = &self.db.inner.pool;
        let (from, to) = (capped(*versions.start()), capped(*versions.end()));
        let mut head = None;
        if from <= to {
            // NOTE: each row becomes its event as it arrives and goes to the sink at once (a load
            // decodes it straight from the payload's text), while the server sends the next.
            let sql = if to - from < SHORT_RANGE {
                READ_SHORT_RANGE
            } else {
                READ_STREAM
            };
            let mut rows = sqlx::query(sql)
                .bind(&stream.category)
                .bind(&stream.id)
                .bind(from)
                .bind(to)
                .fetch(pool);
            while let Some(row) = rows.try_next().await.map_err(backend)? {
                if head.is_none() {
                    let version = to_u64(row.try_get(0).map_err(backend)?);
                    head = Some(version);
                    sink(StreamItem::Version(version))?;
                }
                if let Some(event) = stream_event(stream, &row)? {
                    sink(StreamItem::Event(event))?;
                }
            }
        }
        if let Some(head) = head {
            return Ok(head);
        }
        // An empty range, or a long one with none of its events stored: the version alone.
        let version: i64 = sqlx::query_scalar(STREAM_VERSION)
            .bind(&stream.category)
            .bind(&stream.id)
            .fetch_one(pool)
            .await
            .map_err(backend)?;
        let version = to_u64(version);
        sink(StreamItem::Version(version))?;
        Ok(version)
    }
}
