//! A PostgreSQL back-end for `cqrs-core`: the event store, snapshots, checkpoints, dead
//! letters, transactional projectors, leases and diagnostics, on sqlx.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cqrs_core::{BoxError, EventAppender, ExpectedVersion, NewEvent, RecordedEvent, Runner, StreamId};
//! use cqrs_postgres::{PgConfig, PgDatabase, PgProjector};
//! use sqlx::PgConnection;
//!
//! // A read model kept in the same database, updated in the checkpoint's transaction.
//! #[derive(Debug)]
//! struct Deposits;
//!
//! #[async_trait::async_trait]
//! impl PgProjector for Deposits {
//!     fn name(&self) -> &str { "deposits" }
//!     async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
//!         sqlx::query("INSERT INTO deposits (account, n) VALUES ($1, 1) \
//!                      ON CONFLICT (account) DO UPDATE SET n = deposits.n + 1")
//!             .bind(&event.stream.id)
//!             .execute(tx)
//!             .await?;
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let url = std::env::var("DATABASE_URL")?;
//! // Creates the schema `bank`, runs the migrations, starts the wake-up listener.
//! let db = PgDatabase::connect(&url, PgConfig::with_schema("bank")).await?;
//! sqlx::query("CREATE TABLE IF NOT EXISTS deposits (account TEXT PRIMARY KEY, n BIGINT NOT NULL)")
//!     .execute(db.pool())
//!     .await?;
//!
//! let (store, leases) = (db.events(), db.leases());
//! let runner = Runner::new(Arc::new(store.clone()), Arc::new(db.dead_letters()))
//!     .with_leases(Arc::new(leases.clone()))
//!     .with(db.transactional(Deposits).fenced_by(leases))
//!     .start();
//!
//! let stream = StreamId::new("account", "a1");
//! let out = store
//!     .append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Deposited", serde_json::json!({"amount": 5}))], None)
//!     .await?;
//! runner.wait_for("deposits", out.position, Duration::from_secs(5)).await?;
//! println!("{:#?}", db.diagnostics().await?);
//! runner.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! - [`PgDatabase`]: the hub (pool, schema, wake-up listener) that hands out the stores, laid
//!   out as `cqrs-sqlite`'s `SqliteDatabase` is: `append.rs`, `read_stream.rs`, `read_all.rs`,
//!   `sql.rs` (every statement), `rows.rs`, `error.rs` (every SQLSTATE).
//! - [`PgEventStore`]: the [`EventStore`](cqrs_core::EventStore). An append is one statement
//!   (so one implicit transaction and one round trip): it checks the command id and the expected
//!   version, inserts every event through `UNNEST` and records the command id. The unique key on
//!   `(stream_category, stream_id, stream_version)` turns a lost race into
//!   [`Error::Conflict`](cqrs_core::Error::Conflict), with nothing written.
//! - The all-stream is gap-safe (guarantee 2 of the architecture): each row keeps its writer's
//!   transaction id (`xid8`), and `read_all` reads, in (transaction id, position) order, only
//!   rows below the watermark: `pg_snapshot_xmin(pg_current_snapshot())`, the oldest transaction
//!   still in flight, passing over transactions seen running in another database and prepared
//!   (two-phase) transactions of another database (they cannot write these tables). An event
//!   committing late can therefore never land behind a subscriber's cursor. The price: one long
//!   writing transaction in the database, or one prepared transaction of it, pauses every
//!   subscriber; [`diagnose`] names it (pid, since when; a prepared one by its gid). At the
//!   tail, a read that finds committed events held back waits up to about 0.2 s for the
//!   transactions holding them.
//! - Replicas: a hot standby's snapshots do not list the transactions in flight on the primary,
//!   so no watermark can be told there. On a server in recovery, reading the all-stream
//!   (`read_all`, `cursor_of`, hence every subscriber, and [`diagnose`]) fails with
//!   [`PgError::InRecovery`]; run subscribers against the primary. Loading aggregates and
//!   reading one stream work on a standby (as of its replay); appends need the primary.
//! - Payloads and metadata are `json` columns: the text the writer sent, validated on insert,
//!   returned as stored (turning `jsonb` back into text cost the server a third of a stream
//!   read). `->`/`->>` work on them; cast to `jsonb` for containment or a GIN index.
//! - Stream reads ([`StreamReader`](cqrs_core::StreamReader)): one statement per range, its
//!   rows in version order from the index, each carrying the stream's version (one index step,
//!   computed once); each row goes to the reader as it arrives, its payload as the stored
//!   text, which a load decodes straight into the domain event. A command handler reads a long
//!   stream in several ranges at once. Snapshots shorten long loads.
//! - Idempotency: a command id is recorded with the fingerprint of its request in the append's
//!   statement; the same id with another fingerprint is
//!   [`Error::CommandIdReused`](cqrs_core::Error::CommandIdReused), with nothing written.
//! - Wake-ups: appends signal local subscribers at once and other processes by
//!   `LISTEN`/`NOTIFY` (sent after commit, at most one per 3 ms); the listener reconnects by itself and
//!   wakes everyone after a reconnection. Runners still poll as a fallback.
//! - [`PgSnapshotStore`], [`PgCheckpointStore`], [`PgDeadLetterStore`]: the other core stores.
//! - [`PgProjector`] + [`PgTransactional`]: handlers get the open transaction, which also
//!   writes the checkpoint; exactly-once effect.
//! - [`PgTransactional`] is also a [`cqrs_core::InboxSubscriber`]: an event delivered from a
//!   broker is recorded by id in the `inbox` table in the handler's transaction, so a
//!   redelivery has no second effect.
//! - [`PgLeases`]: one process per subscriber, by advisory locks, with fencing of a holder that
//!   lost its lease ([`PgTransactional::fenced_by`]).
//! - [`diagnose`]: subscribers' lag, the watermark and what holds it back, lease holders.
//!
//! # Schema
//! [`PgConfig::schema`] picks the schema. The pools of this crate set the sessions'
//! `search_path` to it ([`schema_options`]) and every statement, migrations included, is
//! unqualified, so each schema is a store of its own. [`MIGRATOR`] holds the migrations and
//! [`migrate`] runs them in a schema.
//!
//! # Broken rows
//! A payload that no longer decodes, or an unknown event type, comes out of
//! [`RecordedEvent::decode`](cqrs_core::RecordedEvent::decode) as
//! [`Error::Decode`](cqrs_core::Error::Decode) naming stream, version and type, so the runner
//! parks it; a command handler's load fails with the same error. Metadata that does not parse
//! makes [`read_stream`](cqrs_core::StreamReaderExt::read_stream) fail with
//! [`Error::Corrupt`](cqrs_core::Error::Corrupt) naming stream and version; `read_all` hands such
//! an event on, with empty metadata holding the raw value under [`CORRUPT_METADATA_KEY`], so that
//! no subscriber stalls on it. A payload is handed on as the text stored, even one nested too
//! deep to parse: decoding it gives the [`Error::Decode`](cqrs_core::Error::Decode).

mod append;
mod append_conns;
mod checkpoints;
mod config;
mod database;
mod dead_letters;
mod diagnostics;
mod error;
mod event_store;
mod group;
mod inbox;
mod lease;
mod notify;
mod projector;
mod read_all;
mod read_stream;
mod rows;
mod snapshots;
mod sql;

pub use checkpoints::PgCheckpointStore;
pub use config::{MIGRATOR, PgConfig, migrate, schema_options};
pub use database::PgDatabase;
pub use dead_letters::PgDeadLetterStore;
pub use diagnostics::{LeaseHolder, OpenTransaction, PgDiagnostics, SubscriberLag, diagnose};
pub use error::PgError;
pub use event_store::PgEventStore;
pub use lease::PgLeases;
pub use projector::{PgProjector, PgTransactional};
pub use rows::CORRUPT_METADATA_KEY;
pub use snapshots::PgSnapshotStore;

/// The sqlx this crate is built on (0.9), re-exported so that projectors and queries name the
/// same `PgConnection` and pool types: use `cqrs_postgres::sqlx`, or depend on the same sqlx
/// version.
pub use sqlx;
