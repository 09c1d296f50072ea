//! The bank service: its command handlers, the runner with every read model and the process
//! manager, the commands (each with an optional idempotency key) and the reads of your own
//! writes.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{CommandHandler, Process, RetryPolicy, RunnerConfig, RunnerHandle, Subscriber};
use uuid::Uuid;

use crate::answers::{Accepted, Opened, ProjectionStatus, Written};
use crate::backend::Backend;
use crate::domain::account::{Account, AccountCommand, AccountStatus};
use crate::domain::money::Amount;
use crate::domain::transfer::{Transfer, TransferCommand, TransferError};
use crate::error::BankError;
use crate::idempotency::{Keyed, key_id, once, options};
use crate::process::TransferProcess;
use crate::readmodel::{AccountView, LargeWithdrawalView, ReadModel, StatementLine, TransferView};

/// Tuning of a [`Bank`].
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
                ..RetryPolicy::default()
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
    /// Handlers on `backend`'s store, with a cache, account snapshots every 100 events, and
    /// `retry`.
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
}

/// Every subscriber of the service: the read models and the process manager.
pub fn subscribers(backend: &Backend, handlers: &Handlers) -> Vec<Arc<dyn Subscriber>> {
    let mut subs: Vec<_> = ReadModel::ALL.map(|m| backend.read_model(m)).into();
    let process = TransferProcess::new(handlers.accounts.clone(), handlers.transfers.clone());
    subs.push(Arc::new(Process::new(process, backend.checkpoints())));
    subs
}

/// The running service.
#[derive(Debug)]
pub struct Bank {
    backend: Backend,
    handlers: Handlers,
    runner: RunnerHandle,
    read_timeout: Duration,
}

impl Bank {
    /// Starts command handling and every projector and process manager on `backend`.
    pub fn start(backend: Backend, config: BankConfig) -> Self {
        let handlers = Handlers::new(&backend, config.retry);
        let mut runner = backend.runner(config.runner);
        for sub in subscribers(&backend, &handlers) {
            runner = runner.with_arc(sub);
        }
        Bank {
            runner: runner.start(),
            backend,
            handlers,
            read_timeout: config.read_timeout,
        }
    }

    /// The back-end.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Opens an account for `owner`. With an idempotency key, the account id derives from it.
    pub async fn open_account(&self, owner: &str, key: Option<&str>) -> Result<Opened, BankError> {
        let id = key.map_or_else(Uuid::new_v4, |k| key_id("account", k));
        let keyed = Keyed::new("open", key, &("open", owner))?;
        let cmd = AccountCommand::Open {
            owner: owner.into(),
        };
        once(&self.backend, keyed, async {
            let opts = options(keyed, Some(id));
            let out = self
                .handlers
                .accounts
                .execute_with(&id.to_string(), &cmd, opts)
                .await?;
            Ok(Opened {
                id,
                version: out.version,
                position: out.position,
            })
        })
        .await
    }

    /// Deposits `amount` on account `id`.
    pub async fn deposit(
        &self,
        id: Uuid,
        amount: Amount,
        key: Option<&str>,
    ) -> Result<Written, BankError> {
        let cmd = AccountCommand::Deposit { amount };
        self.account_command(id, "deposit", Some(amount), cmd, key)
            .await
    }

    /// Withdraws `amount` from account `id` (422 `insufficient_funds` past the balance).
    pub async fn withdraw(
        &self,
        id: Uuid,
        amount: Amount,
        key: Option<&str>,
    ) -> Result<Written, BankError> {
        let cmd = AccountCommand::Withdraw { amount };
        self.account_command(id, "withdraw", Some(amount), cmd, key)
            .await
    }

    /// Closes account `id` (422 `balance_not_zero` unless empty).
    pub async fn close(&self, id: Uuid, key: Option<&str>) -> Result<Written, BankError> {
        self.account_command(id, "close", None, AccountCommand::Close, key)
            .await
    }

    /// Runs `cmd`, the operation `op` (with its `amount`, if any), on account `id`.
    async fn account_command(
        &self,
        id: Uuid,
        op: &str,
        amount: Option<Amount>,
        cmd: AccountCommand,
        key: Option<&str>,
    ) -> Result<Written, BankError> {
        let keyed = Keyed::new(&format!("{op} {id}"), key, &(op, amount))?;
        once(&self.backend, keyed, async {
            let opts = options(keyed, None);
            let out = self
                .handlers
                .accounts
                .execute_with(&id.to_string(), &cmd, opts)
                .await?;
            Ok(Written {
                version: out.version,
                position: out.position,
            })
        })
        .await
    }

    /// Starts a transfer; the process manager carries it out. Both accounts must exist.
    pub async fn transfer(
        &self,
        from: Uuid,
        to: Uuid,
        amount: Amount,
        key: Option<&str>,
    ) -> Result<Accepted, BankError> {
        let id = key.map_or_else(Uuid::new_v4, |k| key_id("transfer", k));
        let keyed = Keyed::new("transfer start", key, &("transfer", from, to, amount))?;
        once(&self.backend, keyed, async {
            // NOTE: the store answers a keyed repeat (or the key reused) before the service's
            // own checks, which the first request passed.
            let stream = CommandHandler::<Transfer>::stream(&id.to_string());
            let repeat = match keyed {
                Some(k) => {
                    self.backend
                        .events()
                        .command_result(&stream, k.command_id())
                        .await?
                }
                None => None,
            };
            if repeat.is_none() {
                self.check_transfer(from, to).await?;
            }
            let cmd = TransferCommand::Start { from, to, amount };
            let opts = options(keyed, Some(id));
            let out = self
                .handlers
                .transfers
                .execute_with(&id.to_string(), &cmd, opts)
                .await?;
            Ok(Accepted {
                id,
                position: out.position,
            })
        })
        .await
    }

    /// Whether a transfer from `from` to `to` may start: two accounts, both opened.
    async fn check_transfer(&self, from: Uuid, to: Uuid) -> Result<(), BankError> {
        if from == to {
            return Err(TransferError::SameAccount.into());
        }
        for account in [from, to] {
            let (state, _) = self.handlers.accounts.load(&account.to_string()).await?;
            if state.status == AccountStatus::New {
                return Err(BankError::NotFound("account"));
            }
        }
        Ok(())
    }

    /// Waits until `model` has passed global position `after` (504 after the read timeout).
    pub async fn wait_for(&self, model: ReadModel, after: Option<u64>) -> Result<(), BankError> {
        let Some(after) = after else { return Ok(()) };
        // NOTE: the runner follows every subscriber, also one whose lease another process
        // holds (through its committed checkpoint), so one wait serves both.
        match self
            .runner
            .wait_for(model.name(), after, self.read_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(cqrs_core::Error::Timeout(_)) => Err(BankError::Timeout(model.name().into())),
            Err(cqrs_core::Error::NotFound(_)) => Err(BankError::invalid(format!(
                "position {after} is past the end of the log"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The `accounts` row of `id`, after position `after` if given.
    pub async fn account(&self, id: Uuid, after: Option<u64>) -> Result<AccountView, BankError> {
        self.wait_for(ReadModel::Accounts, after).await?;
        let row = self.backend.queries().account(&id.to_string()).await?;
        row.ok_or(BankError::NotFound("account"))
    }

    /// The statement of `id`, after position `after` if given.
    pub async fn statement(
        &self,
        id: Uuid,
        after: Option<u64>,
    ) -> Result<Vec<StatementLine>, BankError> {
        self.wait_for(ReadModel::Statement, after).await?;
        // NOTE: an account without movements has an empty statement; an unknown one is a 404.
        self.account(id, after).await?;
        Ok(self.backend.queries().statement(&id.to_string()).await?)
    }

    /// The `transfers` row of `id`, after position `after` if given.
    pub async fn transfer_view(
        &self,
        id: Uuid,
        after: Option<u64>,
    ) -> Result<TransferView, BankError> {
        self.wait_for(ReadModel::Transfers, after).await?;
        let row = self.backend.queries().transfer(&id.to_string()).await?;
        row.ok_or(BankError::NotFound("transfer"))
    }

    /// Every flagged large withdrawal, after position `after` if given.
    pub async fn large_withdrawals(
        &self,
        after: Option<u64>,
    ) -> Result<Vec<LargeWithdrawalView>, BankError> {
        self.wait_for(ReadModel::LargeWithdrawals, after).await?;
        Ok(self.backend.queries().large_withdrawals().await?)
    }

    /// Position, lag and parked count of every projector and process manager.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>, BankError> {
        Ok(self.runner.status().await?)
    }

    /// Waits until every subscriber has passed the store's head and the process manager has
    /// nothing left to do: the head stays put once they all reach it (for tests and the demo).
    pub async fn settle(&self, timeout: Duration) -> Result<(), BankError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let head = self.backend.events().head_position().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.runner.wait_for_all(head, left).await?;
            if self.backend.events().head_position().await? == head {
                return Ok(());
            }
        }
    }

    /// Stops the runner after its current batches.
    pub async fn shutdown(self) {
        self.runner.shutdown().await;
    }
}
