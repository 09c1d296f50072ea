//! Snapshots in a table, one row per stream.

use async_trait::async_trait;
use cqrs_core::{Result, Snapshot, SnapshotStore, StreamId};

use crate::database::SqliteDatabase;
use crate::error::{retry_busy, to_i64, to_u64};

/// The snapshot store of a [`SqliteDatabase`]: the latest snapshot per stream.
#[derive(Debug, Clone)]
pub struct SqliteSnapshotStore {
    pub(crate) db: SqliteDatabase,
}

#[async_trait]
impl SnapshotStore for SqliteSnapshotStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let reader = &self.db.inner.reader;
        let row: Option<(i64, i64, String)> = retry_busy!(&self.db.inner.config, async {
            Ok(sqlx::query_as(
                "SELECT version, schema, state FROM snapshots WHERE category = ? AND stream_id = ?",
            )
            .bind(&stream.category)
            .bind(&stream.id)
            .fetch_optional(reader)
            .await?)
        })?;
        let Some((version, schema, state)) = row else {
            return Ok(None);
        };
        // NOTE: a snapshot is only a shortcut: one that does not read back is reported as
        // missing, and the aggregate is loaded from its events.
        let (Some(version), Ok(schema), Ok(state)) = (
            to_u64(version),
            u32::try_from(schema),
            serde_json::from_str(&state),
        ) else {
            tracing::warn!(%stream, "ignoring an unreadable snapshot row");
            return Ok(None);
        };
        Ok(Some(Snapshot {
            version,
            state,
            schema,
        }))
    }

    async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
        let version = to_i64(snapshot.version, "snapshot version")?;
        let state = snapshot.state.to_string();
        let writer = &self.db.inner.writer;
        retry_busy!(&self.db.inner.config, async {
            sqlx::query(
                "INSERT INTO snapshots (category, stream_id, version, schema, state) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (category, stream_id) DO UPDATE \
                 SET version = excluded.version, schema = excluded.schema, state = excluded.state \
                 WHERE excluded.version > snapshots.version",
            )
            .bind(&stream.category)
            .bind(&stream.id)
            .bind(version)
            .bind(i64::from(snapshot.schema))
            .bind(&state)
            .execute(writer)
            .await?;
            Ok(())
        })
    }
}
