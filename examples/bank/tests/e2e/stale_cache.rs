//! Two `bank serve` processes on one database, money moving alternately through both: each
//! server's command cache goes stale at every turn, and no covered withdrawal or transfer is
//! ever refused for it (issue 21, item 1).

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Client, Server, pg_db, sqlite_db};

/// Rounds of deposit-through-one, withdraw-through-the-other.
const ROUNDS: u64 = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_through_two_servers_on_one_database_is_never_refused_on_a_stale_cache() {
    let db = pg_db()
        .await
        .expect("PostgreSQL must be reachable (DATABASE_URL) for this test");
    alternate(&db.url).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_through_two_servers_on_one_sqlite_file_is_never_refused_on_a_stale_cache() {
    let (_dir, db) = sqlite_db();
    alternate(&db).await;
}

async fn withdraw(c: &Client, id: &str, amount: u64) -> (StatusCode, serde_json::Value) {
    c.post(
        &format!("/accounts/{id}/withdraw"),
        json!({ "amount": amount }),
    )
    .await
}

/// Waits until `c`'s server runs every projector and the process manager.
async fn active(c: &Client) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, p) = c.get("/projections").await;
        if p.as_array().unwrap().iter().all(|s| s["active"] == true) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the first server did not take the projectors: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn alternate(url: &str) {
    // NOTE: A takes every lease before B starts, so A runs the process manager.
    let a = Server::start(url);
    let ca = a.client();
    active(&ca).await;
    let b = Server::start(url);
    let cb = b.client();
    let x = ca.open("xena").await;
    let y = cb.open("yann").await;
    let z = ca.open("zoe").await;
    cb.deposit(&x, 10).await;
    let mut refused = Vec::new();
    let mut last = 0;
    for round in 0..ROUNDS {
        // Deposit through one server, withdraw through the other: the withdrawal is covered
        // only by the deposit just made, which the withdrawing server's cache has not seen (it
        // last saw 10). The first half one way, the second half the other way.
        let (into, out) = if round < ROUNDS / 2 {
            (&ca, &cb)
        } else {
            (&cb, &ca)
        };
        into.deposit(&x, 100).await;
        let (s, body) = withdraw(out, &x, 100).await;
        match s {
            StatusCode::OK => last = last.max(body["position"].as_u64().unwrap()),
            _ => refused.push(format!("withdrawal, round {round}: {s} {body}")),
        }
    }

    // The process manager runs in A and debits through A's cache, which last saw z empty: a
    // transfer covered only by a deposit made through B completes.
    let transfers = ROUNDS / 3;
    for round in 0..transfers {
        cb.deposit(&z, 50).await;
        let (s, t) = cb
            .post("/transfers", json!({"from": z, "to": y, "amount": 50}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{t}");
        let done = cb.finished_transfer(t["id"].as_str().unwrap()).await;
        if done["status"] != "completed" {
            refused.push(format!("transfer, round {round}: {done}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {} covered withdrawals and transfers refused: {refused:#?}",
        refused.len(),
        ROUNDS + transfers
    );

    // A refusal through a stale server is still a refusal when it is due: 10 is left on x.
    cb.deposit(&x, 5).await;
    let (s, body) = withdraw(&ca, &x, 16).await;
    assert_eq!(
        (s, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds")),
        "{body}"
    );
    let (s, body) = withdraw(&ca, &x, 15).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "a withdrawal of the whole balance: {body}"
    );
    last = last.max(body["position"].as_u64().unwrap());

    cb.settle().await;
    ca.settle().await;
    for (id, balance) in [(&x, 0), (&y, 50 * transfers), (&z, 0)] {
        for c in [&ca, &cb] {
            let (_, acc) = c.get(&format!("/accounts/{id}?after={last}")).await;
            assert_eq!(acc["balance"], balance, "{acc}");
        }
    }
}
