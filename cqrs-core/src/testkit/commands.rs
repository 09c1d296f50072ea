//! Checks of command handling against a real store: what a [`CommandHandler`] answers when
//! other handlers (in this process or in others) write to the same streams.
//!
//! Each check panics with a message naming the broken promise, and uses fresh stream ids, so
//! checks may share a store with other tests.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{testkit::commands, EventStore, InMemoryEventStore};
//!
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
//! commands::stale_caches(store.clone(), store.clone()).await;
//! commands::racing_repeats(store).await;
//! # });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::RangeInclusive;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::command::{CommandError, CommandHandler, CommandOptions, RetryPolicy};
use crate::error::Result;
use crate::event::{Cursor, DomainEvent, ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use crate::event_store::{
    AllStreamReader, AppendResult, CommandId, EventAppender, EventStore, StreamReader, StreamSink,
    WakeUps,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum WalletEvent {
    Opened,
    Deposited(u64),
    Withdrawn(u64),
    Frozen,
    Unfrozen,
}
impl DomainEvent for WalletEvent {}

#[derive(Debug, Clone)]
enum WalletCommand {
    Open,
    Deposit(u64),
    Withdraw(u64),
    /// Emits nothing when the wallet is frozen already.
    Freeze,
    /// Emits nothing when the wallet is not frozen.
    Unfreeze,
}

#[derive(Debug, PartialEq, thiserror::Error)]
enum WalletError {
    #[error("wallet already open")]
    AlreadyOpen,
    #[error("wallet not open")]
    NotOpen,
    #[error("insufficient funds: balance {0}")]
    Insufficient(u64),
}

#[derive(Debug, Clone, Default)]
struct Wallet {
    open: bool,
    balance: u64,
    frozen: bool,
}

impl Aggregate for Wallet {
    const TYPE: &'static str = "testkit_wallet";
    type Command = WalletCommand;
    type Event = WalletEvent;
    type Error = WalletError;

    fn handle(
        &self,
        command: &WalletCommand,
    ) -> std::result::Result<Vec<WalletEvent>, WalletError> {
        use WalletCommand as C;
        Ok(match command {
            C::Open if self.open => return Err(WalletError::AlreadyOpen),
            C::Open => vec![WalletEvent::Opened],
            _ if !self.open => return Err(WalletError::NotOpen),
            C::Deposit(n) => vec![WalletEvent::Deposited(*n)],
            C::Withdraw(n) if *n > self.balance => {
                return Err(WalletError::Insufficient(self.balance));
            }
            C::Withdraw(n) => vec![WalletEvent::Withdrawn(*n)],
            C::Freeze if self.frozen => vec![],
            C::Freeze => vec![WalletEvent::Frozen],
            C::Unfreeze if !self.frozen => vec![],
            C::Unfreeze => vec![WalletEvent::Unfrozen],
        })
    }

    fn apply(&mut self, event: &WalletEvent) {
        match event {
            WalletEvent::Opened => self.open = true,
            WalletEvent::Deposited(n) => self.balance += n,
            WalletEvent::Withdrawn(n) => self.balance -= n,
            WalletEvent::Frozen => self.frozen = true,
            WalletEvent::Unfrozen => self.frozen = false,
        }
    }
}

/// A cached handler that never retries a conflict: any conflict it reports is the cache's.
fn cached(store: Arc<dyn EventStore>) -> CommandHandler<Wallet> {
    CommandHandler::new(store)
        .with_cache(64)
        .with_retry(RetryPolicy::NEVER)
}

/// Two cached handlers, on `a` and on `b` (two views of one event log, or one store twice),
/// take turns on one aggregate, so that each decides on a cached state the other has made
/// stale. Checks that no answer rests on a stale entry: a withdrawal the balance covers is
/// never refused, a command that emits events on a fresh state is never answered with nothing,
/// and a stale entry costs no retry (the handlers never retry).
pub async fn stale_caches(a: Arc<dyn EventStore>, b: Arc<dyn EventStore>) {
    const ROUNDS: u64 = 20;
    let reader = b.clone();
    let (a, b) = (cached(a), cached(b));
    let id = Uuid::new_v4().to_string();
    a.execute(&id, &WalletCommand::Open).await.expect("open");
    b.execute(&id, &WalletCommand::Deposit(10))
        .await
        .expect("a deposit on a state loaded afresh");
    for round in 0..ROUNDS {
        a.execute(&id, &WalletCommand::Deposit(100))
            .await
            .unwrap_or_else(|e| panic!("round {round}: a deposit on a stale entry failed: {e:?}"));
        // b's entry says 10: only the deposit just made through a covers this.
        match b.execute(&id, &WalletCommand::Withdraw(100)).await {
            Ok(out) => assert_eq!(out.appended, 1, "round {round}: the withdrawal appends"),
            Err(e) => panic!(
                "round {round}: a covered withdrawal was refused on a stale cached state: {e:?}"
            ),
        }
    }
    // A refusal on a current state stays a refusal, and leaves nothing stale behind.
    assert!(matches!(
        b.execute(&id, &WalletCommand::Withdraw(11)).await,
        Err(CommandError::Rejected(WalletError::Insufficient(10)))
    ));
    a.execute(&id, &WalletCommand::Deposit(1))
        .await
        .expect("deposit");
    b.execute(&id, &WalletCommand::Withdraw(11))
        .await
        .expect("a withdrawal covered since the last refusal");

    // Decisions that emit nothing: each handler's entry says the opposite of the stream.
    for round in 0..ROUNDS / 4 {
        let frozen = b
            .execute(&id, &WalletCommand::Freeze)
            .await
            .expect("freeze");
        assert_eq!(
            frozen.appended, 1,
            "round {round}: freeze on an unfrozen wallet"
        );
        let thawed = a
            .execute(&id, &WalletCommand::Unfreeze)
            .await
            .expect("thaw");
        assert_eq!(
            thawed.appended, 1,
            "round {round}: unfreeze of a frozen wallet was decided on a stale entry"
        );
    }
    let fresh = CommandHandler::<Wallet>::new(reader);
    let (state, _) = fresh.load(&id).await.expect("load");
    assert_eq!(state.balance, 0, "every withdrawal applied once");
    assert!(!state.frozen);
}

/// A repeat of a command id that raced the first (it checked the id before the first one
/// committed, and loaded after) is answered as a duplicate with the first one's result, both
/// when the first one's effect makes it refused and when it makes it decide nothing.
///
/// The interleaving is forced: the racing repeat's first look at its command id is held until
/// the other call has committed.
pub async fn racing_repeats(store: Arc<dyn EventStore>) {
    for cache in [false, true] {
        for (setup, command) in [
            (None, WalletCommand::Open),
            (Some(WalletCommand::Open), WalletCommand::Freeze),
        ] {
            let id = Uuid::new_v4().to_string();
            let plain = CommandHandler::<Wallet>::new(store.clone());
            if let Some(setup) = &setup {
                plain.execute(&id, setup).await.expect("setup");
            }
            let (held_tx, held) = oneshot::channel();
            let (release, release_rx) = oneshot::channel();
            let slow = Arc::new(HoldFirstCheck {
                inner: store.clone(),
                gate: Mutex::new(Some((held_tx, release_rx))),
            });
            let mut racing = CommandHandler::<Wallet>::new(slow);
            if cache {
                racing = racing.with_cache(8);
            }
            let cid = Uuid::new_v4();
            let repeat = {
                let (id, command) = (id.clone(), command.clone());
                tokio::spawn(async move {
                    racing
                        .execute_with(&id, &command, CommandOptions::with_id(cid))
                        .await
                })
            };
            held.await.expect("the repeat checks its command id");
            let first = plain
                .execute_with(&id, &command, CommandOptions::with_id(cid))
                .await
                .expect("the first call");
            assert_eq!(first.appended, 1);
            release.send(()).expect("release");
            let repeat = repeat
                .await
                .expect("join")
                .unwrap_or_else(|e| panic!("a racing repeat of {command:?} failed: {e:?}"));
            assert!(
                repeat.duplicate,
                "a racing repeat of {command:?} was answered as a new command: {repeat:?}"
            );
            assert_eq!(
                (repeat.version, repeat.position, repeat.appended),
                (first.version, first.position, 0),
                "a racing repeat gets the first result"
            );
        }
    }
}

/// A store whose first [`command_result`](EventStore::command_result) reads its answer, then
/// says so and waits for a go before returning it: the caller acts on an answer that has gone
/// stale meanwhile.
struct HoldFirstCheck {
    inner: Arc<dyn EventStore>,
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl EventAppender for HoldFirstCheck {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events, command).await
    }
    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        let found = self.inner.command_result(stream, command).await?;
        let gate = self.gate.lock().expect("gate").take();
        if let Some((held, go)) = gate {
            let _ = held.send(());
            let _ = go.await;
        }
        Ok(found)
    }
}

#[async_trait]
impl StreamReader for HoldFirstCheck {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        self.inner.read_stream_into(stream, versions, sink).await
    }
}

#[async_trait]
impl AllStreamReader for HoldFirstCheck {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }
    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        self.inner.cursor_of(position).await
    }
    fn wake_ups(&self) -> WakeUps {
        self.inner.wake_ups()
    }
}
