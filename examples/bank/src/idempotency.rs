//! Idempotency keys: a request sent again with the same `Idempotency-Key` gets its first
//! answer, and nothing runs twice; the key sent with another request is refused (422
//! `idempotency_key_reused`).
//!
//! One table, `idempotency_keys`, holds the request each key was first used for and, if the
//! command was refused, the refusal (a refusal writes no events, so only this table knows
//! it). A success needs nothing here: the command carries the key's id as its command id, and
//! the event store answers a repeat with the first append's result.

use cqrs_core::{Error, Result, async_trait};
use cqrs_sqlite::SqliteDatabase;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, PgPool, Postgres, Sqlite, Type};
use uuid::Uuid;

use crate::error::BankError;

/// The namespace of ids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_6e6b_2d69_6465_6d70_6f74_656e_6379);

/// A deterministic id for what an idempotency key asks for, within `scope`.
pub(crate) fn key_id(scope: &str, key: &str) -> Uuid {
    Uuid::new_v5(&KEY_NAMESPACE, format!("{scope}\n{key}").as_bytes())
}

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS idempotency_keys (id TEXT PRIMARY KEY, \
     request TEXT NOT NULL, status BIGINT, code TEXT, message TEXT)";

/// Claims a key for a request; the first claim stays, and is returned either way.
const CLAIM: &str = "INSERT INTO idempotency_keys (id, request) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET request = idempotency_keys.request \
     RETURNING request, status, code, message";

const REFUSED: &str =
    "UPDATE idempotency_keys SET status = $1, code = $2, message = $3 WHERE id = $4";

/// The first use of a key: the request, and the refusal it got, if any.
type Claim = (String, Option<i64>, Option<String>, Option<String>);

/// Where the keys are kept: PostgreSQL, or the SQLite store.
#[async_trait]
pub(crate) trait Keys: Send + Sync + std::fmt::Debug {
    /// Claims key `id` for `request`; returns the first claim.
    async fn claim(&self, id: Uuid, request: &str) -> Result<Claim>;
    /// Records that the request of key `id` was refused with `refusal`.
    async fn refused(&self, id: Uuid, refusal: &BankError) -> Result<()>;
}

/// Runs `command`, sent with the key whose id is `key` (if any) for `request` (the request
/// and its arguments, say `deposit 100`), once.
///
/// NOTE: the one place a key is checked. When the event store keeps a fingerprint of the
/// request beside the command id, the claim's comparison becomes the store's error and the
/// table keeps refusals only.
pub(crate) async fn once<T>(
    keys: &dyn Keys,
    key: Option<Uuid>,
    request: &str,
    command: impl Future<Output = Result<T, BankError>>,
) -> Result<T, BankError> {
    let Some(id) = key else {
        return command.await;
    };
    let (first, status, code, message) = keys.claim(id, request).await?;
    if first != request {
        return Err(BankError::Rule {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was first used for another request".into(),
        });
    }
    if let Some(status) = status {
        let status = u16::try_from(status).unwrap_or(422);
        let code = code.unwrap_or_default();
        return Err(BankError::repeated(
            status,
            &code,
            message.unwrap_or_default(),
        ));
    }
    match command.await {
        Err(e) if e.is_final() => {
            keys.refused(id, &e).await?;
            Err(e)
        }
        done => done,
    }
}

/// Claims key `id` for `request` on `conn`; returns the first claim.
async fn claim<DB>(conn: &mut DB::Connection, id: Uuid, request: &str) -> Result<Claim>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> Claim: FromRow<'r, DB::Row>,
{
    let q = sqlx::query_as(CLAIM)
        .bind(id.to_string())
        .bind(request.to_owned());
    q.fetch_one(&mut *conn).await.map_err(Error::backend)
}

/// Records on `conn` that the request of key `id` was refused with `refusal`.
async fn refuse<DB>(conn: &mut DB::Connection, id: Uuid, refusal: &BankError) -> Result<()>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
{
    sqlx::query(REFUSED)
        .bind(i64::from(refusal.status()))
        .bind(refusal.code().to_owned())
        .bind(refusal.to_string())
        .bind(id.to_string())
        .execute(&mut *conn)
        .await
        .map_err(Error::backend)?;
    Ok(())
}

#[async_trait]
impl Keys for PgPool {
    async fn claim(&self, id: Uuid, request: &str) -> Result<Claim> {
        let mut conn = self.acquire().await.map_err(Error::backend)?;
        claim::<Postgres>(&mut conn, id, request).await
    }

    async fn refused(&self, id: Uuid, refusal: &BankError) -> Result<()> {
        let mut conn = self.acquire().await.map_err(Error::backend)?;
        refuse::<Postgres>(&mut conn, id, refusal).await
    }
}

// NOTE: SQLite has one write lock: a key is written in a transaction of the store's writer,
// queued behind the store's own writes, never through the pool of readers.
#[async_trait]
impl Keys for SqliteDatabase {
    async fn claim(&self, id: Uuid, request: &str) -> Result<Claim> {
        let mut tx = self.begin_write().await?;
        let first = claim::<Sqlite>(&mut tx, id, request).await?;
        tx.commit().await.map_err(Error::backend)?;
        Ok(first)
    }

    async fn refused(&self, id: Uuid, refusal: &BankError) -> Result<()> {
        let mut tx = self.begin_write().await?;
        refuse::<Sqlite>(&mut tx, id, refusal).await?;
        tx.commit().await.map_err(Error::backend)
    }
}
