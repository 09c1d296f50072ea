//! Helpers of the ActiveMQ tests: the broker's address, unique names, a raw STOMP client to
//! send what no relay would and to read dead-letter queues, and a broker of the test's own that
//! can be killed and started again; the bridge-neutral ones (a seeded store, a recording
//! projector, a checkpoint store that "crashes") come from the broker kit's testkit.

#![allow(dead_code, unreachable_pub, unused_imports)]

// NOTE: the crate's own STOMP client, compiled into the tests too: it is private to the crate,
// and the tests need a plain client beside the bridge (raw sends, reading a DLQ).
mod server;
#[path = "../../src/stomp/mod.rs"]
mod stomp;

pub use server::*;

use std::time::Duration;

pub use cqrs_broker::testkit::*;
use stomp::{Connection, Frame, StompUrl};

/// The broker's URL: ACTIVEMQ_URL, else `stomp://127.0.0.1:61613`.
pub fn activemq_url() -> String {
    std::env::var("ACTIVEMQ_URL").unwrap_or_else(|_| "stomp://127.0.0.1:61613".into())
}

/// The broker under test; `None` (skip) when unreachable, a panic under CI=true.
pub async fn broker() -> Option<cqrs_activemq::StompUrl> {
    let url = activemq_url();
    let raw: StompUrl = url.parse().expect("a STOMP URL");
    match Connection::open(&raw).await {
        Ok(conn) => {
            conn.close().await;
            Some(url.parse().expect("a STOMP URL"))
        }
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "ActiveMQ unreachable at {url} under CI: {e}"
            );
            eprintln!("skipping: ActiveMQ unreachable at {url}: {e}");
            None
        }
    }
}

/// A name no other test run uses (dots are fine in ActiveMQ names).
pub fn unique(prefix: &str) -> String {
    format!(
        "cqrs-test.{prefix}.{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn raw(url: &cqrs_activemq::StompUrl) -> StompUrl {
    url.to_string().parse().expect("a STOMP URL")
}

/// Sends one persistent message with `headers` and `body` to the queue `queue`, as a foreign
/// producer would.
pub async fn send_raw(
    url: &cqrs_activemq::StompUrl,
    queue: &str,
    headers: &[(&str, &str)],
    body: &str,
) {
    let mut conn = Connection::open(&raw(url)).await.unwrap();
    let mut frame = Frame::new("SEND")
        .header("destination", format!("/queue/{queue}"))
        .header("persistent", "true");
    for (n, v) in headers {
        frame = frame.header(*n, *v);
    }
    conn.write_with_receipts(vec![frame.body(body.as_bytes().to_vec())])
        .await
        .unwrap();
    conn.close().await;
}

/// A message read back: its headers and body.
#[derive(Debug)]
pub struct Read {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Read {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Takes (acknowledges) what arrives on `queue` until `quiet` passes without a message.
pub async fn drain(url: &cqrs_activemq::StompUrl, queue: &str, quiet: Duration) -> Vec<Read> {
    let mut conn = Connection::open(&raw(url)).await.unwrap();
    let subscribe = Frame::new("SUBSCRIBE")
        .header("id", "0")
        .header("destination", format!("/queue/{queue}"))
        .header("ack", "client-individual");
    conn.write_with_receipts(vec![subscribe]).await.unwrap();
    let mut out = Vec::new();
    while let Ok(next) = tokio::time::timeout(quiet, conn.next_message()).await {
        let frame = next.unwrap();
        let ack = frame.get("ack").unwrap().to_owned();
        conn.write(&[Frame::new("ACK").header("id", ack)])
            .await
            .unwrap();
        out.push(Read {
            headers: frame.headers,
            body: frame.body,
        });
    }
    conn.close().await;
    out
}
