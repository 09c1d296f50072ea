//! The metrics the crate records, read back from a real recorder (`metrics-util`'s debugging
//! recorder, installed as the process's recorder) after a known load.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Account, AccountCommand, Balances};
use cqrs_core::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_and_subscribers_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let accounts = CommandHandler::<Account>::new(store.clone());
    accounts
        .execute(
            "m1",
            &AccountCommand::Open {
                owner: "ann".into(),
            },
        )
        .await
        .unwrap();
    for amount in [10, 20] {
        accounts
            .execute("m1", &AccountCommand::Deposit { amount })
            .await
            .unwrap();
    }
    let refused = accounts
        .execute("m1", &AccountCommand::Withdraw { amount: 1_000 })
        .await;
    assert!(matches!(refused, Err(CommandError::Rejected(_))));
    let balances = Arc::new(Balances::named("balances"));
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with(Checkpointed::new(balances, InMemoryCheckpointStore::new()))
        .start();
    let head = store.head_position().await.unwrap();
    runner
        .wait_for("balances", head, Duration::from_secs(5))
        .await
        .unwrap();
    runner.shutdown().await;

    // Name and labels (sorted) to value.
    let mut seen: HashMap<String, DebugValue> = HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let mut labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        labels.sort();
        seen.insert(
            format!("{}{{{}}}", key.key().name(), labels.join(",")),
            value,
        );
    }
    let counter = |name: &str| match seen.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {:?}", seen.keys()),
    };
    assert_eq!(
        counter("cqrs_commands_total{aggregate=account,outcome=ok}"),
        3
    );
    assert_eq!(
        counter("cqrs_commands_total{aggregate=account,outcome=rejected}"),
        1
    );
    assert_eq!(counter("cqrs_events_appended_total{aggregate=account}"), 3);
    assert_eq!(
        counter("cqrs_subscriber_events_total{outcome=handled,subscriber=balances}"),
        head
    );
    match seen.get("cqrs_subscriber_position{subscriber=balances}") {
        Some(DebugValue::Gauge(p)) => assert_eq!(p.into_inner(), head as f64),
        other => panic!("position: {other:?}"),
    }
    match seen.get("cqrs_command_duration_seconds{aggregate=account}") {
        Some(DebugValue::Histogram(h)) => assert_eq!(h.len(), 4, "one per command"),
        other => panic!("duration: {other:?}"),
    }
}
