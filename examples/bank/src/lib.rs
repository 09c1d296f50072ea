//! The example bank service, as a library so that tests and the `bank` binary share it.
//!
//! ```
//! use bank::{Amount, Backend, Bank, BankConfig};
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let bank = Bank::start(Backend::open("sqlite::memory:").await?, BankConfig::default());
//! let alice = bank.open_account("alice", None).await?;
//! let bob = bank.open_account("bob", None).await?;
//! bank.deposit(alice.id, Amount::new(1_000)?, None).await?;
//! let t = bank.transfer(alice.id, bob.id, Amount::new(300)?, None).await?;
//! bank.settle(std::time::Duration::from_secs(5)).await?;
//! # let _ = t;
//! assert_eq!(bank.account(bob.id, None).await?.balance, 300);
//! bank.shutdown().await;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - The domain: the aggregates [`Account`] and [`Transfer`], pure and tested with
//!   given/when/then; money is [`Amount`], integer minor units.
//! - [`TransferProcess`]: the process manager that carries transfers out.
//! - [`ReadModel`]: `accounts`, `statement`, `transfers` and the `large_withdrawals` flags,
//!   SQL tables kept by transactional projectors, each written once for SQLite and PostgreSQL
//!   (`src/readmodel/accounts.rs` and its neighbours), read through [`Queries`].
//! - [`Backend`]: the embedded SQLite store (default `./bank.db`) or PostgreSQL, by URL.
//! - [`Bank`]: the service (commands with idempotency keys, reads of your own writes),
//!   [`router`]: its HTTP API.
//!
//! From route to row: `http/routes.rs` (`GET /accounts/{id}`) calls [`Bank::account`]
//! (`service.rs`), which waits for the `accounts` projector to pass the asked position and
//! asks [`Queries::account`] (`readmodel/queries.rs`) for the row that
//! `readmodel/accounts.rs` keeps.
//! - The broker bridge: [`start_relay`] publishes every event to RabbitMQ or NATS JetStream
//!   (`bank serve --broker URL`); [`start_notifier`] runs the second service, `bank notifier`,
//!   which keeps its own read model of those events, the customers' [`Notice`]s.

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
pub use http::router;
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
