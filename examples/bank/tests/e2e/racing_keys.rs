//! Repeats of one idempotency key racing through two `bank serve` processes on one database:
//! each pair gets one answer twice, never a refusal for the repeat (issue 21, item 5).

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::support::{Client, Server, pg_db, sqlite_db};

/// Racing pairs of each kind.
const PAIRS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_repeats_of_a_key_through_two_servers_on_postgres_get_one_answer() {
    let db = pg_db()
        .await
        .expect("PostgreSQL must be reachable (DATABASE_URL) for this test");
    race(&db.url).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_repeats_of_a_key_through_two_servers_on_one_sqlite_file_get_one_answer() {
    let (_dir, db) = sqlite_db();
    race(&db).await;
}

async fn race(url: &str) {
    let (a, b) = (Server::start(url), Server::start(url));
    let (ca, cb) = (a.client(), b.client());
    let mut wrong = Vec::new();

    // Opening: the repeat that loads after the first committed finds the account open.
    for pair in 0..PAIRS {
        let key = Uuid::new_v4().to_string();
        let body = json!({ "owner": "racer" });
        let ((sa, ba), (sb, bb)) = tokio::join!(
            ca.post_key("/accounts", body.clone(), &key),
            cb.post_key("/accounts", body.clone(), &key)
        );
        if (sa, sb) != (StatusCode::CREATED, StatusCode::CREATED) || ba != bb {
            wrong.push(format!("open, pair {pair}: {sa} {ba} / {sb} {bb}"));
        }
    }

    // Withdrawing all there is: the repeat that loads after the first committed finds nothing
    // left to withdraw.
    let id = ca.open("payer").await;
    for pair in 0..PAIRS {
        ca.deposit(&id, 100).await;
        let key = Uuid::new_v4().to_string();
        let path = format!("/accounts/{id}/withdraw");
        let body = json!({ "amount": 100 });
        let ((sa, ba), (sb, bb)) =
            tokio::join!(post(&ca, &path, &body, &key), post(&cb, &path, &body, &key));
        if (sa, sb) != (StatusCode::OK, StatusCode::OK) || ba != bb {
            wrong.push(format!("withdraw, pair {pair}: {sa} {ba} / {sb} {bb}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} racing repeats answered apart: {wrong:#?}",
        wrong.len(),
        2 * PAIRS
    );
    let (_, acc) = ca.get(&format!("/accounts/{id}")).await;
    let (s, b) = post(
        &cb,
        &format!("/accounts/{id}/withdraw"),
        &json!({"amount": 1}),
        "last",
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")),
        "every withdrawal applied once: {acc} {b}"
    );
}

async fn post(
    c: &Client,
    path: &str,
    body: &serde_json::Value,
    key: &str,
) -> (StatusCode, serde_json::Value) {
    c.post_key(path, body.clone(), key).await
}
