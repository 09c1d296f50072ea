//! Eight clients doing random transfers, deposits and withdrawals among twenty accounts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Client, Rng, Server, pg_db, sqlite_db};

const ACCOUNTS: usize = 20;
const CLIENTS: u64 = 8;
const OPS_PER_CLIENT: u64 = 40;
const INITIAL: u64 = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_load_on_the_embedded_store() {
    let (_dir, db) = sqlite_db();
    let server = Server::start(&db);
    random_load(&server.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_load_on_postgres() {
    let Some(db) = pg_db().await else { return };
    {
        let server = Server::start(&db.url);
        random_load(&server.client()).await;
    }
    db.drop_db().await;
}

#[derive(Default)]
struct Tally {
    deposited: AtomicU64,
    withdrawn: AtomicU64,
    refused: AtomicU64,
    conflicts: AtomicU64,
}

async fn random_load(c: &Client) {
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        let id = c.open(&format!("owner{i}")).await;
        c.deposit(&id, INITIAL).await;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let (c, ids, tally) = (c.clone(), ids.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(n + 1);
            let mut transfers = Vec::new();
            for _ in 0..OPS_PER_CLIENT {
                let a = &ids[rng.below(ACCOUNTS as u64) as usize];
                let amount = 1 + rng.below(3_000);
                let (path, body, kind) = match rng.below(10) {
                    0..4 => {
                        let mut b = &ids[rng.below(ACCOUNTS as u64) as usize];
                        while b == a {
                            b = &ids[rng.below(ACCOUNTS as u64) as usize];
                        }
                        (
                            "/transfers".to_owned(),
                            json!({"from": a, "to": b, "amount": amount}),
                            't',
                        )
                    }
                    4..7 => (
                        format!("/accounts/{a}/deposit"),
                        json!({ "amount": amount }),
                        'd',
                    ),
                    _ => (
                        format!("/accounts/{a}/withdraw"),
                        json!({ "amount": amount }),
                        'w',
                    ),
                };
                let (s, b) = c.post(&path, body).await;
                match (s, kind) {
                    (StatusCode::ACCEPTED, 't') => {
                        transfers.push(b["id"].as_str().unwrap().to_owned())
                    }
                    (StatusCode::OK, 'd') => {
                        _ = tally.deposited.fetch_add(amount, Ordering::Relaxed)
                    }
                    (StatusCode::OK, 'w') => {
                        _ = tally.withdrawn.fetch_add(amount, Ordering::Relaxed)
                    }
                    (StatusCode::UNPROCESSABLE_ENTITY, 'w') => {
                        assert_eq!(b["code"], "insufficient_funds");
                        tally.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    (StatusCode::CONFLICT, _) => {
                        _ = tally.conflicts.fetch_add(1, Ordering::Relaxed)
                    }
                    other => panic!("unexpected answer {other:?}: {b}"),
                }
            }
            transfers
        }));
    }
    let mut transfers = Vec::new();
    for t in tasks {
        transfers.extend(t.await.unwrap());
    }
    // Every transfer ends, completed or failed.
    let mut outcomes = HashMap::new();
    for t in &transfers {
        let row = c.finished_transfer(t).await;
        *outcomes
            .entry(row["status"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    c.settle().await;

    let mut total: i64 = 0;
    for id in ids.iter() {
        let (s, a) = c.get(&format!("/accounts/{id}")).await;
        assert_eq!(s, StatusCode::OK);
        let balance = a["balance"].as_i64().unwrap();
        assert!(balance >= 0, "negative balance: {a}");
        total += balance;
        // The statement adds up: each line's balance follows from the one before.
        let (_, st) = c.get(&format!("/accounts/{id}/statement")).await;
        let mut running = 0;
        for line in st["lines"].as_array().unwrap() {
            running += line["amount"].as_i64().unwrap();
            assert_eq!(
                line["balance"].as_i64().unwrap(),
                running,
                "statement of {id}: {st}"
            );
            assert!(running >= 0);
        }
        assert_eq!(running, balance, "statement of {id} ends at the balance");
    }
    let deposited = INITIAL * ACCOUNTS as u64 + tally.deposited.load(Ordering::Relaxed);
    let withdrawn = tally.withdrawn.load(Ordering::Relaxed);
    assert_eq!(total, (deposited - withdrawn) as i64, "money is conserved");
    assert!(
        outcomes.get("completed").copied().unwrap_or(0) > 0,
        "some transfers complete: {outcomes:?}"
    );
    eprintln!(
        "load: {} transfers {outcomes:?}, {} refused withdrawals, {} conflicts (409)",
        transfers.len(),
        tally.refused.load(Ordering::Relaxed),
        tally.conflicts.load(Ordering::Relaxed)
    );
}
