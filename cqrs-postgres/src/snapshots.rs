//! Snapshots in a table, one row per stream.

use async_trait::async_trait;
use cqrs_core::{Result, Snapshot, SnapshotStore, StreamId};
use serde_json::Value;
use sqlx::PgPool;

use crate::error::backend;
use crate::rows::{to_i64, to_u64};

/// A [`SnapshotStore`] on PostgreSQL (table `snapshots`).
#[derive(Debug, Clone)]
pub struct PgSnapshotStore {
    pool: PgPool,
}

impl PgSnapshotStore {
    /// The snapshot store of the pool's schema.
    pub fn new(pool: PgPool) -> Self {
        PgSnapshotStore { pool }
    }
}

#[async_trait]
impl SnapshotStore for PgSnapshotStore {
    async fn load(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row: Option<(i64, i32, Value)> =
            sqlx::query_as("SELECT version, schema, state FROM snapshots WHERE stream_category = $1 AND stream_id = $2")
                .bind(&stream.category)
                .bind(&stream.id)
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        Ok(row.map(|(version, schema, state)| Snapshot {
            version: to_u64(version),
            state,
            schema: schema as u32,
        }))
    }

    async fn save(&self, stream: &StreamId, snapshot: Snapshot) -> Result<()> {
        // NOTE: the WHERE keeps a newer snapshot when a slower writer saves an older one.
        sqlx::query(
            "INSERT INTO snapshots (stream_category, stream_id, version, schema, state) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream_category, stream_id) DO UPDATE \
             SET version = EXCLUDED.version, schema = EXCLUDED.schema, state = EXCLUDED.state, saved_at = now() \
             WHERE snapshots.version < EXCLUDED.version",
        )
        .bind(&stream.category)
        .bind(&stream.id)
        .bind(to_i64(snapshot.version, "snapshot version")?)
        .bind(snapshot.schema as i32)
        .bind(&snapshot.state)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }
}
