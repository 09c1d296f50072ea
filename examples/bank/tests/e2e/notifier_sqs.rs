//! `bank serve --broker sqs://...` and `bank notifier --broker sqs://...`, real processes on
//! the real SQS server at SQS_ENDPOINT (moto by default): the same round trip as on the other
//! brokers (the notifier killed and restarted mid-workload, then every event relayed again),
//! each notice once.

use std::time::Duration;

use bank::Channels;

use crate::notifier::{broker, notifier_round_trip, notifier_sqlite};

/// The `sqs://` URL of the server at SQS_ENDPOINT, with dummy keys (moto checks none) unless
/// SQS_URL is set.
fn default_url() -> String {
    let endpoint = std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9324".into());
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    format!("sqs://testing:testing@{host}")
}

/// Whether an SQS server answers at `url`: its queues listed.
pub(crate) async fn reach(url: &str) -> Result<(), String> {
    let client = cqrs_sqs::sqs_client_for_url(url)
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), client.list_queues().send()).await {
        Ok(r) => r
            .map(drop)
            .map_err(|e| cqrs_sqs::aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Deletes the bank's queues (it relays every aggregate type) and their dead-letter queues.
pub(crate) async fn cleanup(url: &str, channels: &Channels) {
    let client = cqrs_sqs::sqs_client_for_url(url).await.unwrap();
    let base = cqrs_sqs::SqsQueue::new(format!("{}.fifo", channels.prefix.replace('.', "-")));
    let mut names = Vec::new();
    for category in ["account", "transfer"] {
        let queue = base.for_category(category);
        names.extend([queue.name().to_owned(), queue.dead_letter_queue()]);
    }
    for name in names {
        if let Ok(found) = client.get_queue_url().queue_name(&name).send().await
            && let Some(url) = found.queue_url
        {
            client.delete_queue().queue_url(url).send().await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_over_sqs_survives_sigkill_and_a_relay_replay() {
    let Some(b) = broker("SQS_URL", &default_url()).await else {
        return;
    };
    let (_dir, db) = notifier_sqlite();
    notifier_round_trip(b, &db).await;
}

#[test]
fn sqs_urls_name_sqs() {
    let b: bank::Broker = "sqs://testing:testing@127.0.0.1:9324".parse().unwrap();
    assert_eq!(b.kind(), "sqs");
}
