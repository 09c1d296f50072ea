//! The subscription runner, replay and process managers on the in-memory parts.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Account, AccountCommand, Balances};
use cqrs_core::*;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(10);

fn fast() -> RunnerConfig {
    RunnerConfig {
        batch_size: 50,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        dead_letter_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(200),
        ..RunnerConfig::default()
    }
}

/// Opens `n` accounts and gives each `deposits` deposits, spread over several tasks.
async fn workload(store: Arc<dyn EventStore>, n: usize, deposits: u64) -> u64 {
    let accounts = Arc::new(CommandHandler::<Account>::new(store.clone()));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..n).step_by(4) {
                let id = format!("acc-{i}");
                accounts
                    .execute(
                        &id,
                        &AccountCommand::Open {
                            owner: format!("owner {i}"),
                        },
                    )
                    .await
                    .unwrap();
                for d in 1..=deposits {
                    accounts
                        .execute(
                            &id,
                            &AccountCommand::Deposit {
                                amount: d * 10 + i as u64,
                            },
                        )
                        .await
                        .unwrap();
                }
                if i % 3 == 0 {
                    accounts
                        .execute(&id, &AccountCommand::Withdraw { amount: 5 })
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    store.head_position().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_projection_equals_replay_from_zero() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let live = Arc::new(Balances::named("balances"));
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(fast())
        .with(Checkpointed::new(
            live.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    // Events arrive while the runner follows live.
    let head = workload(store.clone(), 30, 20).await;
    runner.wait_for("balances", head, WAIT).await.unwrap();
    let status = runner.status().await.unwrap();
    assert_eq!(
        (status[0].position, status[0].lag, status[0].parked),
        (head, 0, 0)
    );
    runner.shutdown().await;

    let rebuilt = Arc::new(Balances::named("balances"));
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let mut seen = Vec::new();
    let report = Replay::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(RunnerConfig {
            batch_size: 97,
            ..fast()
        })
        .run(
            &Checkpointed::new(rebuilt.clone(), checkpoints.clone()),
            |p| seen.push(p),
        )
        .await
        .unwrap();
    assert_eq!(report.events, head);
    assert_eq!(
        rebuilt.snapshot(),
        live.snapshot(),
        "replay gives the same read model as live processing"
    );
    assert_eq!(rebuilt.snapshot().len(), 30);
    assert_eq!(checkpoints.load("balances").await.unwrap().position, head);
    assert!(
        seen.windows(2).all(|w| w[0].processed < w[1].processed),
        "progress only grows"
    );
    assert_eq!(seen.last().unwrap().processed, head);
    assert!(seen.iter().all(|p| p.head == head));

    // Replaying again over a dirty model resets it first: same result, not doubled.
    Replay::new(store, Arc::new(InMemoryDeadLetterStore::new()))
        .run(&Checkpointed::new(rebuilt.clone(), checkpoints), |_| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.snapshot(), live.snapshot());
}

/// Fails on every event of one stream while `poisoned` holds.
#[derive(Debug)]
/// Fails on version 2 of one stream while `poisoned`. Delivery is at least once (a batch that
/// fails is handled again one event at a time, from its start), so, like a real projector with
/// an idempotency key, it skips events it has already handled: its read model then tells
/// exactly which events took effect, whatever the batches were.
struct Picky {
    inner: Balances,
    poisoned_stream: String,
    poisoned: AtomicBool,
    attempts: AtomicUsize,
    handled: Mutex<HashSet<uuid::Uuid>>,
    sequenced: bool,
    /// The versions of the poisoned stream that took effect, in the order they did.
    order: Mutex<Vec<u64>>,
}

impl Picky {
    fn new(poisoned_stream: &str, sequenced: bool) -> Self {
        Picky {
            inner: Balances::named("picky"),
            poisoned_stream: poisoned_stream.into(),
            poisoned: AtomicBool::new(true),
            attempts: AtomicUsize::new(0),
            handled: Mutex::default(),
            sequenced,
            order: Mutex::default(),
        }
    }
}

#[async_trait::async_trait]
impl Projector for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    fn sequenced(&self) -> bool {
        self.sequenced
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.stream.id == self.poisoned_stream
            && event.stream_version == 2
            && self.poisoned.load(Ordering::SeqCst)
        {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            return Err(format!("cannot handle {} v{}", event.stream, event.stream_version).into());
        }
        if !self.handled.lock().unwrap().insert(event.event_id) {
            return Ok(());
        }
        if event.stream.id == self.poisoned_stream {
            self.order.lock().unwrap().push(event.stream_version);
        }
        self.inner.handle(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_of_an_unsequenced_projector_is_parked_while_the_rest_goes_on() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let picky = Arc::new(Picky::new("acc-1", false));
    let other = Arc::new(Balances::named("other"));
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            picky.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .with(Checkpointed::new(
            other.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let head = workload(store.clone(), 8, 3).await;
    runner.wait_for_all(head, WAIT).await.unwrap();

    let letters = dead.list(Some("picky")).await.unwrap();
    assert_eq!(letters.len(), 1, "exactly the poison event is parked");
    let letter = &letters[0];
    assert_eq!(
        (letter.event.stream.id.as_str(), letter.event.stream_version),
        ("acc-1", 2)
    );
    assert!(
        letter.error.contains("cannot handle account-acc-1 v2"),
        "{}",
        letter.error
    );
    assert_eq!(letter.attempts, fast().max_attempts);
    assert_eq!(
        picky.attempts.load(Ordering::SeqCst) as u32,
        fast().max_attempts + 1,
        "tried in its batch, then max_attempts alone"
    );
    // Later events of every stream (the poisoned one included) and the other projector went on.
    assert_eq!(picky.inner.snapshot().len(), 8);
    assert_eq!(other.snapshot().len(), 8);
    assert_eq!(dead.list(Some("other")).await.unwrap().len(), 0);
    let lost = other.snapshot()["acc-1"].1 - picky.inner.snapshot()["acc-1"].1;
    assert_eq!(lost, 11, "only the parked deposit (10 * 1 + 1) is missing");
    let status = runner.status().await.unwrap();
    let picky_status = status.iter().find(|s| s.name == "picky").unwrap();
    assert_eq!((picky_status.parked, picky_status.position), (1, head));

    // Retry after the cause is fixed: the event is handled and the dead letter goes away.
    picky.poisoned.store(false, Ordering::SeqCst);
    dead.set_status(letter.id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dead.list(Some("picky")).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "retried dead letter not resolved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        picky.inner.snapshot(),
        other.snapshot(),
        "the retried event completes the read model"
    );
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_retry_parks_again_and_skip_removes() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let picky = Arc::new(Picky::new("acc-0", true));
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            picky.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let head = workload(store.clone(), 2, 2).await;
    // NOTE: the head may be an event held behind the poison; the status tells it was passed.
    until_at(&runner, "picky", head).await;
    let id = dead.list(None).await.unwrap()[0].id;
    dead.set_status(id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let l = &dead.list(None).await.unwrap()[0];
        if l.status == DeadLetterStatus::Parked {
            assert_eq!(
                l.attempts,
                fast().max_attempts + 1,
                "the failed retry counts"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The stream's next event waits behind it; skipping the poison releases it.
    let held = &dead.list(None).await.unwrap()[1];
    assert_eq!(
        (held.status, held.event.stream_version),
        (DeadLetterStatus::Held, 3)
    );
    dead.remove(id).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dead.list(None).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "held event not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        *picky.order.lock().unwrap(),
        [1, 3, 4],
        "v2 skipped; v3 and v4 (a withdrawal) applied in order"
    );
    runner.shutdown().await;
}

/// Waits until `subscriber`'s status reaches `position`.
async fn until_at(runner: &cqrs_core::RunnerHandle, subscriber: &str, position: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = runner.status().await.unwrap();
        if status
            .iter()
            .any(|s| s.name == subscriber && s.position >= position)
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{subscriber} stuck");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_holds_back_its_stream_until_retried_then_all_apply_in_order() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let picky = Arc::new(Picky::new("acc-1", true));
    let other = Arc::new(Balances::named("other"));
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            picky.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .with(Checkpointed::new(
            other.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let head = workload(store.clone(), 8, 3).await;
    runner.wait_for("other", head, WAIT).await.unwrap();
    until_at(&runner, "picky", head).await;

    // v2 of acc-1 is parked; v3 and v4 wait behind it, naming it; other streams went on.
    let letters = dead.list(Some("picky")).await.unwrap();
    let seen: Vec<_> = letters
        .iter()
        .map(|l| (l.event.stream_version, l.status))
        .collect();
    assert_eq!(
        seen,
        [
            (2, DeadLetterStatus::Parked),
            (3, DeadLetterStatus::Held),
            (4, DeadLetterStatus::Held)
        ]
    );
    let blocker = letters[0].event.event_id.to_string();
    assert!(letters[2].error.contains(&blocker), "{}", letters[2].error);
    assert_eq!(*picky.order.lock().unwrap(), [1]);
    let (mine, theirs) = (picky.inner.snapshot(), other.snapshot());
    for (account, row) in &theirs {
        if account != "acc-1" {
            assert_eq!(mine.get(account), Some(row), "{account} went on");
        }
    }
    let status = runner.status().await.unwrap();
    let s = status.iter().find(|s| s.name == "picky").unwrap();
    assert_eq!((s.parked, s.blocked_streams), (3, 1));
    let held_at = letters[1].event.cursor.position;
    assert!(matches!(
        runner.wait_for("picky", held_at, WAIT).await,
        Err(cqrs_core::Error::Parked { .. })
    ));

    // Retried once the cause is fixed: the parked event, then the held ones, in order.
    picky.poisoned.store(false, Ordering::SeqCst);
    dead.set_status(letters[0].id, DeadLetterStatus::RetryRequested)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dead.list(Some("picky")).await.unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*picky.order.lock().unwrap(), [1, 2, 3, 4]);
    assert_eq!(picky.inner.snapshot(), other.snapshot());
    let status = runner.status().await.unwrap();
    let s = status.iter().find(|s| s.name == "picky").unwrap();
    assert_eq!(s.blocked_streams, 0);

    // Later events of the stream flow again.
    let accounts = CommandHandler::<Account>::new(store.clone());
    let last = accounts
        .execute("acc-1", &AccountCommand::Deposit { amount: 5 })
        .await
        .unwrap()
        .position;
    runner.wait_for("picky", last, WAIT).await.unwrap();
    assert_eq!(*picky.order.lock().unwrap(), [1, 2, 3, 4, 5]);
    runner.shutdown().await;
}

/// Blocks in the middle of its `gate`-th batch until released; counts deliveries.
#[derive(Debug)]
struct Stalling {
    inner: Balances,
    stall_at: usize,
    handled: AtomicUsize,
    reached: Notify,
    never: Notify,
}

#[async_trait::async_trait]
impl Projector for Stalling {
    fn name(&self) -> &str {
        "stalling"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if self.handled.fetch_add(1, Ordering::SeqCst) == self.stall_at {
            self.reached.notify_one();
            self.never.notified().await;
        }
        self.inner.handle(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_stopped_mid_batch_resumes_from_its_checkpoint() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let head = workload(store.clone(), 10, 19).await; // 200 + a few withdrawals
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let first = Arc::new(Stalling {
        inner: Balances::named("stalling"),
        stall_at: 125, // inside the third batch of 50
        handled: AtomicUsize::new(0),
        reached: Notify::new(),
        never: Notify::new(),
    });
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(first.clone(), checkpoints.clone()))
        .start();
    tokio::time::timeout(WAIT, first.reached.notified())
        .await
        .unwrap();
    runner.abort(); // a crash: the batch in flight is never finished
    let saved = checkpoints.load("stalling").await.unwrap();
    assert_eq!(
        saved.position, 100,
        "two whole batches were checkpointed, the third was not"
    );

    // The read model outlives the crash (as a table would): the new projector starts from it.
    let second = Arc::new(Balances::named("stalling"));
    *second.rows.lock().unwrap() = first.inner.snapshot();
    let runner = Runner::new(store.clone(), dead)
        .with_config(fast())
        .with(Checkpointed::new(second.clone(), checkpoints.clone()))
        .start();
    runner.wait_for("stalling", head, WAIT).await.unwrap();
    runner.shutdown().await;
    let redelivered: Vec<_> = second.deliveries.lock().unwrap().clone();
    assert_eq!(
        redelivered.len() as u64,
        head - 100,
        "resumed from the checkpoint, not from zero"
    );
    let all = store.read_all(Cursor::START, 10_000).await.unwrap();
    let expected: Vec<_> = all[100..].iter().map(|e| e.event_id).collect();
    assert_eq!(redelivered, expected, "in order, nothing skipped");
    let first_seen: HashSet<_> = first
        .inner
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(
        first_seen.len(),
        125,
        "the first runner had handled part of the third batch"
    );
}

#[tokio::test]
async fn wait_for_times_out_and_names_unknown_subscribers() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let stuck = Arc::new(Stalling {
        inner: Balances::named("stalling"),
        stall_at: 0,
        handled: AtomicUsize::new(0),
        reached: Notify::new(),
        never: Notify::new(),
    });
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with(Checkpointed::new(stuck, InMemoryCheckpointStore::new()))
        .start();
    let head = workload(store.clone(), 1, 1).await;
    let err = runner
        .wait_for("stalling", head, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    let err = runner
        .wait_for("nope", head, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    let err = runner
        .wait_for("stalling", head + 100, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound(_)),
        "a position never written: {err:?}"
    );
    let status = runner.status().await.unwrap();
    assert_eq!(
        (status[0].position, status[0].lag, status[0].active),
        (0, head, true)
    );
    runner.abort();
}

/// A process manager: each deposit into a "source" account is mirrored into a "mirror" account.
/// Its commands carry ids derived from the event, so handling an event twice has one effect.
struct Mirror {
    accounts: CommandHandler<Account>,
    issued: Mutex<u64>,
}

#[async_trait::async_trait]
impl Projector for Mirror {
    fn name(&self) -> &str {
        "mirror"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        let Some(e) = event.decode_for::<Account>()? else {
            return Ok(());
        };
        if e.stream.id != "source" {
            return Ok(());
        }
        let cmd = match e.payload {
            common::AccountEvent::Opened { .. } => AccountCommand::Open {
                owner: "mirror".into(),
            },
            common::AccountEvent::Deposited { amount } => AccountCommand::Deposit { amount },
            common::AccountEvent::Withdrawn { .. } => return Ok(()),
        };
        let opts = CommandOptions {
            command_id: Some(command_id_for(event.event_id, "mirror")),
            fingerprint: None,
            metadata: Metadata {
                correlation_id: event.metadata.correlation_id,
                causation_id: Some(event.event_id),
                ..Default::default()
            },
        };
        self.accounts.execute_with("mirror", &cmd, opts).await?;
        *self.issued.lock().unwrap() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_manager_crashing_before_its_checkpoint_repeats_no_effect() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::new(store.clone());
    accounts
        .execute("source", &AccountCommand::Open { owner: "s".into() })
        .await
        .unwrap();
    for a in 1..=5 {
        accounts
            .execute("source", &AccountCommand::Deposit { amount: a })
            .await
            .unwrap();
    }
    let mirror = Arc::new(Mirror {
        accounts: CommandHandler::new(store.clone()),
        issued: Mutex::new(0),
    });
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let pm = Checkpointed::new(mirror.clone(), checkpoints.clone());
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(pm)
        .start();
    runner.wait_for("mirror", 6, WAIT).await.unwrap();
    runner.shutdown().await;
    assert_eq!(accounts.load("mirror").await.unwrap().0.balance, 15);

    // A crash after the commands but before the checkpoint: the events come again.
    checkpoints.reset("mirror").await.unwrap();
    let runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(mirror.clone(), checkpoints))
        .start();
    let head = store.head_position().await.unwrap();
    runner.wait_for("mirror", head, WAIT).await.unwrap();
    runner.shutdown().await;
    assert_eq!(
        *mirror.issued.lock().unwrap(),
        12,
        "every event was handled twice"
    );
    let (state, version) = accounts.load("mirror").await.unwrap();
    assert_eq!(
        (state.balance, version),
        (15, 6),
        "but each command took effect once"
    );
    let mirrored = store
        .read_stream(&StreamId::new("account", "mirror"), 1, 10)
        .await
        .unwrap();
    assert!(
        mirrored.iter().all(|e| e.metadata.causation_id.is_some()),
        "causation is kept"
    );
    assert!(dead.list(None).await.unwrap().is_empty());
}

/// Slow on every event, to catch a shutdown mid-batch.
#[derive(Debug)]
struct Slow(Balances);

#[async_trait::async_trait]
impl Projector for Slow {
    fn name(&self) -> &str {
        "slow"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        self.0.handle(event).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_finishes_the_batch_in_flight() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let head = workload(store.clone(), 4, 24).await;
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let slow = Arc::new(Slow(Balances::named("slow")));
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(RunnerConfig {
            batch_size: 20,
            ..fast()
        })
        .with(Checkpointed::new(slow.clone(), checkpoints.clone()))
        .start();
    tokio::time::sleep(Duration::from_millis(50)).await;
    runner.shutdown().await;
    let handled = slow.0.deliveries.lock().unwrap().len() as u64;
    let saved = checkpoints.load("slow").await.unwrap().position;
    assert!(
        handled > 0 && handled < head,
        "stopped part way: {handled} of {head}"
    );
    assert_eq!(
        saved, handled,
        "every handled event is checkpointed: no batch left half done"
    );
    assert_eq!(saved % 20, 0, "stopped on a batch boundary");
}

/// Fails every event while `down` is set, as a projector whose database is gone.
#[derive(Debug, Default)]
struct Outage {
    down: AtomicBool,
    handled: AtomicUsize,
}

#[async_trait::async_trait]
impl Projector for Outage {
    fn name(&self) -> &str {
        "outage"
    }
    async fn handle(&self, _: &RecordedEvent) -> Result<(), BoxError> {
        if self.down.load(Ordering::SeqCst) {
            return Err("read-model database unreachable".into());
        }
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_shows_why_a_subscriber_is_stuck_while_it_retries_and_clears_after() {
    let store = Arc::new(InMemoryEventStore::new());
    let outage = Arc::new(Outage::default());
    outage.down.store(true, Ordering::SeqCst);
    let config = RunnerConfig {
        max_attempts: 1_000,
        backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(config)
        .with(Checkpointed::new(
            outage.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let stream = StreamId::new("demo", "1");
    let e = NewEvent::new("Noted", serde_json::json!({}));
    let out = store
        .append(&stream, ExpectedVersion::Any, vec![e], None)
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = runner.status().await.unwrap().remove(0);
        if status.last_error.is_some() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no error shown: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        status
            .last_error
            .as_deref()
            .unwrap()
            .contains("read-model database unreachable"),
        "{status:?}"
    );
    assert_eq!((status.position, status.parked), (0, 0), "{status:?}");

    outage.down.store(false, Ordering::SeqCst);
    runner
        .wait_for("outage", out.position, Duration::from_secs(10))
        .await
        .unwrap();
    let status = runner.status().await.unwrap().remove(0);
    assert_eq!(
        status.last_error, None,
        "cleared once the event went through"
    );
    assert_eq!(outage.handled.load(Ordering::SeqCst), 1);
    runner.shutdown().await;
}

/// One segment of a partitioned balances projector.
#[derive(Debug)]
struct SegmentOfBalances {
    inner: Balances,
    segment: Segment,
}

impl SegmentOfBalances {
    fn new(segment: Segment) -> Arc<Self> {
        Arc::new(SegmentOfBalances {
            inner: Balances::named(&segment.name("balances")),
            segment,
        })
    }
}

#[async_trait::async_trait]
impl Projector for SegmentOfBalances {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn segment(&self) -> Option<Segment> {
        Some(self.segment)
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.inner.handle(event).await
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_segments_of_a_partitioned_projector_share_its_events_once_each() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let whole = Arc::new(Balances::named("whole"));
    let segments: Vec<_> = Segment::all(4)
        .into_iter()
        .map(SegmentOfBalances::new)
        .collect();
    let mut runner = Runner::new(store.clone(), dead.clone())
        .with_config(fast())
        .with(Checkpointed::new(
            whole.clone(),
            InMemoryCheckpointStore::new(),
        ));
    for s in &segments {
        runner = runner.with(Checkpointed::new(s.clone(), InMemoryCheckpointStore::new()));
    }
    let runner = runner.start();
    let head = workload(store.clone(), 16, 3).await;
    runner.wait_for_all(head, WAIT).await.unwrap();

    let mut union = std::collections::BTreeMap::new();
    let mut delivered = 0;
    for s in &segments {
        let rows = s.inner.snapshot();
        assert!(!rows.is_empty(), "{} has streams", s.name());
        for account in rows.keys() {
            assert!(s.segment.owns(&StreamId::new("account", account.clone())));
        }
        union.extend(rows);
        delivered += s.inner.deliveries.lock().unwrap().len() as u64;
    }
    assert_eq!(
        union,
        whole.snapshot(),
        "together, the segments are the whole"
    );
    assert_eq!(delivered, head, "every event to one segment, once");
    let status = runner.status().await.unwrap();
    assert!(
        status.iter().all(|s| s.position == head),
        "every checkpoint at the head"
    );
    runner.shutdown().await;

    // Rebuilt in parallel, the segments give the same.
    let rebuilt: Vec<_> = Segment::all(4)
        .into_iter()
        .map(SegmentOfBalances::new)
        .collect();
    let subs: Vec<Arc<dyn Subscriber>> = rebuilt
        .iter()
        .map(|s| Arc::new(Checkpointed::new(s.clone(), InMemoryCheckpointStore::new())) as _)
        .collect();
    let reports = Replay::new(store.clone(), dead)
        .run_parallel(subs)
        .await
        .unwrap();
    assert_eq!(reports.iter().map(|r| r.events).sum::<u64>(), head);
    let mut union = std::collections::BTreeMap::new();
    for s in &rebuilt {
        union.extend(s.inner.snapshot());
    }
    assert_eq!(union, whole.snapshot());
}

#[tokio::test]
#[should_panic(expected = "two subscribers are named whole")]
async fn two_subscribers_of_one_name_are_refused() {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let _ = Runner::new(store, dead)
        .with(Checkpointed::new(
            Balances::named("whole"),
            InMemoryCheckpointStore::new(),
        ))
        .with(Checkpointed::new(
            Balances::named("whole"),
            InMemoryCheckpointStore::new(),
        ))
        .start();
}
