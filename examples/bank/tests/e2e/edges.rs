//! The two error codes load alone does not provoke: 409 when conflicts outlast the retries,
//! and 504 when a read model cannot catch up in time.

use std::sync::Arc;

use bank::{Backend, Bank, BankConfig};
use cqrs_core::RetryPolicy;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::Connection;

use crate::support::{Client, Server, pg_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conflicts_left_after_retries_are_409_and_write_nothing() {
    // Two servers on one database file (one server queues its own commands on an account, so
    // conflicts come from the other), each a router on a real listener with a bank that never
    // retries a conflict.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bank.db").display().to_string();
    let mut clients = Vec::new();
    let mut banks = Vec::new();
    for _ in 0..2 {
        let backend = Backend::open(&file).await.unwrap();
        let config = BankConfig {
            retry: RetryPolicy::NEVER,
            ..BankConfig::default()
        };
        let bank = Arc::new(Bank::start(backend, config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(axum::serve(listener, bank::router(bank.clone())).into_future());
        clients.push(Client::new(&base));
        banks.push(bank);
    }
    let c = clients[0].clone();
    let id = c.open("hot").await;

    let (mut ok, mut conflicts) = (0, 0);
    for _round in 0..10 {
        let calls = (0..32).map(|i| {
            let c = clients[i % 2].clone();
            let path = format!("/accounts/{id}/deposit");
            tokio::spawn(async move { c.post(&path, json!({"amount": 1})).await })
        });
        for call in calls.collect::<Vec<_>>() {
            let (s, b) = call.await.unwrap();
            match s {
                StatusCode::OK => ok += 1,
                StatusCode::CONFLICT => {
                    assert_eq!(b["code"], "conflict", "{b}");
                    conflicts += 1;
                }
                other => panic!("unexpected {other}: {b}"),
            }
        }
        if conflicts > 0 {
            break;
        }
    }
    assert!(
        conflicts > 0,
        "32 concurrent deposits on one account through two servers without retries conflict"
    );
    c.settle().await;
    let (_, a) = c.get(&format!("/accounts/{id}")).await;
    assert_eq!(a["balance"], ok, "only the answered deposits were written");
    assert_eq!(a["version"], ok + 1);
}

#[tokio::test]
async fn a_read_model_that_cannot_catch_up_is_a_504() {
    let Some(db) = pg_db().await else { return };
    {
        let server = Server::start_with(&db.url, &["--read-timeout-ms", "300"]);
        let c = server.client();
        let id = c.open("slow").await;
        let pos = c.deposit(&id, 10).await;
        let (s, _) = get_patiently(&c, &format!("/accounts/{id}/statement?after={pos}")).await;
        assert_eq!(s, StatusCode::OK);

        // Another session locks the statement table against writes: its projector blocks.
        // NOTE: SHARE mode, not ACCESS EXCLUSIVE: the latter takes a transaction id, which
        // holds back the store's read watermark and would pause every subscriber.
        let mut locker = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
        sqlx::query("LOCK TABLE statement IN SHARE MODE")
            .execute(&mut locker)
            .await
            .unwrap();
        let pos = c.deposit(&id, 5).await;
        let (s, b) = c
            .get(&format!("/accounts/{id}/statement?after={pos}"))
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (StatusCode::GATEWAY_TIMEOUT, Some("timeout")),
            "{b}"
        );
        // The accounts read model is not blocked.
        let (s, b) = get_patiently(&c, &format!("/accounts/{id}?after={pos}")).await;
        assert_eq!((s, b["balance"].as_i64()), (StatusCode::OK, Some(15)));

        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        let (s, b) = get_patiently(&c, &format!("/accounts/{id}/statement?after={pos}")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["lines"].as_array().unwrap().len(), 2);
    }
    db.drop_db().await;
}

/// A GET that tries again after a 504: on a busy machine a projector may take longer than the
/// short read timeout of this test even when nothing blocks it.
async fn get_patiently(c: &Client, path: &str) -> (StatusCode, serde_json::Value) {
    for _ in 0..30 {
        let (s, b) = c.get(path).await;
        if s != StatusCode::GATEWAY_TIMEOUT {
            return (s, b);
        }
    }
    panic!("{path} kept timing out");
}

/// A batch whose only event closes an account changes no balance: on PostgreSQL the NULL
/// balance parameter must still be an integer, or the read model parks the event.
#[tokio::test]
async fn a_close_alone_in_its_batch_updates_the_read_model_on_postgres() {
    let Some(db) = pg_db().await else { return };
    {
        let server = Server::start(&db.url);
        let c = server.client();
        for owner in ["dora", "emil"] {
            let (s, b) = c.post("/accounts", json!({ "owner": owner })).await;
            assert_eq!(s, StatusCode::CREATED);
            let id = b["id"].as_str().unwrap().to_owned();
            // The read model has the opening before the close is even issued.
            let (s, _) = c
                .get(&format!("/accounts/{id}?after={}", b["position"]))
                .await;
            assert_eq!(s, StatusCode::OK);
            let (s, b) = c.post(&format!("/accounts/{id}/close"), json!({})).await;
            assert_eq!(s, StatusCode::OK, "{b}");
            let (s, b) = c
                .get(&format!("/accounts/{id}?after={}", b["position"]))
                .await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(
                (b["status"].clone(), b["version"].clone()),
                (json!("closed"), json!(2))
            );
        }
        let (_, p) = c.get("/projections").await;
        let parked: u64 = p
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["parked"].as_u64().unwrap())
            .sum();
        assert_eq!(parked, 0, "nothing parked: {p}");
    }
    db.drop_db().await;
}
