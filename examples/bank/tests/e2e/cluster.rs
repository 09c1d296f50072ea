//! Two `bank serve` processes on one database (PostgreSQL, or one SQLite file): one runs the
//! projectors (leases), both serve reads of their own writes, and the survivor takes over when
//! the other dies.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Client, Server, pg_db, sqlite_db};

async fn wait_active(c: &Client, active: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, p) = c.get("/projections").await;
        if p.as_array().unwrap().iter().all(|s| s["active"] == active) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "projectors not active={active}: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_database_and_fail_over() {
    let Some(db) = pg_db().await else { return };
    share_and_fail_over(&db.url).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_sqlite_file_and_fail_over() {
    let (_dir, db) = sqlite_db();
    share_and_fail_over(&db).await;
}

async fn share_and_fail_over(url: &str) {
    {
        let a = Server::start(url);
        wait_active(&a.client(), true).await;
        let b = Server::start(url);
        let cb = b.client();

        // B reads its own writes, though A runs every projector.
        let (x, y) = (cb.open("xena").await, cb.open("yann").await);
        let pos = cb.deposit(&x, 70).await;
        let (s, acc) = cb.get(&format!("/accounts/{x}?after={pos}")).await;
        assert_eq!(
            (s, acc["balance"].as_i64()),
            (StatusCode::OK, Some(70)),
            "{acc}"
        );
        let p = wait_active(&cb, false).await;
        let accounts = p
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "accounts")
            .unwrap();
        assert!(accounts["position"].as_u64().unwrap() >= pos, "{p}");
        let (_, t) = cb
            .post("/transfers", json!({"from": x, "to": y, "amount": 20}))
            .await;
        assert_eq!(
            cb.finished_transfer(t["id"].as_str().unwrap()).await["status"],
            "completed"
        );

        // A dies; B takes the leases and carries on.
        a.kill();
        wait_active(&cb, true).await;
        let pos = cb.deposit(&x, 5).await;
        let (_, acc) = cb.get(&format!("/accounts/{x}?after={pos}")).await;
        assert_eq!(acc["balance"], 55);
        let (_, t) = cb
            .post("/transfers", json!({"from": x, "to": y, "amount": 55}))
            .await;
        assert_eq!(
            cb.finished_transfer(t["id"].as_str().unwrap()).await["status"],
            "completed"
        );
        cb.settle().await;
        let (_, acc) = cb.get(&format!("/accounts/{y}")).await;
        assert_eq!(acc["balance"], 75);
    }
}
