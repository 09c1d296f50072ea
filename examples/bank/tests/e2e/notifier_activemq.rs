//! `bank serve --broker stomp://...` and `bank notifier --broker stomp://...`, real processes on
//! the real ActiveMQ at ACTIVEMQ_URL: the same round trip as on RabbitMQ and NATS (the notifier
//! killed and restarted mid-workload, then every event relayed again), each notice once.

use std::time::Duration;

use crate::notifier::{broker, notifier_round_trip, notifier_sqlite};

/// Whether a STOMP broker answers at `url`: a queue declared (a subscription opened and ended).
pub(crate) async fn reach(url: &str) -> Result<(), String> {
    let url: cqrs_activemq::StompUrl = url.parse().map_err(|e| format!("{e}"))?;
    let queue = cqrs_activemq::ActiveMqQueue::new("bank-e2e-probe");
    let probe = queue.declare(&url);
    match tokio::time::timeout(Duration::from_secs(10), probe).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_over_activemq_survives_sigkill_and_a_relay_replay() {
    let Some(b) = broker("ACTIVEMQ_URL", "stomp://127.0.0.1:61613").await else {
        return;
    };
    let (_dir, db) = notifier_sqlite();
    notifier_round_trip(b, &db).await;
}

#[test]
fn stomp_urls_name_activemq() {
    let b: bank::Broker = "stomp://127.0.0.1:61613".parse().unwrap();
    assert_eq!(b.kind(), "activemq");
}
