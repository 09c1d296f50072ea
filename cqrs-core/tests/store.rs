//! The in-memory stores pass the conformance suite; the command handler keeps its promises.

mod common;

use std::sync::Arc;

use common::{Account, AccountCommand, AccountError, AccountEvent};
use cqrs_core::testkit::{AggregateTest, conformance};
use cqrs_core::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_event_store_conforms() {
    conformance::event_store(Arc::new(InMemoryEventStore::new())).await;
}

#[tokio::test]
async fn in_memory_side_stores_conform() {
    conformance::snapshot_store(&InMemorySnapshotStore::new()).await;
    conformance::checkpoint_store(&InMemoryCheckpointStore::new()).await;
    conformance::dead_letter_store(&InMemoryDeadLetterStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_of_many_racing_commands_wins() {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts =
        Arc::new(CommandHandler::<Account>::new(store.clone()).with_retry(RetryPolicy::NEVER));
    accounts
        .execute(
            "a",
            &AccountCommand::Open {
                owner: "ann".into(),
            },
        )
        .await
        .unwrap();
    accounts
        .execute("a", &AccountCommand::Deposit { amount: 100 })
        .await
        .unwrap();
    // 32 withdrawals of 100 race for one balance of 100, each without retry: at most one can
    // pass the version check, and every loser sees the typed conflict or the domain refusal.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            accounts
                .execute("a", &AccountCommand::Withdraw { amount: 100 })
                .await
        }));
    }
    let (mut ok, mut conflicts) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) if e.is_conflict() => conflicts += 1,
            Err(CommandError::Rejected(AccountError::Insufficient { .. })) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 1, "exactly one withdrawal wins");
    assert!(conflicts > 0 || ok == 1);
    let (state, version) = accounts.load("a").await.unwrap();
    assert_eq!((state.balance, version), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_resolve_conflicts_without_lost_updates() {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts = Arc::new(
        CommandHandler::<Account>::new(store.clone())
            .with_retry(RetryPolicy {
                max_attempts: 100,
                backoff: std::time::Duration::from_micros(50),
                ..RetryPolicy::default()
            })
            .with_cache(16),
    );
    accounts
        .execute(
            "a",
            &AccountCommand::Open {
                owner: "ann".into(),
            },
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                accounts
                    .execute("a", &AccountCommand::Deposit { amount: 1 })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // A second handler (another "process") sees the same state: the cache never hid a write.
    let fresh = CommandHandler::<Account>::new(store);
    assert_eq!(
        fresh.load("a").await.unwrap(),
        (
            Account {
                open: true,
                balance: 400,
                events: 401
            },
            401
        )
    );
}

#[tokio::test]
async fn an_idempotent_command_appends_once() {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::new(store.clone());
    accounts
        .execute(
            "a",
            &AccountCommand::Open {
                owner: "ann".into(),
            },
        )
        .await
        .unwrap();
    let id = uuid::Uuid::new_v4();
    let first = accounts
        .execute_with(
            "a",
            &AccountCommand::Deposit { amount: 7 },
            CommandOptions::with_id(id),
        )
        .await
        .unwrap();
    // Even after other writes, the repeat returns the first result and appends nothing.
    accounts
        .execute("a", &AccountCommand::Deposit { amount: 1 })
        .await
        .unwrap();
    let again = accounts
        .execute_with(
            "a",
            &AccountCommand::Deposit { amount: 7 },
            CommandOptions::with_id(id),
        )
        .await
        .unwrap();
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(
        (again.version, again.position, again.appended),
        (first.version, first.position, 0)
    );
    assert_eq!(accounts.load("a").await.unwrap().0.balance, 8);
    assert_eq!(store.head_position().await.unwrap(), 3);
    let events = store
        .read_stream(&StreamId::new("account", "a"), 1, 10)
        .await
        .unwrap();
    assert_eq!(
        events[1].metadata.causation_id,
        Some(id),
        "the command id becomes the causation id"
    );
}

#[tokio::test]
async fn rejected_commands_write_nothing() {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::new(store.clone());
    let err = accounts
        .execute("a", &AccountCommand::Deposit { amount: 7 })
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Rejected(AccountError::NotOpen)));
    assert_eq!(store.head_position().await.unwrap(), 0);
}

#[tokio::test]
async fn snapshots_shorten_loads_and_agree_with_full_replay() {
    let store = Arc::new(InMemoryEventStore::new());
    let snaps = Arc::new(InMemorySnapshotStore::new());
    let accounts =
        CommandHandler::<Account>::new(store.clone()).with_snapshots(snaps.clone(), 10, 1);
    accounts
        .execute(
            "a",
            &AccountCommand::Open {
                owner: "ann".into(),
            },
        )
        .await
        .unwrap();
    for _ in 0..24 {
        accounts
            .execute("a", &AccountCommand::Deposit { amount: 2 })
            .await
            .unwrap();
    }
    let snap = snaps
        .load(&StreamId::new("account", "a"))
        .await
        .unwrap()
        .expect("a snapshot");
    assert_eq!(snap.version, 20);
    let with = accounts.load("a").await.unwrap();
    let without = CommandHandler::<Account>::new(store)
        .load("a")
        .await
        .unwrap();
    assert_eq!(with, without);
    assert_eq!(with.1, 25);
    // A snapshot of another schema is ignored, not trusted.
    let other = CommandHandler::<Account>::new(Arc::new(InMemoryEventStore::new()))
        .with_snapshots(snaps, 10, 2);
    assert_eq!(other.load("a").await.unwrap().1, 0);
}

#[tokio::test]
async fn an_upcaster_turns_a_v1_payload_into_v2_on_read() {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    enum V2 {
        Deposited { amount: u64, currency: String },
    }
    impl DomainEvent for V2 {
        fn schema_version(_: &str) -> u32 {
            2
        }
    }
    let raw = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("account", "a");
    // Written by an older release: v1 had `cents` and no currency.
    let mut old = NewEvent::new("Deposited", json!({ "cents": 250 }));
    old.schema_version = 1;
    raw.append(&stream, ExpectedVersion::NoStream, vec![old], None)
        .await
        .unwrap();
    let up = Upcasters::new().register("Deposited", 1, |v| {
        Ok(json!({ "amount": v["cents"], "currency": "EUR" }))
    });
    let store = UpcastingStore::new(raw.clone(), up);
    for e in [
        &store.read_stream(&stream, 1, 10).await.unwrap()[0],
        &store.read_all(Cursor::START, 10).await.unwrap()[0],
    ] {
        assert_eq!(e.schema_version, 2);
        assert_eq!(
            e.decode::<V2>().unwrap().payload,
            V2::Deposited {
                amount: 250,
                currency: "EUR".into()
            }
        );
    }
    // Loads read the payload's text, upcast the same way.
    let mut loaded = Vec::new();
    store
        .read_stream_into(&stream, 1..=10, &mut |item| {
            if let StreamItem::Event(e) = item {
                loaded.push(e);
            }
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(loaded[0].schema_version, 2);
    let payload: serde_json::Value = serde_json::from_str(&loaded[0].payload).unwrap();
    assert_eq!(payload, json!({ "amount": 250, "currency": "EUR" }));
    let failing = UpcastingStore::new(
        raw.clone(),
        Upcasters::new().register("Deposited", 1, |_| Err("no cents".into())),
    );
    let msg = failing
        .read_stream_into(&stream, 1..=10, &mut |_| Ok(()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Deposited") && msg.contains("account-a") && msg.contains("version 1"),
        "{msg}"
    );
    // Without the upcaster the old payload does not decode, and the error names the event.
    let err = raw.read_stream(&stream, 1, 10).await.unwrap()[0]
        .decode::<V2>()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Deposited") && msg.contains("account-a") && msg.contains("version 1"),
        "{msg}"
    );
}

#[test]
fn given_when_then() {
    AggregateTest::<Account>::given_nothing()
        .when(AccountCommand::Open {
            owner: "ann".into(),
        })
        .then([AccountEvent::Opened {
            owner: "ann".into(),
        }]);
    let state = AggregateTest::<Account>::given([
        AccountEvent::Opened {
            owner: "ann".into(),
        },
        AccountEvent::Deposited { amount: 5 },
    ])
    .when(AccountCommand::Withdraw { amount: 5 })
    .then([AccountEvent::Withdrawn { amount: 5 }]);
    assert_eq!(state.balance, 0);
    AggregateTest::<Account>::given([AccountEvent::Opened {
        owner: "ann".into(),
    }])
    .when(AccountCommand::Withdraw { amount: 1 })
    .then_error(|e| {
        *e == AccountError::Insufficient {
            balance: 0,
            asked: 1,
        }
    });
}

#[test]
#[should_panic(expected = "other events than expected")]
fn given_when_then_reports_a_wrong_expectation() {
    AggregateTest::<Account>::given([AccountEvent::Opened {
        owner: "ann".into(),
    }])
    .when(AccountCommand::Deposit { amount: 1 })
    .then([AccountEvent::Deposited { amount: 2 }]);
}
