//! The embedded back-end of cqrs: events, snapshots, checkpoints, dead letters and
//! transactional read models in one SQLite file, with no server to install.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cqrs_core::{BoxError, EventAppender, ExpectedVersion, NewEvent, RecordedEvent, Runner, StreamId};
//! use cqrs_sqlite::{SqliteDatabase, SqliteProjector};
//! use sqlx::SqliteConnection;
//!
//! // A read model in a table of the same database, written in the checkpoint's transaction.
//! #[derive(Debug)]
//! struct Totals;
//!
//! #[async_trait::async_trait]
//! impl SqliteProjector for Totals {
//!     fn name(&self) -> &str { "totals" }
//!     async fn setup(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
//!         sqlx::query("CREATE TABLE IF NOT EXISTS totals (id TEXT PRIMARY KEY, total INTEGER NOT NULL)")
//!             .execute(conn).await?;
//!         Ok(())
//!     }
//!     async fn handle(&self, conn: &mut SqliteConnection, event: &RecordedEvent) -> Result<(), BoxError> {
//!         let amount = event.payload_value()?["amount"].as_i64().ok_or("no amount")?;
//!         sqlx::query("INSERT INTO totals VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET total = total + excluded.total")
//!             .bind(&event.stream.id).bind(amount)
//!             .execute(conn).await?;
//!         Ok(())
//!     }
//!     async fn reset(&self, conn: &mut SqliteConnection) -> Result<(), BoxError> {
//!         sqlx::query("DELETE FROM totals").execute(conn).await?;
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! // A file path works the same way (created if missing): SqliteDatabase::open("bank.db").
//! let db = SqliteDatabase::open("sqlite::memory:").await?;
//! let events = Arc::new(db.events());
//! let runner = Runner::new(events.clone(), Arc::new(db.dead_letters()))
//!     .with(db.transactional(Totals))
//!     .start();
//!
//! let stream = StreamId::new("account", "a1");
//! let deposit = NewEvent::new("Deposited", serde_json::json!({ "amount": 250 }));
//! let out = events.append(&stream, ExpectedVersion::NoStream, vec![deposit], None).await?;
//!
//! // Read your own write: wait until the projector has passed the event, then query.
//! runner.wait_for("totals", out.position, Duration::from_secs(5)).await?;
//! let total: i64 = sqlx::query_scalar("SELECT total FROM totals WHERE id = 'a1'").fetch_one(db.pool()).await?;
//! assert_eq!(total, 250);
//! runner.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Overview
//! - [`SqliteDatabase`] opens a file (created if missing; WAL mode, foreign keys, a busy
//!   timeout) or `sqlite::memory:`, runs the embedded [`MIGRATOR`], and hands out the stores,
//!   which are cheap views of it: [`SqliteEventStore`], [`SqliteSnapshotStore`],
//!   [`SqliteCheckpointStore`], [`SqliteDeadLetterStore`]. The sources are laid out as
//!   `cqrs-postgres`'s are (its hub is `PgDatabase`): `database.rs`, `event_store.rs`,
//!   `append.rs`, `read_stream.rs`, `read_all.rs`, `sql.rs` (every statement of the event
//!   store), `rows.rs`, `error.rs` (every result code).
//! - Appends run on the one write connection: writers of the process queue instead of meeting
//!   `database is locked`, a lock held by another process is waited for and retried, and
//!   positions follow commit order, so the all-stream has no gaps
//!   ([`Cursor::tx`](cqrs_core::Cursor::tx) is always 0). An append is one statement that
//!   checks the expected version and inserts every event (a transaction of a few when it
//!   carries a command id); appends that queue while one is written are written together in
//!   one transaction, each with its own check, versions and command id, a failing one failing
//!   alone. An append wakes the handle's subscribers at once; commits made through other
//!   connections to the file (other processes) wake them within
//!   [`SqliteConfig::watch_interval`].
//! - Reads of the all-stream and of a stream on a file database go through the C library
//!   directly (one blocking task per read, rows decoded where they are read); in memory they use
//!   the one connection.
//! - [`SqliteProjector`] with [`SqliteTransactional`]: read-model tables written in the same
//!   transaction as the checkpoint, for exactly-once effect. Query them through
//!   [`SqliteDatabase::pool`].
//! - Bad rows: the tables are `STRICT` and check their JSON, so raw SQL cannot store text the
//!   store could not read back. A payload that no longer fits its type, or an unknown type,
//!   fails in [`RecordedEvent::decode`](cqrs_core::RecordedEvent::decode) naming the stream,
//!   version and type, and the runner parks the event while the others go on. Metadata, ids or
//!   times that do not parse make reads fail with [`Error::Corrupt`](cqrs_core::Error::Corrupt)
//!   naming the stream and version: a row the store wrote itself is broken, and no subscriber
//!   skips it silently (a batch of the all-stream ends just before such a row).
//! - Several processes may append to the same file; their writes queue on SQLite's lock. Run
//!   each subscriber in one runner at a time: give the runners of every process
//!   [`SqliteDatabase::leases`] ([`SqliteLeases`]: a lock file per subscriber beside the
//!   database), and each subscriber runs in one process, taken over when it stops.
//! - `sqlite::memory:` is one connection shared by reads and writes (an in-memory database
//!   cannot be in WAL mode, and shared-cache connections fail instead of waiting): do not
//!   query through [`SqliteDatabase::pool`] while holding [`SqliteDatabase::begin_write`]'s
//!   transaction in the same task.

mod append;
mod checkpoints;
mod database;
mod dead_letters;
mod error;
mod event_store;
mod group;
mod inbox;
mod lease;
mod projector;
mod raw_read;
mod read_all;
mod read_stream;
mod rows;
mod snapshots;
mod sql;
mod watcher;

pub use checkpoints::SqliteCheckpointStore;
pub use database::{MIGRATOR, SqliteConfig, SqliteDatabase};
pub use dead_letters::SqliteDeadLetterStore;
pub use event_store::SqliteEventStore;
pub use lease::SqliteLeases;
pub use projector::{SqliteProjector, SqliteTransactional};
pub use snapshots::SqliteSnapshotStore;

/// The sqlx this crate is built on (0.9), re-exported so that projectors and queries name the
/// same `SqliteConnection` and pool types: use `cqrs_sqlite::sqlx`, or depend on the same
/// sqlx version.
pub use sqlx;
