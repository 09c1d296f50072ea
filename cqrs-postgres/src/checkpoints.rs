//! Checkpoints in a table, one row per subscriber.

use async_trait::async_trait;
use cqrs_core::{CheckpointStore, Cursor, Result};
use sqlx::{PgExecutor, PgPool};

use crate::error::backend;
use crate::rows::{to_i64, to_u64};

/// A [`CheckpointStore`] on PostgreSQL (table `checkpoints`, shared with
/// [`PgTransactional`](crate::PgTransactional), so that the diagnostics see every subscriber).
#[derive(Debug, Clone)]
pub struct PgCheckpointStore {
    pool: PgPool,
}

impl PgCheckpointStore {
    /// The checkpoint store of the pool's schema.
    pub fn new(pool: PgPool) -> Self {
        PgCheckpointStore { pool }
    }
}

/// The saved cursor of `name`, through any executor (a pool or an open transaction).
pub(crate) async fn load<'e>(exec: impl PgExecutor<'e>, name: &str) -> Result<Cursor> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx, position FROM checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(exec)
            .await
            .map_err(backend)?;
    Ok(row.map_or(Cursor::START, |(tx, position)| {
        Cursor::new(to_u64(tx), to_u64(position))
    }))
}

#[async_trait]
impl CheckpointStore for PgCheckpointStore {
    async fn load(&self, name: &str) -> Result<Cursor> {
        load(&self.pool, name).await
    }

    async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
        sqlx::query(
            "INSERT INTO checkpoints (name, tx, position) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE \
             SET tx = EXCLUDED.tx, position = EXCLUDED.position, updated_at = now()",
        )
        .bind(name)
        .bind(to_i64(cursor.tx, "cursor transaction id")?)
        .bind(to_i64(cursor.position, "cursor position")?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn reset(&self, name: &str) -> Result<()> {
        sqlx::query("DELETE FROM checkpoints WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}
