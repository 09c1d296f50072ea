//! Helpers of the SQS tests: the server's endpoint and a client for it, unique queue names,
//! queue reading; the bridge-neutral ones (a seeded store, a recording projector, a checkpoint
//! store that "crashes") come from the broker kit's testkit.

#![allow(dead_code, unreachable_pub, unused_imports)]

use std::sync::Arc;
use std::time::Duration;

pub use cqrs_broker::testkit::*;
use cqrs_core::{
    InMemoryDeadLetterStore, InMemoryEventStore, Runner, RunnerConfig, RunnerHandle, Subscriber,
};
use cqrs_sqs::aws_sdk_sqs::Client;
use cqrs_sqs::aws_sdk_sqs::types::{Message, QueueAttributeName};

pub fn sqs_endpoint() -> String {
    std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9324".into())
}

/// A client of the server under test: the environment's keys if it has them, else dummy ones
/// (a local server checks none).
pub fn client(endpoint: &str) -> Client {
    let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "testing".into());
    let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "testing".into());
    cqrs_sqs::sqs_client_with_keys(endpoint, &key, &secret)
}

/// A client of the server under test; `None` (skip) when it does not answer, a panic under
/// CI=true.
pub async fn server() -> Option<Client> {
    let endpoint = sqs_endpoint();
    let client = client(&endpoint);
    let probe = tokio::time::timeout(Duration::from_secs(5), client.list_queues().send()).await;
    let why = match probe {
        Ok(Ok(_)) => return Some(client),
        Ok(Err(e)) => cqrs_sqs::aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
        Err(_) => "no answer within 5 s".to_owned(),
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "SQS unreachable at {endpoint} under CI: {why}"
    );
    eprintln!("skipping: SQS unreachable at {endpoint}: {why}");
    None
}

/// A token no other test run uses (fit for queue names).
pub fn unique(prefix: &str) -> String {
    format!(
        "cqrstest-{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// A runner for a relay in batches of `batch` events (the kit's `relay_runner`, smaller
/// batches: the local server takes tens of messages a second).
pub fn relay_runner_of(
    store: Arc<InMemoryEventStore>,
    relay: impl Subscriber + 'static,
    batch: usize,
) -> RunnerHandle {
    let config = RunnerConfig {
        max_attempts: 100,
        backoff: Duration::from_millis(50),
        batch_size: batch,
        ..Default::default()
    };
    Runner::new(store, Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(config)
        .with(relay)
        .start()
}

/// Receives from `url` (every attribute, nothing deleted, each message hidden for a minute)
/// until `count` messages came or none came for `idle`.
pub async fn read_queue(client: &Client, url: &str, count: usize, idle: Duration) -> Vec<Message> {
    let mut out = Vec::new();
    let mut last = tokio::time::Instant::now();
    while out.len() < count && last.elapsed() < idle {
        #[allow(deprecated)]
        let got = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .attribute_names(QueueAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .expect("a receive")
            .messages
            .unwrap_or_default();
        if !got.is_empty() {
            last = tokio::time::Instant::now();
        }
        out.extend(got);
    }
    out
}

/// The queue's approximate depth (visible and in flight).
pub async fn depth(client: &Client, url: &str) -> u64 {
    let attrs = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .expect("the queue's attributes")
        .attributes
        .unwrap_or_default();
    attrs.values().map(|v| v.parse::<u64>().unwrap_or(0)).sum()
}

/// Deletes `queue` and its dead-letter queue: moto keeps every queue (and slows as it holds
/// more), so each test removes its own at the end.
pub async fn drop_queues(client: &Client, queue: &cqrs_sqs::SqsQueue) {
    for name in [queue.name().to_owned(), queue.dead_letter_queue()] {
        if let Ok(found) = client.get_queue_url().queue_name(&name).send().await
            && let Some(url) = found.queue_url
        {
            client
                .delete_queue()
                .queue_url(url)
                .send()
                .await
                .expect("a queue deleted");
        }
    }
}
