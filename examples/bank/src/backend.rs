//! The back-end behind the service: the embedded SQLite store (a file, or memory) or
//! PostgreSQL, chosen by the database URL. Everything above this module sees core traits and
//! read-model queries only.

use std::sync::Arc;

use cqrs_core::{
    CheckpointStore, DeadLetterStore, Error, EventStore, Leases, Result, SnapshotStore, Subscriber,
};
use cqrs_postgres::{PgConfig, PgEventStore};
use cqrs_sqlite::SqliteDatabase;
use uuid::Uuid;

use crate::readmodel::{
    AccountRow, AccountView, LargeWithdrawalRow, LargeWithdrawalView, ReadModel, SqlProjection,
    StatementLine, StatementRow, TransferRow, TransferView, sql,
};

/// The default database: the embedded store in `./bank.db`.
pub const DEFAULT_DATABASE: &str = "sqlite:bank.db?mode=rwc";

/// An open back-end.
#[derive(Clone)]
pub struct Backend {
    kind: Kind,
    store: Arc<dyn EventStore>,
}

#[derive(Debug, Clone)]
enum Kind {
    Sqlite(SqliteDatabase),
    Postgres(PgEventStore),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Runs the same query on whichever pool the back-end has.
macro_rules! fetch {
    ($self:expr, $row:ty, $sql:expr, $method:ident $(, $arg:expr)*) => {
        match &$self.kind {
            Kind::Sqlite(db) => sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.$method(db.pool()).await,
            Kind::Postgres(pg) => sqlx::query_as::<_, $row>($sql)$(.bind($arg))*.$method(pg.pool()).await,
        }
        .map_err(Error::backend)
    };
}

impl Backend {
    /// Opens the database at `url`: `postgres://...` (or `postgresql://`) for PostgreSQL, with
    /// its migrations applied; anything else is the embedded store (`sqlite::memory:`, a
    /// `sqlite:` URL, or a file path). Creates the read-model tables.
    pub async fn open(url: &str) -> Result<Self> {
        let kind = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Kind::Postgres(PgEventStore::connect(url, PgConfig::default()).await?)
        } else {
            Kind::Sqlite(SqliteDatabase::open(url).await?)
        };
        let store: Arc<dyn EventStore> = match &kind {
            Kind::Sqlite(db) => Arc::new(db.events()),
            Kind::Postgres(pg) => Arc::new(pg.clone()),
        };
        let backend = Backend { kind, store };
        backend.create_tables().await?;
        Ok(backend)
    }

    async fn create_tables(&self) -> Result<()> {
        match &self.kind {
            Kind::Sqlite(db) => {
                let mut tx = db.begin_write().await?;
                for ddl in sql::SCHEMA {
                    sqlx::query(*ddl)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::backend)?;
                }
                tx.commit().await.map_err(Error::backend)
            }
            Kind::Postgres(pg) => {
                // NOTE: several processes may start at once; the advisory lock keeps their
                // CREATE TABLE IF NOT EXISTS from racing on the catalog.
                let mut tx = pg.pool().begin().await.map_err(Error::backend)?;
                sqlx::query("SELECT pg_advisory_xact_lock(hashtext('bank-read-models'))")
                    .execute(&mut *tx)
                    .await
                    .map_err(Error::backend)?;
                for ddl in sql::SCHEMA {
                    sqlx::query(*ddl)
                        .execute(&mut *tx)
                        .await
                        .map_err(Error::backend)?;
                }
                tx.commit().await.map_err(Error::backend)
            }
        }
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            Kind::Sqlite(_) => "sqlite",
            Kind::Postgres(_) => "postgres",
        }
    }

    /// The event store.
    pub fn events(&self) -> Arc<dyn EventStore> {
        self.store.clone()
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> Arc<dyn SnapshotStore> {
        match &self.kind {
            Kind::Sqlite(db) => Arc::new(db.snapshots()),
            Kind::Postgres(pg) => Arc::new(pg.snapshots()),
        }
    }

    /// The checkpoint store (for subscribers that are not transactional: the process manager).
    pub fn checkpoints(&self) -> Arc<dyn CheckpointStore> {
        match &self.kind {
            Kind::Sqlite(db) => Arc::new(db.checkpoints()),
            Kind::Postgres(pg) => Arc::new(pg.checkpoints()),
        }
    }

    /// The dead-letter store.
    pub fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        match &self.kind {
            Kind::Sqlite(db) => Arc::new(db.dead_letters()),
            Kind::Postgres(pg) => Arc::new(pg.dead_letters()),
        }
    }

    /// Leases so that several processes on one database run each subscriber once: advisory
    /// locks on PostgreSQL, lock files beside a SQLite file; `None` for an in-memory store (one
    /// process).
    pub fn leases(&self) -> Option<LeaseSet> {
        match &self.kind {
            Kind::Sqlite(db) => db.leases().map(LeaseSet::Sqlite),
            Kind::Postgres(pg) => Some(LeaseSet::Postgres(pg.leases())),
        }
    }

    /// The transactional subscriber maintaining `model`, fenced by `leases` when given.
    pub fn read_model(&self, model: ReadModel, leases: Option<&LeaseSet>) -> Arc<dyn Subscriber> {
        match &self.kind {
            Kind::Sqlite(db) => Arc::new(db.transactional(SqlProjection(model))),
            Kind::Postgres(pg) => match leases {
                Some(LeaseSet::Postgres(l)) => {
                    Arc::new(pg.transactional(SqlProjection(model)).fenced_by(l.clone()))
                }
                _ => Arc::new(pg.transactional(SqlProjection(model))),
            },
        }
    }

    /// One row of `accounts`.
    pub async fn account(&self, id: &str) -> Result<Option<AccountView>> {
        Ok(fetch!(self, AccountRow, sql::SELECT_ACCOUNT, fetch_optional, id)?.map(Into::into))
    }

    /// Every row of `accounts`, by id.
    pub async fn accounts(&self) -> Result<Vec<AccountView>> {
        Ok(fetch!(self, AccountRow, sql::SELECT_ACCOUNTS, fetch_all)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// The statement of one account, oldest line first.
    pub async fn statement(&self, id: &str) -> Result<Vec<StatementLine>> {
        Ok(
            fetch!(self, StatementRow, sql::SELECT_STATEMENT, fetch_all, id)?
                .into_iter()
                .map(Into::into)
                .collect(),
        )
    }

    /// One row of `transfers`.
    pub async fn transfer(&self, id: &str) -> Result<Option<TransferView>> {
        Ok(fetch!(self, TransferRow, sql::SELECT_TRANSFER, fetch_optional, id)?.map(Into::into))
    }

    /// Every row of `transfers`, by id.
    pub async fn transfers(&self) -> Result<Vec<TransferView>> {
        Ok(fetch!(self, TransferRow, sql::SELECT_TRANSFERS, fetch_all)?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Every flagged large withdrawal, oldest first.
    pub async fn large_withdrawals(&self) -> Result<Vec<LargeWithdrawalView>> {
        Ok(fetch!(
            self,
            LargeWithdrawalRow,
            sql::SELECT_LARGE_WITHDRAWALS,
            fetch_all
        )?
        .into_iter()
        .map(Into::into)
        .collect())
    }

    /// The refusal recorded for command id `id`: status, code, message, and the request it
    /// answered (`None` for refusals recorded before requests were).
    pub async fn refusal(&self, id: Uuid) -> Result<Option<Refusal>> {
        fetch!(
            self,
            Refusal,
            sql::SELECT_REFUSAL,
            fetch_optional,
            id.to_string()
        )
    }

    /// Records the refusal of command id `id`, sent for `request` (the first one recorded
    /// stays).
    pub async fn record_refusal(
        &self,
        id: Uuid,
        status: u16,
        code: &str,
        message: &str,
        request: &str,
    ) -> Result<()> {
        macro_rules! record {
            ($tx:expr) => {{
                sqlx::query(sql::RECORD_REFUSAL)
                    .bind(id.to_string())
                    .bind(i64::from(status))
                    .bind(code)
                    .bind(message)
                    .execute(&mut *$tx)
                    .await
                    .map_err(Error::backend)?;
                sqlx::query(sql::RECORD_REFUSAL_REQUEST)
                    .bind(id.to_string())
                    .bind(request)
                    .execute(&mut *$tx)
                    .await
                    .map_err(Error::backend)?;
                $tx.commit().await.map_err(Error::backend)
            }};
        }
        match &self.kind {
            Kind::Sqlite(db) => {
                let mut tx = db.begin_write().await?;
                record!(tx)
            }
            Kind::Postgres(pg) => {
                let mut tx = pg.pool().begin().await.map_err(Error::backend)?;
                record!(tx)
            }
        }
    }

    /// Closes the connections.
    pub async fn close(&self) {
        match &self.kind {
            Kind::Sqlite(db) => db.close().await,
            Kind::Postgres(pg) => pg.pool().close().await,
        }
    }
}

/// A refusal recorded for an idempotency key: status, code, message, and the request it
/// answered (`None` for refusals recorded before requests were).
pub type Refusal = (i64, String, String, Option<String>);

/// The leases of a back-end, shared by the runner and (on PostgreSQL) the fenced projectors.
#[derive(Debug, Clone)]
pub enum LeaseSet {
    /// Advisory locks, with epochs that fence out a holder that lost its lock.
    Postgres(cqrs_postgres::PgLeases),
    /// Lock files beside the database file (a lock is not lost while its process lives).
    Sqlite(cqrs_sqlite::SqliteLeases),
}

impl LeaseSet {
    /// The leases as the runner takes them.
    pub fn as_leases(&self) -> Arc<dyn Leases> {
        match self {
            LeaseSet::Postgres(l) => Arc::new(l.clone()),
            LeaseSet::Sqlite(l) => Arc::new(l.clone()),
        }
    }
}
