//! The read models as transactional projectors of both back-ends: each table's code, run on
//! the connection of the transaction that also moves the checkpoint.
//!
//! NOTE: the tables' code is generic over the sqlx database (`project::<DB>`) rather than
//! written twice, or through `sqlx::Any`, whose `AnyConnection` the framework never hands out:
//! it hands a projector a `PgConnection` or a `SqliteConnection`, and a generic function takes
//! either. Its bounds (run a query on the connection; bind `i64`, `String` and their NULLs)
//! are spelled out on each function, since Rust does not carry a trait's where-clauses to the
//! functions that use it.

use cqrs_core::{BoxError, RecordedEvent, async_trait};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{
    Database, Encode, Executor, IntoArguments, PgConnection, Postgres, Sqlite, SqliteConnection,
    Type,
};

use super::{ReadModel, accounts, large_withdrawals, statement, transfers};

/// One read model as a projector of either back-end ([`SqliteProjector`], [`PgProjector`]).
#[derive(Debug, Clone, Copy)]
pub struct SqlProjection(pub ReadModel);

impl ReadModel {
    /// Writes what `events` do to this read model's table.
    pub(crate) async fn project<DB>(
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
        if self == ReadModel::Accounts {
            // A batch at once: one statement per account, however many events.
            return accounts::project::<DB>(conn, events).await;
        }
        for event in events {
            match self {
                ReadModel::Accounts => unreachable!("projected above"),
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

#[async_trait]
impl SqliteProjector for SqlProjection {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(self.0.schema()).execute(conn).await?;
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        self.0
            .project::<Sqlite>(conn, std::slice::from_ref(event))
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
    async fn handle(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        self.0
            .project::<Postgres>(conn, std::slice::from_ref(event))
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
