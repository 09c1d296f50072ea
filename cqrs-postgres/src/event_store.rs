//! The event store of a database: a cheap view of the [`PgDatabase`] hub. What it does lives
//! by concern in `append.rs`, `read_stream.rs` and `read_all.rs`.

use cqrs_core::Result;
use sqlx::postgres::{PgConnectOptions, PgPool};

use crate::config::PgConfig;
use crate::database::PgDatabase;

/// The [`EventStore`](cqrs_core::EventStore) of a [`PgDatabase`].
///
/// Cloning is cheap and shares the pool and the wake-up listener. See the crate docs for the
/// schema, the gap-safe all-stream and the wake-ups.
///
/// NOTE: the store was the hub before [`PgDatabase`] was; it still dereferences to its
/// database, so that `store.pool()`, `store.snapshots()`, `store.transactional(..)` and the
/// constructors below keep working.
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pub(crate) db: PgDatabase,
}

impl PgEventStore {
    /// The event store of [`PgDatabase::connect`].
    pub async fn connect(url: &str, config: PgConfig) -> Result<Self> {
        Ok(PgDatabase::connect(url, config).await?.events())
    }

    /// The event store of [`PgDatabase::connect_with`].
    pub async fn connect_with(options: PgConnectOptions, config: PgConfig) -> Result<Self> {
        Ok(PgDatabase::connect_with(options, config).await?.events())
    }

    /// The event store of [`PgDatabase::from_pool`].
    pub async fn from_pool(pool: PgPool) -> Result<Self> {
        Ok(PgDatabase::from_pool(pool).await?.events())
    }

    /// The database this store is a view of.
    pub fn database(&self) -> &PgDatabase {
        &self.db
    }
}

impl std::ops::Deref for PgEventStore {
    type Target = PgDatabase;

    fn deref(&self) -> &PgDatabase {
        &self.db
    }
}
