//! Checkpoints in a table, one row per subscriber.

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{CheckpointStore, Cursor, Error, Result};
use sqlx::SqliteConnection;

use crate::database::SqliteDatabase;
use crate::error::{Failure, retry_busy, to_i64, to_u64};
use crate::rows::format_time;

/// The checkpoint store of a [`SqliteDatabase`]: one cursor per subscriber name.
///
/// [`SqliteTransactional`](crate::SqliteTransactional) subscribers keep their checkpoints in the
/// same table, so this store also shows (and can reset) theirs.
#[derive(Debug, Clone)]
pub struct SqliteCheckpointStore {
    pub(crate) db: SqliteDatabase,
}

pub(crate) async fn load_checkpoint(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<Cursor, Failure> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx, position FROM checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(conn)
            .await?;
    let Some((tx, position)) = row else {
        return Ok(Cursor::START);
    };
    match (to_u64(tx), to_u64(position)) {
        (Some(tx), Some(position)) => Ok(Cursor::new(tx, position)),
        _ => Err(Error::Invalid(format!(
            "checkpoint of {name} is negative: ({tx}, {position})"
        ))
        .into()),
    }
}

pub(crate) async fn save_checkpoint(
    conn: &mut SqliteConnection,
    name: &str,
    cursor: Cursor,
) -> Result<(), Failure> {
    sqlx::query(
        "INSERT INTO checkpoints (name, tx, position, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, position = excluded.position, updated_at = excluded.updated_at",
    )
    .bind(name)
    .bind(to_i64(cursor.tx, "checkpoint tx")?)
    .bind(to_i64(cursor.position, "checkpoint position")?)
    .bind(format_time(Utc::now()))
    .execute(conn)
    .await?;
    Ok(())
}

pub(crate) async fn delete_checkpoint(
    conn: &mut SqliteConnection,
    name: &str,
) -> Result<(), Failure> {
    sqlx::query("DELETE FROM checkpoints WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await?;
    Ok(())
}

#[async_trait]
impl CheckpointStore for SqliteCheckpointStore {
    async fn load(&self, name: &str) -> Result<Cursor> {
        let reader = &self.db.inner.reader;
        retry_busy!(&self.db.inner.config, async {
            load_checkpoint(&mut *reader.acquire().await?, name).await
        })
    }

    async fn save(&self, name: &str, cursor: Cursor) -> Result<()> {
        let writer = &self.db.inner.writer;
        retry_busy!(&self.db.inner.config, async {
            save_checkpoint(&mut *writer.acquire().await?, name, cursor).await
        })
    }

    async fn reset(&self, name: &str) -> Result<()> {
        let writer = &self.db.inner.writer;
        retry_busy!(&self.db.inner.config, async {
            delete_checkpoint(&mut *writer.acquire().await?, name).await
        })
    }
}
