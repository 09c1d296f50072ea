//! The example bank service, as a library so that tests and the `bank` binary share it.
//!
//! ```
//! use bank::{Amount, Backend, Bank, BankConfig};
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let bank = Bank::start(Backend::open("sqlite::memory:").await?, BankConfig::default());
//! let alice = bank.open_account("alice", None).await?;
//! let bob = bank.open_account("bob", None).await?;
//! bank.deposit(alice.id, Amount::new(1_000)?, None).await?;
//! bank.transfer(alice.id, bob.id, Amount::new(300)?, None).await?;
//! bank.settle(std::time::Duration::from_secs(5)).await?;
//! assert_eq!(bank.account(bob.id, None).await?.balance, 300);
//! bank.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! From route to row: `http/routes.rs` (`GET /accounts/{id}`) calls [`Bank::account`]
//! (`service.rs`), which waits for the `accounts` projector to pass the asked position and
//! asks [`Queries::account`] (`readmodel/queries.rs`) for the row `readmodel/accounts.rs`
//! keeps. A command goes the other way: `POST /accounts/{id}/deposit` calls [`Bank::deposit`],
//! which runs [`Account`]'s decision (`domain/account.rs`) through the framework's command
//! handler, once per idempotency key (`idempotency.rs`).
//!
//! - `domain/`: the aggregates [`Account`] and [`Transfer`], pure; money is [`Amount`].
//! - `process.rs`: [`TransferProcess`], the process manager that carries transfers out.
//! - `readmodel/`: SQL tables kept by transactional projectors, each written once for SQLite
//!   and PostgreSQL.
//! - `backend.rs`: [`Backend`], the embedded SQLite store or PostgreSQL, by URL.
//! - `notifier/`: [`start_relay`] publishes every event to RabbitMQ or NATS JetStream;
//!   [`start_notifier`] runs a second service keeping its own read model of them.

mod answers;
mod backend;
mod domain;
mod error;
mod http;
mod idempotency;
mod notifier;
mod process;
mod readmodel;
mod service;
pub mod telemetry;

pub use answers::{Accepted, Opened, ProjectionStatus, Written};
pub use backend::{Backend, DEFAULT_DATABASE};
pub use domain::account::{
    Account, AccountCommand, AccountError, AccountEvent, AccountStatus, MAX_OWNER_LEN, valid_owner,
};
pub use domain::money::{Amount, InvalidAmount, MAX_AMOUNT, MAX_BALANCE, format_minor};
pub use domain::transfer::{
    Transfer, TransferCommand, TransferError, TransferEvent, TransferStatus,
};
pub use error::BankError;
pub use http::{Operations, operations_router, router, router_with};
pub use notifier::{
    BROKER_RELAY, Broker, Channels, DEFAULT_NOTIFIER_DATABASE, Notice, NotifiedAccount, Notifier,
    NotifierHandle, broker_relay, run_notifier, start_notifier, start_relay,
};
pub use process::{TRANSFER_PROCESS, TransferProcess};
pub use readmodel::{
    AccountView, LARGE_WITHDRAWAL, LargeWithdrawalView, Queries, ReadModel, SqlProjection,
    StatementLine, TransferView,
};
pub use service::{Bank, BankConfig, Handlers, subscribers};
