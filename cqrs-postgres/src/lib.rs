//! A PostgreSQL back-end for `cqrs-core`: the event store, snapshots, checkpoints, dead
//! letters, transactional projectors, leases and diagnostics, on sqlx.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cqrs_core::{BoxError, EventStore, ExpectedVersion, NewEvent, RecordedEvent, Runner, StreamId};
//! use cqrs_postgres::{PgConfig, PgEventStore, PgProjector};
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
//! let store = PgEventStore::connect(&url, PgConfig::with_schema("bank")).await?;
//! sqlx::query("CREATE TABLE IF NOT EXISTS deposits (account TEXT PRIMARY KEY, n BIGINT NOT NULL)")
//!     .execute(store.pool())
//!     .await?;
//!
//! let leases = store.leases();
//! let runner = Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
//!     .with_leases(Arc::new(leases.clone()))
//!     .with(store.transactional(Deposits).fenced_by(leases))
//!     .start();
//!
//! let stream = StreamId::new("account", "a1");
//! let out = store
//!     .append(&stream, ExpectedVersion::Any, vec![NewEvent::new("Deposited", serde_json::json!({"amount": 5}))], None)
//!     .await?;
//! runner.wait_for("deposits", out.position, Duration::from_secs(5)).await?;
//! println!("{:#?}", store.diagnostics().await?);
//! runner.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
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
//! - Loads: a stream's version is its last row (one index step, also inside the append); a
//!   long stream is read in ranges of versions
//!   ([`read_stream_range_into`](cqrs_core::EventStore::read_stream_range_into)), each
//!   sent as rows of up to 500 events each (a couple of dozen rows instead of thousands) and
//!   handed over row by row as they arrive; a load's first read hands over the stream's version
//!   before its events, so the rest of a long stream is asked for at once.
//! - Packed blocks: the whole blocks of 500 events (versions 1–500, 501–1,000, ...) that a load
//!   reads are also kept packed, one row per block in `event_blocks` (types and payloads each
//!   joined into one text), and later loads read a block as that one row: about a third of the
//!   server's work for a long stream. The packing runs on a task of its own after the load
//!   (one at a time per store, ten blocks at most; [`PgEventStore::wait_for_packing`]), under
//!   share locks on the rows it packs. `events` stays the record: triggers forget every block
//!   whose rows are updated, deleted or truncated (the store never does; hand edits may), and a
//!   block that does not split into its versions is read as rows. The price is a second copy of
//!   a long stream's types and payloads (compressed); [`PgConfig::pack_blocks`] turns packing
//!   off. Packing needs the `UPDATE` privilege on `events` (for the row locks); without it, loads
//!   read rows as before.
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
//! makes `read_stream` fail with
//! [`Error::Corrupt`](cqrs_core::Error::Corrupt) naming stream and version, and so does a
//! payload nested too deep to parse; `read_all` hands such an event on, with empty metadata
//! holding the raw value under [`CORRUPT_METADATA_KEY`], or with a `null` payload and the reason
//! under [`CORRUPT_PAYLOAD_KEY`], so that no subscriber stalls on it.

/// SQL for the version of the stream `($1, $2)`: its last row's, 0 for no stream.
///
/// NOTE: the last row, `ORDER BY stream_version DESC LIMIT 1`, is one step down the index.
/// `MAX(stream_version)` is planned for the row count statistics give a stream (a handful), and
/// on a long stream the plain aggregate then reads every row of it (5 ms for 10,000 events).
macro_rules! stream_version_sql {
    () => {
        "COALESCE((SELECT stream_version FROM events WHERE stream_category = $1 AND stream_id = $2 \
         ORDER BY stream_version DESC LIMIT 1), 0)"
    };
}

mod append;
mod append_conns;
mod checkpoint;
mod config;
mod dead_letter;
mod diagnostics;
mod error;
mod inbox;
mod lease;
mod notify;
mod projector;
mod rows;
mod snapshot;
mod store;

pub use checkpoint::PgCheckpointStore;
pub use config::{MIGRATOR, PgConfig, migrate, schema_options};
pub use dead_letter::PgDeadLetterStore;
pub use diagnostics::{LeaseHolder, OpenTransaction, PgDiagnostics, SubscriberLag, diagnose};
pub use error::PgError;
pub use lease::PgLeases;
pub use projector::{PgProjector, PgTransactional};
pub use rows::{CORRUPT_METADATA_KEY, CORRUPT_PAYLOAD_KEY};
pub use snapshot::PgSnapshotStore;
pub use store::PgEventStore;

// Re-exported so that users name the same sqlx as this crate.
pub use sqlx;
