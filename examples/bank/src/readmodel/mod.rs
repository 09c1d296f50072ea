//! Read models: SQL tables kept by transactional projectors, one file per table.
//!
//! Each table's code is written once, generic over the sqlx database, and runs on PostgreSQL
//! and SQLite alike: `accounts.rs` says how events change rows of `accounts`, and
//! [`SqlProjection`] hands it the connection of the transaction that also moves the
//! checkpoint. The SQL is what both dialects agree on (`TEXT` and `BIGINT` columns, `$n`
//! parameters, `ON CONFLICT`, `RETURNING`).
//!
//! A row never goes backwards: it keeps the stream version it reflects, and an update applies
//! only when its event is newer (`WHERE version < $v`), so an event delivered again or late
//! leaves it as it is.
//!
//! NOTE: generic rather than through `sqlx::Any`: the framework hands a projector a
//! `PgConnection` or a `SqliteConnection`, which a generic function takes as they are. Rust
//! does not carry a trait's where-clauses to its users, so each function spells its bounds out.

mod accounts;
mod large_withdrawals;
mod queries;
mod statement;
mod transfers;

use cqrs_core::{BoxError, RecordedEvent, async_trait};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{
    Database, Encode, Executor, IntoArguments, PgConnection, Postgres, Sqlite, SqliteConnection,
    Type,
};

pub use accounts::AccountView;
pub use large_withdrawals::{LARGE_WITHDRAWAL, LargeWithdrawalView};
pub use queries::Queries;
pub use statement::StatementLine;
pub use transfers::TransferView;

/// The read models the service keeps, each a projector of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModel {
    /// `accounts`: id, owner, balance, status, version.
    Accounts,
    /// `statement`: one line per movement with the balance after it.
    Statement,
    /// `transfers`: id, from, to, amount, status.
    Transfers,
    /// `large_withdrawals`: the choreographed reaction, a flag on every large withdrawal.
    LargeWithdrawals,
}

impl ReadModel {
    /// Every read model.
    pub const ALL: [ReadModel; 4] = [
        ReadModel::Accounts,
        ReadModel::Statement,
        ReadModel::Transfers,
        ReadModel::LargeWithdrawals,
    ];

    /// The projector's name (its checkpoint key), which is also its table's name.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Accounts => "accounts",
            ReadModel::Statement => "statement",
            ReadModel::Transfers => "transfers",
            ReadModel::LargeWithdrawals => "large_withdrawals",
        }
    }

    /// The read model called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The `CREATE TABLE IF NOT EXISTS` of its table.
    pub fn schema(self) -> &'static str {
        match self {
            ReadModel::Accounts => accounts::SCHEMA,
            ReadModel::Statement => statement::SCHEMA,
            ReadModel::Transfers => transfers::SCHEMA,
            ReadModel::LargeWithdrawals => large_withdrawals::SCHEMA,
        }
    }

    /// Writes what `events` do to this read model's table.
    async fn project<DB>(
        self,
        conn: &mut DB::Connection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError>
    where
        DB: Database,
        DB::Arguments: IntoArguments<DB>,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        i64: for<'q> Encode<'q, DB> + Type<DB>,
        String: for<'q> Encode<'q, DB> + Type<DB>,
        Option<String>: for<'q> Encode<'q, DB>,
        Option<i64>: for<'q> Encode<'q, DB>,
    {
        for event in events {
            match self {
                // A batch at once: one statement per account, however many events.
                ReadModel::Accounts => return accounts::project::<DB>(conn, events).await,
                ReadModel::Statement => statement::project::<DB>(conn, event).await?,
                ReadModel::Transfers => transfers::project::<DB>(conn, event).await?,
                ReadModel::LargeWithdrawals => {
                    large_withdrawals::project::<DB>(conn, event).await?
                }
            }
        }
        Ok(())
    }

    /// Empties the table before a rebuild.
    async fn reset<DB>(self, conn: &mut DB::Connection) -> Result<(), BoxError>
    where
        DB: Database,
        DB::Arguments: IntoArguments<DB>,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    {
        // NOTE: the table's name is one of four constants, never user input.
        let sql = format!("DELETE FROM {}", self.name());
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// A BIGINT column's value, from an unsigned event field.
fn bigint(n: u64) -> Result<i64, BoxError> {
    Ok(i64::try_from(n).map_err(|_| format!("{n} does not fit a BIGINT column"))?)
}

/// One read model as a projector of either back-end ([`SqliteProjector`], [`PgProjector`]).
#[derive(Debug, Clone, Copy)]
pub struct SqlProjection(pub ReadModel);

#[async_trait]
impl SqliteProjector for SqlProjection {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(self.0.schema()).execute(conn).await?;
        Ok(())
    }
    async fn handle(&self, conn: &mut SqliteConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        self.0
            .project::<Sqlite>(conn, std::slice::from_ref(e))
            .await
    }
    async fn handle_batch(
        &self,
        conn: &mut SqliteConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        self.0.project::<Sqlite>(conn, events).await
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        self.0.reset::<Sqlite>(conn).await
    }
}

#[async_trait]
impl PgProjector for SqlProjection {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn handle(&self, conn: &mut PgConnection, e: &RecordedEvent) -> Result<(), BoxError> {
        self.0
            .project::<Postgres>(conn, std::slice::from_ref(e))
            .await
    }
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        self.0.project::<Postgres>(conn, events).await
    }
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), BoxError> {
        self.0.reset::<Postgres>(conn).await
    }
}
