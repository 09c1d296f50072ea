//! One trace across two services and a broker: `bank serve` and `bank notifier`, real processes
//! on RabbitMQ, export their spans over OTLP/HTTP to a receiver on loopback; the request's
//! trace runs through its command, the relay and the notifier's handling of the event.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::post;
use bank::Channels;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::json;

use crate::notifier::{Cleanup, NotifierProcess, broker, notifier_sqlite, url};
use crate::support::{Server, sqlite_db};

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
}

/// An OTLP/HTTP trace receiver (protobuf, `POST /v1/traces`) on a port of its own.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .route("/v1/traces", post(receive))
            .with_state(spans.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, spans }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    State(spans): State<Arc<Mutex<Vec<Got>>>>,
    body: Bytes,
) -> ([(axum::http::HeaderName, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut got = spans.lock().unwrap();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .map(|v| match v {
                AnyValue::StringValue(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
            got.push(Got {
                service: service.clone(),
                name: span.name,
                trace_id: hex(&span.trace_id),
            });
        }
    }
    let reply = ExportTraceServiceResponse::default().encode_to_vec();
    ([(CONTENT_TYPE, "application/x-protobuf")], reply)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_a_request_through_rabbitmq_to_the_notifier() {
    let Some(broker) = broker("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").await else {
        return;
    };
    let receiver = Receiver::start().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let channels = Channels {
        prefix: format!("banktrace{}", &tag[..10]),
        queue: format!("banktrace-{}", &tag[..10]),
        ..Channels::default()
    };
    let _cleanup = Cleanup(broker.clone(), channels.clone());
    let (_bank_dir, bank_db) = sqlite_db();
    let (_dir, notifier_db) = notifier_sqlite();
    let otlp = ["--otlp-endpoint", receiver.url.as_str()];
    let _notifier = NotifierProcess::start_with(url(&broker), &channels, &notifier_db, &otlp);
    let server = Server::start_with(
        &bank_db,
        &[
            &[
                "--broker",
                url(&broker),
                "--broker-prefix",
                &channels.prefix,
            ][..],
            &otlp[..],
        ]
        .concat(),
    );

    // The caller's own trace: the request continues it.
    let trace_id = tag.clone();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let reply = reqwest::Client::new()
        .post(format!("{}/accounts", server.base))
        .header("traceparent", &traceparent)
        .json(&json!({ "owner": "traced" }))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 201, "{:?}", reply.text().await);

    // The spans of both services reach the receiver (each exporter sends every few seconds).
    let want = [
        ("bank", "http.request"),
        ("bank", "command"),
        ("bank", "subscriber.batch"),
        ("bank-notifier", "consume"),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let in_trace = loop {
        let in_trace: BTreeSet<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .map(|s| (s.service, s.name))
            .collect();
        if want
            .iter()
            .all(|(svc, name)| in_trace.contains(&(svc.to_string(), name.to_string())))
        {
            break in_trace;
        }
        assert!(
            Instant::now() < deadline,
            "not every span joined trace {trace_id}: {in_trace:?}; all: {:?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The projectors' and the relay's batches continue it too (each batch here holds this one
    // event; a batch of several continues its first event's trace and links to the others').
    let batches = receiver
        .spans()
        .into_iter()
        .filter(|s| s.service == "bank" && s.name == "subscriber.batch" && s.trace_id == trace_id)
        .count();
    assert!(
        batches >= 2,
        "no projector batch joined the trace; got {in_trace:?}"
    );
}
