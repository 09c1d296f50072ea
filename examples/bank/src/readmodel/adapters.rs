//! The read models as transactional projectors of both back-ends: the same writes, run on the
//! connection of the transaction that also moves the checkpoint.

use cqrs_core::{BoxError, RecordedEvent, async_trait};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{PgConnection, SqliteConnection};

use super::projections::{Arg, ReadModel, Write};

/// One read model as a SQL projector ([`SqliteProjector`] and [`PgProjector`]).
#[derive(Debug, Clone, Copy)]
pub struct SqlProjection(pub ReadModel);

// NOTE: a macro rather than a function generic over `sqlx::Database`: the bounds such a
// function needs say more than the ten lines they would save.
macro_rules! execute {
    ($conn:expr, $writes:expr) => {{
        for Write { sql, args } in $writes {
            let mut q = sqlx::query(sql);
            for a in args {
                q = match a {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(n) => q.bind(n),
                    Arg::NullText => q.bind(None::<String>),
                    Arg::NullInt => q.bind(None::<i64>),
                };
            }
            q.execute(&mut *$conn).await?;
        }
    }};
}

#[async_trait]
impl SqliteProjector for SqlProjection {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        for ddl in super::sql::SCHEMA {
            sqlx::query(*ddl).execute(&mut *conn).await?;
        }
        Ok(())
    }
    async fn handle(
        &self,
        conn: &mut SqliteConnection,
        event: &RecordedEvent,
    ) -> Result<(), BoxError> {
        execute!(conn, self.0.writes(event)?);
        Ok(())
    }
    async fn handle_batch(
        &self,
        conn: &mut SqliteConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        execute!(conn, self.0.batch_writes(events)?);
        Ok(())
    }
    async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
        sqlx::query(self.0.reset()).execute(&mut *conn).await?;
        Ok(())
    }
}

#[async_trait]
impl PgProjector for SqlProjection {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn handle(&self, conn: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        execute!(conn, self.0.writes(event)?);
        Ok(())
    }
    async fn handle_batch(
        &self,
        conn: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        execute!(conn, self.0.batch_writes(events)?);
        Ok(())
    }
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query(self.0.reset()).execute(&mut *conn).await?;
        Ok(())
    }
}
