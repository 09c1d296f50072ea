//! Broken rows written behind the store's back: an unknown type, a payload that no longer
//! fits, metadata that does not parse. Each is named (stream, version, type) and parked by the
//! runner; the other events go on.

mod support;

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    AllStreamReader, BoxError, DeadLetterStore, DomainEvent, Error, EventAppender, ExpectedVersion,
    NewEvent, RecordedEvent, Runner, StreamEvent, StreamId, StreamItem, StreamReader,
    StreamReaderExt,
};
use cqrs_postgres::sqlx::{self, PgConnection};
use cqrs_postgres::{CORRUPT_METADATA_KEY, PgProjector};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
}
impl DomainEvent for AccountEvent {}

#[derive(Debug)]
struct Deposits;

#[cqrs_core::async_trait]
impl PgProjector for Deposits {
    fn name(&self) -> &str {
        "deposits"
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        if let Some(raw) = event.metadata.extra.get(CORRUPT_METADATA_KEY) {
            return Err(format!(
                "unreadable metadata {raw} at {} version {}",
                event.stream, event.stream_version
            )
            .into());
        }
        let amount = match event.decode::<AccountEvent>()?.payload {
            AccountEvent::Deposited { amount } => amount as i64,
            AccountEvent::Opened { .. } => 0,
        };
        sqlx::query("INSERT INTO handled (event_id, amount) VALUES ($1, $2)")
            .bind(event.event_id)
            .bind(amount)
            .execute(tx)
            .await?;
        Ok(())
    }
}

async fn insert_raw(
    store: &cqrs_postgres::PgEventStore,
    id: &str,
    ty: &str,
    payload: &str,
    metadata: &str,
) {
    sqlx::query(
        "INSERT INTO events (stream_category, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata) \
         VALUES ('acct', $1, 1, gen_random_uuid(), $2, 1, $3::json, $4::json)",
    )
    .bind(id)
    .bind(ty)
    .bind(payload)
    .bind(metadata)
    .execute(store.pool())
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_parked_and_the_rest_goes_on() {
    let db = support::TestDb::new().await;
    let store = Arc::new(db.store("public").await);
    sqlx::query("CREATE TABLE handled (event_id UUID PRIMARY KEY, amount BIGINT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let good = StreamId::new("acct", "good");
    let deposit = |n: u64| NewEvent::new("Deposited", serde_json::json!({ "amount": n }));
    store
        .append(
            &good,
            ExpectedVersion::NoStream,
            vec![
                NewEvent::new("Opened", serde_json::json!({"owner": "ann"})),
                deposit(5),
            ],
            None,
        )
        .await
        .unwrap();
    insert_raw(&store, "unknown", "Vanished", "{}", "{}").await;
    insert_raw(
        &store,
        "badpayload",
        "Deposited",
        r#"{"amount": "lots"}"#,
        "{}",
    )
    .await;
    insert_raw(
        &store,
        "badmeta",
        "Deposited",
        r#"{"amount": 1}"#,
        r#"{"correlation_id": 42}"#,
    )
    .await;
    // Valid JSON, but nested deeper than the JSON parser of the reader accepts.
    let deep_text = format!(r#"{{"amount": {}{}}}"#, "[".repeat(200), "]".repeat(200));
    insert_raw(&store, "deep", "Deposited", &deep_text, "{}").await;
    store
        .append(&good, ExpectedVersion::Exact(2), vec![deposit(7)], None)
        .await
        .unwrap();

    // Reading the stream names the broken row instead of panicking.
    let badmeta = StreamId::new("acct", "badmeta");
    let deep = StreamId::new("acct", "deep");
    assert_corrupt(
        store.read_stream(&badmeta, 1, 10).await,
        "badmeta",
        &["metadata"],
    );
    // Every read path hands the payload on as the text stored, byte for byte; decoding it is
    // the reader's part, which names the event (see cqrs-core's load tests).
    let read = store.read_stream(&deep, 1, 10).await.unwrap();
    assert_eq!(read[0].payload, deep_text);
    match read[0].decode::<AccountEvent>() {
        Err(Error::Decode {
            stream, version, ..
        }) => assert_eq!((stream, version), (deep.clone(), 1)),
        other => panic!("expected a decode error naming the event, got {other:?}"),
    }
    let loaded = stream_events(&store, &deep).await;
    assert_eq!(loaded[0].payload, deep_text);
    assert!(loaded[0].decode::<AccountEvent>(&deep).is_err());
    let full = store.read_stream(&good, 1, 10).await.unwrap();
    let loaded = stream_events(&store, &good).await;
    assert_eq!(
        loaded
            .into_iter()
            .map(|e| e.into_recorded(&good).unwrap())
            .collect::<Vec<_>>(),
        full
    );

    let dead_letters = Arc::new(store.dead_letters());
    let runner = Runner::new(store.clone(), dead_letters.clone())
        .with_config(support::fast_config())
        .with(store.transactional(Deposits))
        .start();
    let head = store.head_position().await.unwrap();
    runner
        .wait_for("deposits", head, Duration::from_secs(20))
        .await
        .unwrap();

    let total: Option<i64> = sqlx::query_scalar("SELECT SUM(amount)::int8 FROM handled")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM handled")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        (handled, total),
        (3, Some(12)),
        "the good events, before and after the bad rows, were handled"
    );

    let letters = dead_letters.list(Some("deposits")).await.unwrap();
    let mut parked: Vec<_> = letters
        .iter()
        .map(|l| (l.event.stream.id.as_str(), l.event.event_type.as_str()))
        .collect();
    parked.sort();
    assert_eq!(
        parked,
        vec![
            ("badmeta", "Deposited"),
            ("badpayload", "Deposited"),
            ("deep", "Deposited"),
            ("unknown", "Vanished")
        ]
    );
    for l in &letters {
        assert!(
            l.error.contains(&format!("acct-{}", l.event.stream.id)),
            "the error names the stream: {}",
            l.error
        );
        assert!(
            l.error.contains("version 1"),
            "the error names the version: {}",
            l.error
        );
        if l.event.stream.id != "badmeta" {
            assert!(
                l.error.contains(&l.event.event_type),
                "the error names the type: {}",
                l.error
            );
        }
    }
    let diag = store.diagnostics().await.unwrap();
    let lag = diag
        .subscribers
        .iter()
        .find(|s| s.name == "deposits")
        .expect("the checkpoint is reported");
    assert_eq!(
        (lag.cursor.position, lag.behind),
        (head, 0),
        "caught up: {diag:#?}"
    );
    assert_eq!(diag.head_position, head);
    let status = runner.status().await.unwrap();
    assert_eq!(status[0].parked, 4);
    runner.shutdown().await;
}

/// Asserts `result` is the corrupt-row error of version 1 of stream `id`, its reason naming
/// each of `needles`.
#[track_caller]
fn assert_corrupt<T: std::fmt::Debug>(result: Result<T, Error>, id: &str, needles: &[&str]) {
    match result {
        Err(Error::Corrupt {
            stream,
            version,
            reason,
        }) => {
            assert_eq!((stream.id.as_str(), version), (id, 1));
            for n in needles {
                assert!(reason.contains(n), "{reason}");
            }
        }
        other => panic!("expected a corrupt-row error, got {other:?}"),
    }
}

/// The events of `stream` as a load reads them: the payload and the metadata as stored text.
async fn stream_events(store: &cqrs_postgres::PgEventStore, stream: &StreamId) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    store
        .read_stream_into(stream, 1..=u64::MAX, &mut |item| {
            if let StreamItem::Event(e) = item {
                events.push(e);
            }
            Ok(())
        })
        .await
        .unwrap();
    events
}
