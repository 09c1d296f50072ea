//! What the service reads from its read models: one query per answer, on either database.

use cqrs_core::{Error, Result, async_trait};
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::{AccountView, LargeWithdrawalView, StatementLine, TransferView};

/// The read models' queries. A connection pool of either database answers them.
#[async_trait]
pub trait Queries: Send + Sync + std::fmt::Debug {
    /// One row of `accounts`.
    async fn account(&self, id: &str) -> Result<Option<AccountView>>;
    /// Every row of `accounts`, by id.
    async fn accounts(&self) -> Result<Vec<AccountView>>;
    /// The statement of one account, oldest line first.
    async fn statement(&self, id: &str) -> Result<Vec<StatementLine>>;
    /// One row of `transfers`.
    async fn transfer(&self, id: &str) -> Result<Option<TransferView>>;
    /// Every row of `transfers`, by id.
    async fn transfers(&self) -> Result<Vec<TransferView>>;
    /// Every flagged large withdrawal, oldest first.
    async fn large_withdrawals(&self) -> Result<Vec<LargeWithdrawalView>>;
}

const ACCOUNT: &str = "SELECT id, owner, balance, status, version FROM accounts WHERE id = $1";
const ACCOUNTS: &str = "SELECT id, owner, balance, status, version FROM accounts ORDER BY id";
const STATEMENT: &str = "SELECT version, position, kind, amount, balance, transfer_id, recorded_at \
     FROM statement WHERE account_id = $1 ORDER BY version";
const TRANSFER: &str = "SELECT id, from_account, to_account, amount, status, reason, version \
     FROM transfers WHERE id = $1";
const TRANSFERS: &str = "SELECT id, from_account, to_account, amount, status, reason, version \
     FROM transfers ORDER BY id";
const LARGE_WITHDRAWALS: &str = "SELECT account_id, version, amount, position, recorded_at \
     FROM large_withdrawals ORDER BY position";

#[async_trait]
impl<DB> Queries for Pool<DB>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> AccountView: FromRow<'r, DB::Row>,
    for<'r> StatementLine: FromRow<'r, DB::Row>,
    for<'r> TransferView: FromRow<'r, DB::Row>,
    for<'r> LargeWithdrawalView: FromRow<'r, DB::Row>,
{
    async fn account(&self, id: &str) -> Result<Option<AccountView>> {
        let q = sqlx::query_as(ACCOUNT).bind(id.to_owned());
        q.fetch_optional(self).await.map_err(Error::backend)
    }
    async fn accounts(&self) -> Result<Vec<AccountView>> {
        let q = sqlx::query_as(ACCOUNTS);
        q.fetch_all(self).await.map_err(Error::backend)
    }
    async fn statement(&self, id: &str) -> Result<Vec<StatementLine>> {
        let q = sqlx::query_as(STATEMENT).bind(id.to_owned());
        q.fetch_all(self).await.map_err(Error::backend)
    }
    async fn transfer(&self, id: &str) -> Result<Option<TransferView>> {
        let q = sqlx::query_as(TRANSFER).bind(id.to_owned());
        q.fetch_optional(self).await.map_err(Error::backend)
    }
    async fn transfers(&self) -> Result<Vec<TransferView>> {
        let q = sqlx::query_as(TRANSFERS);
        q.fetch_all(self).await.map_err(Error::backend)
    }
    async fn large_withdrawals(&self) -> Result<Vec<LargeWithdrawalView>> {
        let q = sqlx::query_as(LARGE_WITHDRAWALS);
        q.fetch_all(self).await.map_err(Error::backend)
    }
}
