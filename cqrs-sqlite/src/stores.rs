//! Snapshots and checkpoints: one row per stream, one row per subscriber.

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{CheckpointStore, Cursor, Error, Result, Snapshot, SnapshotStore, StreamId};
use sqlx::SqliteConnection;

use crate::database::SqliteDatabase;
use crate::error::{Failure, retry_busy, to_i64, to_u64};
use crate::rows::format_time;

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
