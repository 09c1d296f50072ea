//! E1, the end-to-end figure: the bank app (its HTTP API, command handlers, four projectors and
//! the transfer process manager, all live) on PostgreSQL, in a database of its own, driven over
//! HTTP by 8 clients with W1's shape: 100 accounts opened, then 99 deposits each.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::BenchError;
use crate::db::Db;
use crate::stats::percentile_ms;
use crate::w1::{ACCOUNTS, COMMANDS_PER_ACCOUNT};

/// HTTP clients, each owning a disjoint set of accounts.
pub(crate) const CLIENTS: usize = 8;
/// Minor units per deposit.
const DEPOSIT: u64 = 100;

/// What one run of E1 measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct E1Run {
    /// `POST`s per second (opens and deposits).
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// `GET /accounts/{id}?after={last deposit's position}` right after the last deposit: the
    /// time to read one's own write through the `accounts` read model.
    pub(crate) read_p50_ms: f64,
    pub(crate) read_p99_ms: f64,
}

/// One run of E1 in a new database, dropped after.
pub(crate) async fn run(db: &Db, run: usize) -> Result<E1Run, BenchError> {
    let name = format!("{}_e1_{run}", db.prefix());
    db.create_database(&name).await?;
    let result = drive(&db.url_of(&name)).await;
    db.drop_database(&name).await?;
    result
}

async fn drive(url: &str) -> Result<E1Run, BenchError> {
    let backend = bank::Backend::open(url).await?;
    let bank = Arc::new(bank::Bank::start(backend, bank::BankConfig::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, bank::router(bank.clone())).into_future());
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut joins = Vec::new();
    for task in 0..CLIENTS {
        let (client, base) = (client.clone(), base.clone());
        joins.push(tokio::spawn(async move {
            let mine: Vec<usize> = (0..ACCOUNTS).filter(|a| a % CLIENTS == task).collect();
            let mut lat = Vec::with_capacity(mine.len() * COMMANDS_PER_ACCOUNT);
            let mut ids = Vec::with_capacity(mine.len());
            for &a in &mine {
                let t = Instant::now();
                let opened = post(
                    &client,
                    &format!("{base}/accounts"),
                    json!({"owner": format!("owner{a}")}),
                )
                .await?;
                lat.push(t.elapsed());
                let id = opened["id"]
                    .as_str()
                    .ok_or_else(|| BenchError::Check(format!("no id in {opened}")))?;
                ids.push((id.to_owned(), 0u64));
            }
            for _ in 1..COMMANDS_PER_ACCOUNT {
                for (id, last) in &mut ids {
                    let t = Instant::now();
                    let written = post(
                        &client,
                        &format!("{base}/accounts/{id}/deposit"),
                        json!({"amount": DEPOSIT}),
                    )
                    .await?;
                    lat.push(t.elapsed());
                    *last = written["position"].as_u64().unwrap_or(0);
                }
            }
            Ok::<_, BenchError>((lat, ids))
        }));
    }
    let (mut lat, mut ids) = (Vec::new(), Vec::new());
    for j in joins {
        let (l, i) = j.await??;
        lat.extend(l);
        ids.extend(i);
    }
    let elapsed = started.elapsed();

    // Read your own write: each account at its last deposit's position, through the read model.
    let mut reads = Vec::with_capacity(ids.len());
    let want = (COMMANDS_PER_ACCOUNT as u64 - 1) * DEPOSIT;
    for (id, last) in &ids {
        let t = Instant::now();
        let resp = client
            .get(format!("{base}/accounts/{id}?after={last}"))
            .send()
            .await?;
        let status = resp.status();
        let account: Value = resp.json().await?;
        reads.push(t.elapsed());
        if !status.is_success() || account["balance"].as_u64() != Some(want) {
            return Err(BenchError::Check(format!(
                "account {id} after {last}: {status} {account}; expected balance {want}"
            )));
        }
    }
    server.abort();
    let _ = server.await;
    if let Ok(bank) = Arc::try_unwrap(bank) {
        bank.shutdown().await;
    }
    Ok(E1Run {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&mut lat, 50.0),
        p99_ms: percentile_ms(&mut lat, 99.0),
        read_p50_ms: percentile_ms(&mut reads, 50.0),
        read_p99_ms: percentile_ms(&mut reads, 99.0),
    })
}

/// A `POST` with a JSON body; its JSON answer, or an error naming the status.
async fn post(client: &reqwest::Client, url: &str, body: Value) -> Result<Value, BenchError> {
    let resp = client
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    let status = resp.status();
    let answer: Value = resp.json().await?;
    if !status.is_success() {
        return Err(BenchError::Check(format!("POST {url}: {status} {answer}")));
    }
    Ok(answer)
}
