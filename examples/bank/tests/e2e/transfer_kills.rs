//! 1,000 transfers between 20 accounts from 8 clients, the server SIGKILLed twice mid-run and
//! restarted on the same database: every transfer ends completed or failed, money is
//! conserved, and no step of any transfer is applied twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bank::{AccountEvent, Backend, TransferEvent};
use cqrs_core::Cursor;
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::RwLock;

use crate::support::{Rng, Server, pg_db, sqlite_db};

const ACCOUNTS: usize = 20;
const CLIENTS: usize = 8;
const TRANSFERS: usize = 1_000;
const OPENING: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_survive_two_sigkills_on_the_embedded_store() {
    let (_dir, db) = sqlite_db();
    transfers_survive_two_sigkills(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transfers_survive_two_sigkills_on_postgres() {
    let Some(db) = pg_db().await else { return };
    transfers_survive_two_sigkills(&db.url).await;
    db.drop_db().await;
}

async fn transfers_survive_two_sigkills(db: &str) {
    let server = Server::start(db);
    let c = server.client();
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        let id = c.open(&format!("owner{i}")).await;
        c.deposit(&id, OPENING).await;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    // The clients follow the server across restarts; each transfer has an idempotency key,
    // so one cut off by a kill is sent again and started once.
    let current = Arc::new(RwLock::new(c));
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let (current, ids, accepted) = (current.clone(), ids.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(7 + n as u64);
            let mut mine = Vec::new();
            for k in 0..TRANSFERS / CLIENTS {
                let from = rng.below(ACCOUNTS as u64) as usize;
                let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                let body =
                    json!({"from": ids[from], "to": ids[to], "amount": 1 + rng.below(3_000)});
                let key = format!("client{n}-transfer{k}");
                loop {
                    let c = current.read().await.clone();
                    match c.try_post_key("/transfers", body.clone(), &key).await {
                        Ok((StatusCode::ACCEPTED, b)) => {
                            mine.push(b["id"].as_str().unwrap().to_owned());
                            accepted.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok((status, b)) => panic!("transfer {key}: {status} {b}"),
                        // The server is down: wait for the next one.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
            mine
        }));
    }
    let mut server = Some(server);
    for kill_at in [TRANSFERS / 3, 2 * TRANSFERS / 3] {
        while accepted.load(Ordering::Relaxed) < kill_at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut slot = current.write().await;
        server.take().expect("a running server").kill();
        let next = Server::start(db);
        *slot = next.client();
        server = Some(next);
    }
    let mut transfers = Vec::new();
    for t in tasks {
        transfers.extend(t.await.unwrap());
    }
    assert_eq!(transfers.len(), TRANSFERS);
    let c = current.read().await.clone();
    for id in &transfers {
        let row = c.finished_transfer(id).await;
        assert!(
            row["status"] == "completed" || row["status"] == "failed",
            "{row}"
        );
    }
    c.settle().await;
    let (_, projections) = c.get("/projections").await;
    for p in projections.as_array().unwrap() {
        assert_eq!(
            (p["lag"].as_u64(), p["parked"].as_u64()),
            (Some(0), Some(0)),
            "{p}"
        );
    }
    drop(server);
    check_the_log(db, &transfers).await;
}

/// Reads the whole log: each step of each transfer appears once, every transfer ended, no
/// money is left held, and the balances add up to what was deposited.
async fn check_the_log(db: &str, transfers: &[String]) {
    let backend = Backend::open(db).await.unwrap();
    // (transfer, step) -> times seen.
    let mut steps: HashMap<(String, &'static str), u32> = HashMap::new();
    let mut balances: HashMap<String, u64> = HashMap::new();
    let (mut completed, mut failed) = (0, 0);
    let mut after = Cursor::START;
    loop {
        let batch = backend.events().read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.cursor;
        for e in &batch {
            if let Ok(Some(a)) = e.decode_for::<bank::Account>() {
                let (step, transfer, balance) = match a.payload {
                    AccountEvent::TransferDebited {
                        transfer_id,
                        balance,
                        ..
                    } => ("debit", transfer_id, balance),
                    AccountEvent::TransferCredited {
                        transfer_id,
                        balance,
                        ..
                    } => ("credit", transfer_id, balance),
                    AccountEvent::TransferRefunded {
                        transfer_id,
                        balance,
                        ..
                    } => ("refund", transfer_id, balance),
                    AccountEvent::Deposited { balance, .. } => {
                        balances.insert(e.stream.id.clone(), balance);
                        continue;
                    }
                    AccountEvent::TransferSettled { transfer_id } => {
                        *steps
                            .entry((transfer_id.to_string(), "settle"))
                            .or_default() += 1;
                        continue;
                    }
                    _ => continue,
                };
                balances.insert(e.stream.id.clone(), balance);
                *steps.entry((transfer.to_string(), step)).or_default() += 1;
            } else if let Ok(Some(t)) = e.decode_for::<bank::Transfer>() {
                let step = match t.payload {
                    TransferEvent::Started { .. } => "started",
                    TransferEvent::Debited => "debited",
                    TransferEvent::Completed => {
                        completed += 1;
                        "completed"
                    }
                    TransferEvent::CreditFailed { .. } => "credit failed",
                    TransferEvent::Failed { .. } => {
                        failed += 1;
                        "failed"
                    }
                };
                *steps.entry((e.stream.id.clone(), step)).or_default() += 1;
            }
        }
    }
    for ((transfer, step), n) in &steps {
        assert_eq!(
            *n, 1,
            "step {step} of transfer {transfer} applied {n} times"
        );
    }
    assert_eq!(
        completed + failed,
        transfers.len(),
        "every transfer ended once"
    );
    for t in transfers {
        let ended = steps.contains_key(&(t.clone(), "completed"))
            || steps.contains_key(&(t.clone(), "failed"));
        assert!(ended, "transfer {t} ended");
    }
    assert!(
        completed > transfers.len() / 2,
        "most transfers complete: {completed}"
    );
    let total: u64 = balances.values().sum();
    assert_eq!(total, OPENING * ACCOUNTS as u64, "money is conserved");
    let handlers = bank::Handlers::new(&backend, cqrs_core::RetryPolicy::default());
    for id in balances.keys() {
        let (state, _) = handlers.accounts.load(id).await.unwrap();
        assert!(
            state.outgoing.is_empty(),
            "account {id} holds no transfer's money"
        );
    }
    eprintln!("transfers: {completed} completed, {failed} failed, across two SIGKILLs");
    backend.close().await;
}
