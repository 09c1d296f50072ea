//! Process managers under the runner: instances handled at once, each in log order, and a
//! failing instance parked without holding back the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_core::*;
use tokio::sync::Barrier;

const WAIT: Duration = Duration::from_secs(10);

fn fast() -> RunnerConfig {
    RunnerConfig {
        batch_size: 100,
        max_attempts: 2,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        dead_letter_interval: Duration::from_millis(20),
        poll_interval: Duration::from_millis(200),
        ..RunnerConfig::default()
    }
}

/// Records, per instance (the `flow` field of a `Step`), the `n` of each step in the order
/// handled. Instance `poison` fails at step 2; with a barrier, every instance's first step
/// waits there until `parties` instances have arrived.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<HashMap<String, Vec<u64>>>,
    first_steps: Option<Barrier>,
}

#[async_trait]
impl ProcessManager for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        let v = event.payload_value().ok()?;
        (event.event_type == "Step").then(|| v["flow"].as_str().unwrap().to_owned())
    }
    async fn handle(&self, instance: &str, event: &RecordedEvent) -> Result<(), BoxError> {
        let n = event.payload_value()?["n"].as_u64().unwrap();
        if instance == "poison" && n == 2 {
            return Err("step 2 of poison always fails".into());
        }
        if let (Some(b), 0) = (&self.first_steps, n) {
            b.wait().await;
        }
        // NOTE: a pause that differs by instance and step, so that an unordered runner
        // would shuffle an instance's steps.
        tokio::time::sleep(Duration::from_micros(
            (n * 37 + instance.len() as u64 * 101) % 700,
        ))
        .await;
        self.seen
            .lock()
            .unwrap()
            .entry(instance.to_owned())
            .or_default()
            .push(n);
        Ok(())
    }
}

/// Appends step `n` of `flow` on a stream of its own: an instance here spans many streams.
async fn step(store: &InMemoryEventStore, flow: &str, n: u64) -> u64 {
    let stream = StreamId::new("work", format!("{flow}-{n}"));
    let e = NewEvent::new("Step", serde_json::json!({"flow": flow, "n": n}));
    store
        .append(&stream, ExpectedVersion::Any, vec![e], None)
        .await
        .unwrap()
        .position
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_run_at_once_and_each_in_log_order() {
    let store = Arc::new(InMemoryEventStore::new());
    let flows: Vec<String> = (0..8).map(|i| format!("flow{i}")).collect();
    let mut last = 0;
    for n in 0..20 {
        for f in &flows {
            last = step(&store, f, n).await;
        }
    }
    // Every instance's first step waits for all 8: only a runner that handles the 8 at once
    // gets past it.
    let recorder = Arc::new(Recorder {
        seen: Mutex::default(),
        first_steps: Some(Barrier::new(flows.len())),
    });
    let runner = Runner::new(store.clone(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(fast())
        .with(Process::new(recorder.clone(), InMemoryCheckpointStore::new()).with_concurrency(8))
        .start();
    runner.wait_for("recorder", last, WAIT).await.unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    for f in &flows {
        assert_eq!(
            seen[f],
            (0..20).collect::<Vec<_>>(),
            "steps of {f} in order"
        );
    }
    runner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_instance_is_parked_and_holds_back_only_itself() {
    let store = Arc::new(InMemoryEventStore::new());
    let mut last = 0;
    for n in 0..5 {
        for f in ["poison", "healthy"] {
            last = step(&store, f, n).await;
        }
    }
    let recorder = Arc::new(Recorder {
        seen: Mutex::default(),
        first_steps: None,
    });
    let dead_letters = Arc::new(InMemoryDeadLetterStore::new());
    let runner = Runner::new(store.clone(), dead_letters.clone())
        .with_config(fast())
        .with(Process::new(
            recorder.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    runner.wait_for("recorder", last, WAIT).await.unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen["healthy"], vec![0, 1, 2, 3, 4]);
    // Step 2 of poison is parked; 3 and 4, on other streams but of the same instance, wait
    // behind it.
    assert_eq!(seen["poison"], vec![0, 1]);
    let letters = dead_letters.list(Some("recorder")).await.unwrap();
    let mut parked: Vec<(u64, DeadLetterStatus)> = letters
        .iter()
        .map(|l| {
            (
                l.event.payload_value().unwrap()["n"].as_u64().unwrap(),
                l.status,
            )
        })
        .collect();
    parked.sort_by_key(|p| p.0);
    assert_eq!(
        parked,
        vec![
            (2, DeadLetterStatus::Parked),
            (3, DeadLetterStatus::Held),
            (4, DeadLetterStatus::Held)
        ]
    );
    runner.shutdown().await;
}
