//! Helpers of the JetStream tests: the server's address, unique names, stream reading and
//! cleaning, a link to the server whose failures the test decides, and a server of the test's
//! own that can be killed and started again; the bridge-neutral ones (a seeded store, a
//! recording projector, a checkpoint store that "crashes") come from the broker kit's testkit.

#![allow(dead_code, unreachable_pub, unused_imports)]

mod server;

pub use server::*;

use std::time::Duration;

pub use cqrs_broker::testkit::*;
use cqrs_core::RecordedEvent;
use cqrs_core::testkit::FaultyLink;

pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

/// A client of the server under test; `None` (skip) when unreachable, a panic under CI=true.
pub async fn broker() -> Option<async_nats::Client> {
    let url = nats_url();
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .connect(&url);
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(client)) => Some(client),
        other => {
            let why = match other {
                Ok(Err(e)) => e.to_string(),
                _ => "timed out".to_owned(),
            };
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "NATS unreachable at {url} under CI: {why}"
            );
            eprintln!("skipping: NATS unreachable at {url}: {why}");
            None
        }
    }
}

/// A token no other test run uses (letters and digits only: fit for stream names and subjects).
pub fn unique(prefix: &str) -> String {
    format!(
        "cqrstest{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// Deletes JetStream streams, ignoring those already gone.
pub async fn cleanup(client: &async_nats::Client, streams: &[String]) {
    let js = async_nats::jetstream::new(client.clone());
    for s in streams {
        let _ = js.delete_stream(s).await;
    }
}

/// Messages stored in a JetStream stream.
pub async fn stream_messages(client: &async_nats::Client, name: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    js.get_stream(name)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap()
        .state
        .messages
}

/// Every event stored in a JetStream stream, in stream order (read by an ordered consumer).
pub async fn stream_events(client: &async_nats::Client, name: &str) -> Vec<RecordedEvent> {
    use async_nats::jetstream::consumer::pull::OrderedConfig;
    use futures_util::StreamExt;

    let js = async_nats::jetstream::new(client.clone());
    let stream = js.get_stream(name).await.unwrap();
    let count = stream.get_info().await.unwrap().state.messages;
    let mut messages = stream
        .create_consumer(OrderedConfig::default())
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    let mut events = Vec::new();
    while (events.len() as u64) < count {
        let message = messages
            .next()
            .await
            .expect("the stream's messages")
            .unwrap();
        let event = cqrs_nats::decode_message(message.headers.as_ref(), &message.payload);
        events.push(event.unwrap());
    }
    events
}

/// A [`FaultyLink`] to the NATS server, and the URL that goes through it: the failures a test
/// decides touch no other client of the server.
pub async fn faulty_link() -> (FaultyLink, String) {
    let link = FaultyLink::to(nats_url().trim_start_matches("nats://"))
        .await
        .unwrap();
    let url = format!("nats://{}", link.addr());
    (link, url)
}
