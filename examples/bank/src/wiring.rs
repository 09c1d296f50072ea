//! How the service is put together: its tuning, its command handlers, its subscribers, and
//! the ids idempotency keys stand for.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{Checkpointed, CommandHandler, RetryPolicy, RunnerConfig, Subscriber};
use uuid::Uuid;

use crate::backend::{Backend, LeaseSet};
use crate::domain::account::Account;
use crate::domain::transfer::Transfer;
use crate::process::{TRANSFER_PROCESS, TransferProcess};
use crate::readmodel::ReadModel;

/// The namespace of ids derived from idempotency keys.
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_6e6b_2d69_6465_6d70_6f74_656e_6379);

/// A deterministic id for what an idempotency key asks for, within `scope`.
pub fn key_id(scope: &str, key: &str) -> Uuid {
    Uuid::new_v5(&KEY_NAMESPACE, format!("{scope}\n{key}").as_bytes())
}

/// Tuning of a [`Bank`](crate::Bank).
#[derive(Debug, Clone)]
pub struct BankConfig {
    /// How long a read with `?after=N` waits for its read model before giving up.
    pub read_timeout: Duration,
    /// The subscription runner's tuning.
    pub runner: RunnerConfig,
    /// Retries of a command after a concurrency conflict (then 409).
    pub retry: RetryPolicy,
}

impl Default for BankConfig {
    fn default() -> Self {
        BankConfig {
            read_timeout: Duration::from_secs(5),
            runner: RunnerConfig {
                poll_interval: Duration::from_millis(500),
                ..RunnerConfig::default()
            },
            // NOTE: hot accounts see conflicts under load (the process manager writes to them
            // too); ten tries waiting 1, 2, 4 ... ms ride those out in about half a second.
            retry: RetryPolicy {
                max_attempts: 10,
                backoff: Duration::from_millis(1),
            },
        }
    }
}

/// The command handlers of a back-end.
#[derive(Debug, Clone)]
pub struct Handlers {
    /// Accounts.
    pub accounts: Arc<CommandHandler<Account>>,
    /// Transfers.
    pub transfers: Arc<CommandHandler<Transfer>>,
}

impl Handlers {
    /// Handlers on `backend`'s store, with a cache, snapshots every 100 events, and `retry`.
    pub fn new(backend: &Backend, retry: RetryPolicy) -> Self {
        let accounts = CommandHandler::<Account>::new(backend.events())
            .with_retry(retry)
            .with_cache(10_000)
            .with_snapshots(backend.snapshots(), 100, 1);
        let transfers = CommandHandler::<Transfer>::new(backend.events())
            .with_retry(retry)
            .with_cache(10_000);
        Handlers {
            accounts: Arc::new(accounts),
            transfers: Arc::new(transfers),
        }
    }

    /// The process manager driving transfers with these handlers.
    pub fn process(&self) -> TransferProcess {
        TransferProcess::new(self.accounts.clone(), self.transfers.clone())
    }
}

/// Every subscriber of the service: the read models (fenced by `leases` on PostgreSQL; give
/// the runner the same leases) and the process manager.
pub fn subscribers(
    backend: &Backend,
    handlers: &Handlers,
    leases: Option<&LeaseSet>,
) -> Vec<Arc<dyn Subscriber>> {
    let mut subs: Vec<Arc<dyn Subscriber>> = ReadModel::ALL
        .into_iter()
        .map(|m| backend.read_model(m, leases))
        .collect();
    subs.push(Arc::new(Checkpointed::new(
        handlers.process(),
        backend.checkpoints(),
    )));
    subs
}

/// The names of the subscribers the service runs.
pub fn subscriber_names() -> Vec<&'static str> {
    let mut names: Vec<_> = ReadModel::ALL.iter().map(|m| m.name()).collect();
    names.push(TRANSFER_PROCESS);
    names
}
