//! The bank service: command handling, the runner with every read model and the process
//! manager, and the queries, on one back-end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    CommandHandler, CommandOptions, CommandOutcome, Metadata, Runner, RunnerHandle, StreamId,
    StreamReaderExt, Subscriber,
};
use uuid::Uuid;

use crate::answers::{Accepted, Opened, ProjectionStatus, Written};
use crate::backend::Backend;
use crate::domain::account::{Account, AccountCommand, AccountStatus};
use crate::domain::money::Amount;
use crate::domain::transfer::{Transfer, TransferCommand};
use crate::error::BankError;
use crate::readmodel::{AccountView, ReadModel, StatementLine, TransferView};
use crate::wiring::{BankConfig, Handlers, key_id, subscribers};

/// The running service.
pub struct Bank {
    backend: Backend,
    handlers: Handlers,
    runner: RunnerHandle,
    /// The subscribers the runner drives, by name, to read their committed checkpoints.
    subs: HashMap<String, Arc<dyn Subscriber>>,
    config: BankConfig,
}

impl std::fmt::Debug for Bank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bank")
            .field("backend", &self.backend)
            .field("runner", &self.runner)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Bank {
    /// Starts command handling and every projector and process manager on `backend`.
    pub fn start(backend: Backend, config: BankConfig) -> Self {
        let handlers = Handlers::new(&backend, config.retry);
        let mut runner = Runner::new(backend.events(), backend.dead_letters())
            .with_config(config.runner.clone());
        let leases = backend.leases();
        if let Some(l) = &leases {
            runner = runner.with_leases(l.as_leases());
        }
        let mut subs = HashMap::new();
        for sub in subscribers(&backend, &handlers, leases.as_ref()) {
            subs.insert(sub.name().to_owned(), sub.clone());
            runner = runner.with_arc(sub);
        }
        Bank {
            runner: runner.start(),
            subs,
            backend,
            handlers,
            config,
        }
    }

    /// The back-end.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The command handlers.
    pub fn handlers(&self) -> &Handlers {
        &self.handlers
    }

    /// The runner.
    pub fn runner(&self) -> &RunnerHandle {
        &self.runner
    }

    /// Opens an account for `owner`. With an idempotency key, the account id derives from it
    /// and a repeat returns the first answer (the key sent with another owner: 422
    /// `idempotency_key_reused`).
    pub async fn open_account(&self, owner: &str, key: Option<&str>) -> Result<Opened, BankError> {
        let id = key.map_or_else(Uuid::new_v4, |k| key_id("account", k));
        let cid = key.map(|k| key_id("open", k));
        let request = format!("open {owner:?}");
        let stream = CommandHandler::<Account>::stream(&id.to_string());
        let done = |version, position| Opened {
            id,
            version,
            position,
        };
        self.once(&stream, cid, &request, done, async {
            let mut opts = options(cid, &request);
            opts.metadata.correlation_id = Some(id);
            let cmd = AccountCommand::Open {
                owner: owner.into(),
            };
            Ok(self
                .handlers
                .accounts
                .execute_with(&id.to_string(), &cmd, opts)
                .await?)
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
        let cid = key.map(|k| key_id(&format!("{op} {id}"), k));
        let request = match amount {
            Some(a) => format!("{op} {}", a.get()),
            None => op.to_owned(),
        };
        let stream = CommandHandler::<Account>::stream(&id.to_string());
        let done = |version, position| Written { version, position };
        self.once(&stream, cid, &request, done, async {
            Ok(self
                .handlers
                .accounts
                .execute_with(&id.to_string(), &cmd, options(cid, &request))
                .await?)
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
        let cid = key.map(|k| key_id("transfer start", k));
        let request = format!("transfer {from} {to} {}", amount.get());
        let stream = CommandHandler::<Transfer>::stream(&id.to_string());
        self.once(
            &stream,
            cid,
            &request,
            |_, position| Accepted { id, position },
            async {
                if from == to {
                    return Err(crate::domain::transfer::TransferError::SameAccount.into());
                }
                for account in [from, to] {
                    if self
                        .handlers
                        .accounts
                        .load(&account.to_string())
                        .await?
                        .0
                        .status
                        == AccountStatus::New
                    {
                        return Err(BankError::NotFound("account"));
                    }
                }
                let mut opts = options(cid, &request);
                opts.metadata.correlation_id = Some(id);
                let cmd = TransferCommand::Start { from, to, amount };
                Ok(self
                    .handlers
                    .transfers
                    .execute_with(&id.to_string(), &cmd, opts)
                    .await?)
            },
        )
        .await
    }

    /// Runs a command sent with an optional idempotency key, whose derived command id is
    /// `cid` on `stream`. A key seen before gets its first answer again, success or refusal,
    /// and nothing runs: a success is found by its command id in the event store; a refusal
    /// (404, 409 or 422) is remembered in a table of its own, since it wrote no events.
    ///
    /// `request` names the request and its arguments; the events of a keyed command carry it
    /// in their metadata, and a key used again for another request is refused (422
    /// `idempotency_key_reused`) rather than answered with the first request's result, also
    /// when the repeat is found by the append itself (two requests racing). `done` makes the
    /// answer from the command's version and position.
    async fn once<T>(
        &self,
        stream: &StreamId,
        cid: Option<Uuid>,
        request: &str,
        done: impl FnOnce(u64, u64) -> T,
        run: impl Future<Output = Result<CommandOutcome, BankError>>,
    ) -> Result<T, BankError> {
        let Some(cid) = cid else {
            let out = run.await?;
            return Ok(done(out.version, out.position));
        };
        if let Some(prev) = self
            .backend
            .events()
            .command_result(stream, cid.into())
            .await?
        {
            self.check_request(stream, prev.version, request).await?;
            return Ok(done(prev.version, prev.position));
        }
        if let Some((status, code, message, first)) = self.backend.refusal(cid).await? {
            if first.is_some_and(|first| first != request) {
                return Err(key_reused());
            }
            return Err(BankError::repeated(
                u16::try_from(status).unwrap_or(422),
                &code,
                message,
            ));
        }
        match run.await {
            Ok(out) => {
                if out.duplicate {
                    self.check_request(stream, out.version, request).await?;
                }
                Ok(done(out.version, out.position))
            }
            Err(e) if e.is_final() => {
                self.backend
                    .record_refusal(cid, e.status(), e.code(), &e.to_string(), request)
                    .await?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Refuses `request` if the event at `version` of `stream` (the last of the command that
    /// first used the key) was written for another request. Events written before requests
    /// were recorded pass.
    async fn check_request(
        &self,
        stream: &StreamId,
        version: u64,
        request: &str,
    ) -> Result<(), BankError> {
        let first = self
            .backend
            .events()
            .read_stream(stream, version, 1)
            .await?;
        let recorded = first
            .first()
            .and_then(|e| e.metadata.extra.get(REQUEST_METADATA))
            .and_then(|r| r.as_str());
        match recorded {
            Some(r) if r != request => Err(key_reused()),
            _ => Ok(()),
        }
    }

    /// Waits until `model` has passed global position `after` (504 after the read timeout).
    pub async fn wait_for(&self, model: ReadModel, after: Option<u64>) -> Result<(), BankError> {
        let Some(after) = after else { return Ok(()) };
        let (name, timeout) = (model.name(), self.config.read_timeout);
        // NOTE: on PostgreSQL another process may hold the projector's lease; then only the
        // checkpoint committed with the read model tells how far it is. Watching both serves
        // either case; the runner's signal is the quick one when this process runs it.
        let watched = tokio::select! {
            r = self.runner.wait_for(name, after, timeout) => r,
            r = tokio::time::timeout(timeout, self.committed(name, after)) => {
                r.unwrap_or_else(|_| Err(cqrs_core::Error::Timeout(name.into())))
            }
        };
        match watched {
            Ok(()) => Ok(()),
            Err(cqrs_core::Error::Timeout(_)) => Err(BankError::Timeout(name.into())),
            Err(cqrs_core::Error::NotFound(_)) => Err(BankError::invalid(format!(
                "position {after} is past the end of the log"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Returns once the committed checkpoint of subscriber `name` has passed `position`.
    async fn committed(&self, name: &str, position: u64) -> Result<(), cqrs_core::Error> {
        let sub = self
            .subs
            .get(name)
            .ok_or_else(|| cqrs_core::Error::NotFound(name.into()))?;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Some(target) = self.backend.events().cursor_of(position).await?
                && sub.checkpoint().await? >= target
            {
                return Ok(());
            }
        }
    }

    /// The `accounts` row of `id`, after position `after` if given.
    pub async fn account(&self, id: Uuid, after: Option<u64>) -> Result<AccountView, BankError> {
        self.wait_for(ReadModel::Accounts, after).await?;
        self.backend
            .account(&id.to_string())
            .await?
            .ok_or(BankError::NotFound("account"))
    }

    /// The statement of `id`, after position `after` if given.
    pub async fn statement(
        &self,
        id: Uuid,
        after: Option<u64>,
    ) -> Result<Vec<StatementLine>, BankError> {
        self.wait_for(ReadModel::Statement, after).await?;
        // NOTE: an account without movements has an empty statement; an unknown one is a 404.
        self.wait_for(ReadModel::Accounts, after).await?;
        if self.backend.account(&id.to_string()).await?.is_none() {
            return Err(BankError::NotFound("account"));
        }
        Ok(self.backend.statement(&id.to_string()).await?)
    }

    /// The `transfers` row of `id`, after position `after` if given.
    pub async fn transfer_view(
        &self,
        id: Uuid,
        after: Option<u64>,
    ) -> Result<TransferView, BankError> {
        self.wait_for(ReadModel::Transfers, after).await?;
        self.backend
            .transfer(&id.to_string())
            .await?
            .ok_or(BankError::NotFound("transfer"))
    }

    /// Position, lag and parked count of every projector and process manager.
    pub async fn projections(&self) -> Result<Vec<ProjectionStatus>, BankError> {
        let mut out = Vec::new();
        for status in self.runner.status().await? {
            let mut p = ProjectionStatus::from(status);
            // A projector another process runs: its committed checkpoint tells where it is.
            if !p.active
                && let Some(sub) = self.subs.get(&p.name)
            {
                let head = p.position + p.lag;
                p.position = sub.checkpoint().await?.position;
                p.lag = head.saturating_sub(p.position);
            }
            out.push(p);
        }
        Ok(out)
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

/// The answer to an idempotency key sent again with another request.
fn key_reused() -> BankError {
    BankError::Rule {
        code: "idempotency_key_reused",
        message: "this Idempotency-Key was first used for another request".into(),
    }
}

/// The metadata entry, on the events of a command sent with an idempotency key, naming the
/// request the key was first used for.
pub(crate) const REQUEST_METADATA: &str = "request";

fn options(command_id: Option<Uuid>, request: &str) -> CommandOptions {
    let mut metadata = Metadata::default();
    if command_id.is_some() {
        metadata
            .extra
            .insert(REQUEST_METADATA.into(), request.to_owned().into());
    }
    CommandOptions {
        command_id,
        fingerprint: None,
        metadata,
    }
}
