//! Idempotency keys: a request sent again with the same `Idempotency-Key` gets its first
//! answer and runs once; the key sent with another request is refused (422
//! `idempotency_key_reused`).
//!
//! A keyed command carries the key's id as its command id and the [`Fingerprint`] of its
//! request: the event store answers a repeat with the first result, and the key with another
//! request with [`Error::CommandIdReused`]. A refusal writes no events, so the store cannot
//! remember it: the table `refused_keys` does.

use cqrs_core::{CommandOptions, Error, Fingerprint, Metadata, Result};
use serde::Serialize;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use crate::backend::Backend;
use crate::error::BankError;

pub(crate) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS refused_keys (id TEXT PRIMARY KEY, \
     fingerprint TEXT NOT NULL, status BIGINT NOT NULL, code TEXT NOT NULL, message TEXT NOT NULL)";

/// The namespace of ids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_6e6b_2d69_6465_6d70_6f74_656e_6379);

/// A deterministic id for what an idempotency key asks for, within `scope`.
pub(crate) fn key_id(scope: &str, key: &str) -> Uuid {
    Uuid::new_v5(&KEY_NAMESPACE, format!("{scope}\n{key}").as_bytes())
}

/// A keyed request: the key's command id and the request's fingerprint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyed {
    id: Uuid,
    fingerprint: Fingerprint,
}

impl Keyed {
    /// The request `request` sent with `key` (if any), within `scope`.
    pub(crate) fn new(
        scope: &str,
        key: Option<&str>,
        request: &impl Serialize,
    ) -> Result<Option<Self>> {
        let Some(key) = key else { return Ok(None) };
        let (id, fingerprint) = (key_id(scope, key), Fingerprint::of(request)?);
        Ok(Some(Keyed { id, fingerprint }))
    }

    /// The command id the store keeps, with the fingerprint beside it.
    pub(crate) fn command_id(&self) -> cqrs_core::CommandId {
        cqrs_core::CommandId::with_fingerprint(self.id, self.fingerprint)
    }
}

/// A command's options: its key (if any) and the correlation id of what it starts.
pub(crate) fn options(keyed: Option<Keyed>, correlation_id: Option<Uuid>) -> CommandOptions {
    CommandOptions {
        command_id: keyed.map(|k| k.id),
        fingerprint: keyed.map(|k| k.fingerprint),
        metadata: Metadata {
            correlation_id,
            ..Metadata::default()
        },
    }
}

/// Runs `command` once per key: a key refused before gets its refusal again (or
/// `idempotency_key_reused` for another request), and a refusal is remembered.
pub(crate) async fn once<T>(
    backend: &Backend,
    keyed: Option<Keyed>,
    command: impl Future<Output = Result<T, BankError>>,
) -> Result<T, BankError> {
    let Some(Keyed { id, fingerprint }) = keyed else {
        return command.await;
    };
    if let Some(first) = backend.refusal(id, fingerprint, None).await? {
        return Err(first);
    }
    match command.await {
        // NOTE: two refusals of one key racing: the first remembered is the answer.
        Err(e) if e.is_final() => {
            let first = backend.refusal(id, fingerprint, Some(&e)).await?;
            Err(first.unwrap_or(e))
        }
        done => done,
    }
}

/// The refusal remembered on `conn` for key `id` sent with the request of `fingerprint`,
/// after remembering `refused` if the key has none yet: the first refusal stays.
pub(crate) async fn refusal<DB>(
    conn: &mut DB::Connection,
    id: Uuid,
    fingerprint: Fingerprint,
    refused: Option<&BankError>,
) -> Result<Option<BankError>>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    for<'r> (String, i64, String, String): FromRow<'r, DB::Row>,
{
    let (id, ours) = (id.to_string(), fingerprint.as_uuid().to_string());
    let query = match refused {
        None => sqlx::query_as(
            "SELECT fingerprint, status, code, message FROM refused_keys WHERE id = $1",
        )
        .bind(id),
        Some(e) => sqlx::query_as(
            "INSERT INTO refused_keys (id, fingerprint, status, code, message) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET fingerprint = refused_keys.fingerprint \
             RETURNING fingerprint, status, code, message",
        )
        .bind(id)
        .bind(ours.clone())
        .bind(i64::from(e.status()))
        .bind(e.code().to_owned())
        .bind(e.to_string()),
    };
    let row: Option<(String, i64, String, String)> = query
        .fetch_optional(&mut *conn)
        .await
        .map_err(Error::backend)?;
    Ok(
        row.map(|(first, status, code, message)| match first == ours {
            true => BankError::repeated(u16::try_from(status).unwrap_or(422), &code, message),
            false => BankError::key_reused(),
        }),
    )
}
