//! SIGKILL under load, restart: every acknowledged command is there and the read models
//! catch up to the state the events give.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bank::{AccountEvent, Backend, Handlers, TransferEvent};
use cqrs_core::{Cursor, RetryPolicy};
use reqwest::StatusCode;
use serde_json::json;
use tokio::sync::Mutex;

use crate::support::{Client, Rng, Server, pg_db, sqlite_db};

const ACCOUNTS: usize = 10;
const CLIENTS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_on_the_embedded_store() {
    let (_dir, db) = sqlite_db();
    sigkill_under_load(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_on_postgres() {
    let Some(db) = pg_db().await else { return };
    sigkill_under_load(&db.url).await;
    db.drop_db().await;
}

/// An acknowledged command: what the server answered 200 or 202 to.
#[derive(Debug, Clone)]
enum Acked {
    Money {
        account: String,
        kind: &'static str,
        amount: i64,
        version: u64,
    },
    Transfer(String),
}

async fn sigkill_under_load(db: &str) {
    let server = Server::start(db);
    let c = server.client();
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        let id = c.open(&format!("owner{i}")).await;
        c.deposit(&id, 100_000).await;
        ids.push(id);
    }
    let ids = Arc::new(ids);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let (c, ids, acked) = (c.clone(), ids.clone(), acked.clone());
        tasks.push(tokio::spawn(
            async move { client_loop(n, c, ids, acked).await },
        ));
    }
    // Kill the server mid-run, once the clients have had some answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acked.lock().await.len() < 30 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    eprintln!(
        "crash: {} commands acknowledged before SIGKILL",
        acked.len()
    );
    assert!(
        !acked.is_empty(),
        "the clients were busy when the server died"
    );

    // Restart on the same database: every acknowledged command is reflected.
    let server = Server::start(db);
    let c = server.client();
    let mut statements = HashMap::new();
    for a in &acked {
        match a {
            Acked::Money {
                account,
                kind,
                amount,
                version,
            } => {
                if !statements.contains_key(account) {
                    c.settle().await;
                    let (_, st) = c.get(&format!("/accounts/{account}/statement")).await;
                    statements.insert(account.clone(), st);
                }
                let st = &statements[account];
                let line = st["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["version"] == *version);
                let line = line.unwrap_or_else(|| {
                    panic!("acknowledged {kind} at {account} v{version} is missing: {st}")
                });
                assert_eq!(
                    (
                        line["kind"].as_str().unwrap(),
                        line["amount"].as_i64().unwrap()
                    ),
                    (*kind, *amount)
                );
            }
            Acked::Transfer(id) => {
                let row = c.finished_transfer(id).await;
                assert!(
                    row["status"] == "completed" || row["status"] == "failed",
                    "{row}"
                );
            }
        }
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

    // The read models hold what the events say, and money is conserved.
    let backend = Backend::open(db).await.unwrap();
    let handlers = Handlers::new(&backend, RetryPolicy::default());
    let rows = backend.queries().accounts().await.unwrap();
    assert_eq!(rows.len(), ACCOUNTS);
    let mut total = 0i128;
    for row in &rows {
        let (state, version) = handlers.accounts.load(&row.id).await.unwrap();
        assert_eq!(
            (row.balance, row.version),
            (state.balance as i64, version as i64),
            "row {row:?}"
        );
        assert!(state.outgoing.is_empty(), "no transfer left holding money");
        total += state.balance as i128;
    }
    // Folding the log in order: at every event, the balances plus the money held by
    // unfinished transfers equal deposits minus withdrawals, and no balance is negative.
    let (mut deposits, mut withdrawals, mut ended, mut started) = (0i128, 0i128, 0, 0);
    let (mut balances, mut held) = (HashMap::<String, i128>::new(), 0i128);
    let mut after = Cursor::START;
    loop {
        let batch = backend.events().read_all(after, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.cursor;
        for e in &batch {
            if let Ok(Some(a)) = e.decode_for::<bank::Account>() {
                let (delta, balance) = match a.payload {
                    AccountEvent::Deposited { amount, balance } => {
                        deposits += amount as i128;
                        (amount as i128, balance)
                    }
                    AccountEvent::Withdrawn { amount, balance } => {
                        withdrawals += amount as i128;
                        (-(amount as i128), balance)
                    }
                    AccountEvent::TransferDebited {
                        amount, balance, ..
                    } => {
                        held += amount as i128;
                        (-(amount as i128), balance)
                    }
                    AccountEvent::TransferCredited {
                        amount, balance, ..
                    }
                    | AccountEvent::TransferRefunded {
                        amount, balance, ..
                    } => {
                        held -= amount as i128;
                        (amount as i128, balance)
                    }
                    _ => continue,
                };
                let b = balances.entry(e.stream.id.clone()).or_default();
                *b += delta;
                assert_eq!(
                    *b, balance as i128,
                    "the balance an event carries follows from the one before"
                );
                assert!(held >= 0, "transfers never hold negative money");
                let sum: i128 = balances.values().sum();
                assert_eq!(
                    sum + held,
                    deposits - withdrawals,
                    "money is conserved at position {}",
                    e.position()
                );
            } else if let Ok(Some(t)) = e.decode_for::<bank::Transfer>() {
                match t.payload {
                    TransferEvent::Started { .. } => started += 1,
                    TransferEvent::Completed | TransferEvent::Failed { .. } => ended += 1,
                    _ => {}
                }
            }
        }
    }
    assert_eq!(held, 0, "no money is left in transfers");
    assert_eq!(total, deposits - withdrawals, "money is conserved");
    assert_eq!(started, ended, "every transfer ended");
    let transfers = backend.queries().transfers().await.unwrap();
    assert_eq!(transfers.len(), started);
    assert!(
        transfers
            .iter()
            .all(|t| t.status == "completed" || t.status == "failed")
    );
    backend.close().await;
}

async fn client_loop(n: u64, c: Client, ids: Arc<Vec<String>>, acked: Arc<Mutex<Vec<Acked>>>) {
    let mut rng = Rng::new(100 + n);
    loop {
        let a = ids[rng.below(ids.len() as u64) as usize].clone();
        let amount = 1 + rng.below(1_000);
        let choice = rng.below(3);
        let result = match choice {
            0 => {
                let b = &ids[(ids.iter().position(|x| *x == a).unwrap() + 1) % ids.len()];
                c.try_post("/transfers", json!({"from": a, "to": b, "amount": amount}))
                    .await
            }
            1 => {
                c.try_post(
                    &format!("/accounts/{a}/deposit"),
                    json!({ "amount": amount }),
                )
                .await
            }
            _ => {
                c.try_post(
                    &format!("/accounts/{a}/withdraw"),
                    json!({ "amount": amount }),
                )
                .await
            }
        };
        let Ok((status, body)) = result else { return };
        let entry = match (choice, status) {
            (0, StatusCode::ACCEPTED) => Acked::Transfer(body["id"].as_str().unwrap().to_owned()),
            (1, StatusCode::OK) => Acked::Money {
                account: a,
                kind: "deposit",
                amount: amount as i64,
                version: body["version"].as_u64().unwrap(),
            },
            (2, StatusCode::OK) => Acked::Money {
                account: a,
                kind: "withdrawal",
                amount: -(amount as i64),
                version: body["version"].as_u64().unwrap(),
            },
            _ => continue,
        };
        acked.lock().await.push(entry);
    }
}
