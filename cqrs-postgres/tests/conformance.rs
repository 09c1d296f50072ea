//! The core conformance suite against PostgreSQL, in the default schema and in two schemas
//! sharing one database.

mod support;

use std::sync::Arc;

use cqrs_core::testkit::conformance;
use cqrs_core::{EventAppender, ExpectedVersion, StreamId, StreamReaderExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn event_store_passes_the_conformance_suite() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    conformance::event_store(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_stores_pass_the_conformance_suite() {
    let db = support::TestDb::new().await;
    let store = db.store("public").await;
    conformance::snapshot_store(&store.snapshots()).await;
    conformance::checkpoint_store(&store.checkpoints()).await;
    conformance::dead_letter_store(&store.dead_letters()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schemas_share_a_database_independently() {
    let db = support::TestDb::new().await;
    let (a, b) = (db.store("tenant_a").await, db.store("tenant_b").await);
    let stream = StreamId::new("account", "1");
    a.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![conformance::sample_event(1)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        b.stream_version(&stream).await.unwrap(),
        0,
        "schemas do not see each other's events"
    );
    b.append(
        &stream,
        ExpectedVersion::NoStream,
        vec![conformance::sample_event(2)],
        None,
    )
    .await
    .unwrap();
    assert_eq!(a.stream_version(&stream).await.unwrap(), 1);
    conformance::event_store(Arc::new(b.clone())).await;
    conformance::checkpoint_store(&a.checkpoints()).await;
    let tables: i64 = cqrs_postgres::sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'events' AND table_schema IN ('tenant_a', 'tenant_b')",
    )
    .fetch_one(a.pool())
    .await
    .unwrap();
    assert_eq!(tables, 2, "each schema has its own events table");
    assert!(
        cqrs_postgres::PgEventStore::connect_with(
            db.options.clone(),
            cqrs_postgres::PgConfig::with_schema("Bad-Name")
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_repeats_of_one_command_append_once() {
    let db = support::TestDb::new().await;
    // Also the URL form of connecting, in a schema of its own.
    let store = Arc::new(
        cqrs_postgres::PgEventStore::connect(
            &db.url(),
            cqrs_postgres::PgConfig::with_schema("by_url"),
        )
        .await
        .unwrap(),
    );
    assert_eq!(store.schema(), "by_url");
    for round in 0..5 {
        let stream = StreamId::new("idem", format!("{round}"));
        let command = uuid::Uuid::new_v4();
        let mut tasks = Vec::new();
        for i in 0..8 {
            let (store, stream) = (store.clone(), stream.clone());
            tasks.push(tokio::spawn(async move {
                let events = vec![
                    conformance::sample_event(i),
                    conformance::sample_event(i + 10),
                ];
                store
                    .append(&stream, ExpectedVersion::Any, events, Some(command.into()))
                    .await
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap().expect("a repeat is no error"));
        }
        assert_eq!(
            results.iter().filter(|r| !r.duplicate).count(),
            1,
            "one append wins: {results:?}"
        );
        assert!(
            results
                .iter()
                .all(|r| (r.version, r.position) == (results[0].version, results[0].position))
        );
        assert_eq!(
            store.stream_version(&stream).await.unwrap(),
            2,
            "written once"
        );
    }
}
