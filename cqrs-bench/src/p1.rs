//! P1, process managers that keep up: the bank (HTTP API, command handlers, read models and the
//! transfer process manager, all live) with transfers among its requests.
//!
//! - Idle: one client, transfers one after the other on a store doing nothing else: the time
//!   from sending `POST /transfers` to the transfer's end (`Completed` or `Failed`) reaching a
//!   subscriber of the log.
//! - Loaded: W1's shape over HTTP by 8 clients (100 accounts opened, 99 deposits each) plus one
//!   transfer in ten requests (1 unit to a random other account): the same completion time, the
//!   transfer rate, and the process manager's lag (events) when the last request returns.
//!
//! The end of a transfer is seen by a watcher: a subscriber of the same store in a runner of
//! its own, woken as the bank's read models are, which notes when each transfer's last event
//! reaches it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::{
    BoxError, Checkpointed, InMemoryCheckpointStore, InMemoryDeadLetterStore, Projector,
    RecordedEvent, Runner, RunnerConfig, async_trait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::BenchError;
use crate::db::Db;
use crate::e1::CLIENTS;
use crate::stats::percentile_ms;
use crate::w1::{ACCOUNTS, COMMANDS_PER_ACCOUNT};

/// Transfers of the idle run.
const IDLE_TRANSFERS: usize = 50;
/// One request in this many is a transfer under load.
const TRANSFER_EVERY: usize = 10;

/// Which store the bank runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Store {
    Sqlite,
    Postgres,
}

/// What one run of P1 measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct P1Run {
    pub(crate) store: Store,
    pub(crate) loaded: bool,
    /// Transfers per second (under load: over the time the clients ran).
    pub(crate) transfers_per_sec: f64,
    /// Requests per second, all kinds (under load).
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// The process manager's lag (events) when the last request returned.
    pub(crate) lag: u64,
    /// Transfers not ended 30 s after the last request.
    pub(crate) unfinished: usize,
    /// Idle: the p50 of one `POST /accounts/{id}/deposit` (one command, one commit), the raw
    /// reference of the same run: a transfer's end takes several commits one after the other.
    pub(crate) deposit_p50_ms: f64,
}

/// When each transfer ended, as seen from the log.
#[derive(Debug, Default)]
struct Ends {
    at: Mutex<HashMap<Uuid, Instant>>,
    changed: tokio::sync::Notify,
}

#[async_trait]
impl Projector for Ends {
    fn name(&self) -> &str {
        "p1_watcher"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if let Some(e) = event.decode_for::<bank::Transfer>()?
            && matches!(
                e.payload,
                bank::TransferEvent::Completed | bank::TransferEvent::Failed { .. }
            )
        {
            let id: Uuid = event.stream.id.parse()?;
            self.at.lock().expect("lock").insert(id, Instant::now());
            self.changed.notify_waiters();
        }
        Ok(())
    }
}

impl Ends {
    async fn wait(&self, id: Uuid, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            if let Some(t) = self.at.lock().expect("lock").get(&id) {
                return Some(*t);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }
}

/// One run of P1 on `store`, idle or under load, in a new database dropped after.
pub(crate) async fn run(
    db: &Db,
    store: Store,
    loaded: bool,
    run: usize,
) -> Result<P1Run, BenchError> {
    match store {
        Store::Postgres => {
            let name = format!("{}_p1_{run}_{}", db.prefix(), u8::from(loaded));
            db.create_database(&name).await?;
            let result = drive(&db.url_of(&name), store, loaded).await;
            db.drop_database(&name).await?;
            result
        }
        Store::Sqlite => {
            let dir = std::env::temp_dir().join(format!("{}_p1_{run}_{loaded}", db.prefix()));
            std::fs::create_dir_all(&dir)?;
            let url = format!("sqlite:{}?mode=rwc", dir.join("bank.db").display());
            let result = drive(&url, store, loaded).await;
            // NOTE: best effort: a task of the stopped bank may still hold the WAL open.
            let _ = std::fs::remove_dir_all(&dir);
            result
        }
    }
}

async fn drive(url: &str, store: Store, loaded: bool) -> Result<P1Run, BenchError> {
    let backend = bank::Backend::open(url).await?;
    let bank = Arc::new(bank::Bank::start(
        backend.clone(),
        bank::BankConfig::default(),
    ));
    let ends = Arc::new(Ends::default());
    let watcher = Runner::new(backend.events(), Arc::new(InMemoryDeadLetterStore::new()))
        .with_config(RunnerConfig {
            poll_interval: Duration::from_millis(500),
            ..RunnerConfig::default()
        })
        .with(Checkpointed::new(
            ends.clone(),
            InMemoryCheckpointStore::new(),
        ))
        .start();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(axum::serve(listener, bank::router(bank.clone())).into_future());
    let client = reqwest::Client::new();

    let out = if loaded {
        load(&client, &base, &bank, &ends, store).await
    } else {
        idle(&client, &base, &ends, store).await
    };
    watcher.shutdown().await;
    server.abort();
    let _ = server.await;
    if let Ok(bank) = Arc::try_unwrap(bank) {
        bank.shutdown().await;
    }
    backend.close().await;
    out
}

async fn open(client: &reqwest::Client, base: &str, owner: &str) -> Result<String, BenchError> {
    let opened = post(client, &format!("{base}/accounts"), json!({"owner": owner})).await?;
    opened["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| BenchError::Check(format!("no id in {opened}")))
}

async fn transfer(
    client: &reqwest::Client,
    base: &str,
    from: &str,
    to: &str,
) -> Result<Uuid, BenchError> {
    let body = json!({"from": from, "to": to, "amount": 1});
    let accepted = post(client, &format!("{base}/transfers"), body).await?;
    accepted["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| BenchError::Check(format!("no id in {accepted}")))
}

async fn idle(
    client: &reqwest::Client,
    base: &str,
    ends: &Ends,
    store: Store,
) -> Result<P1Run, BenchError> {
    let a = open(client, base, "alice").await?;
    let b = open(client, base, "bob").await?;
    post(
        client,
        &format!("{base}/accounts/{a}/deposit"),
        json!({"amount": 1_000_000}),
    )
    .await?;
    let mut deposits = Vec::with_capacity(IDLE_TRANSFERS);
    for _ in 0..IDLE_TRANSFERS {
        let t = Instant::now();
        post(
            client,
            &format!("{base}/accounts/{b}/deposit"),
            json!({"amount": 1}),
        )
        .await?;
        deposits.push(t.elapsed());
    }
    let mut lat = Vec::with_capacity(IDLE_TRANSFERS);
    let started = Instant::now();
    for _ in 0..IDLE_TRANSFERS {
        let t = Instant::now();
        let id = transfer(client, base, &a, &b).await?;
        let end = ends
            .wait(id, Duration::from_secs(30))
            .await
            .ok_or_else(|| BenchError::Check(format!("transfer {id} did not end in 30 s")))?;
        lat.push(end.saturating_duration_since(t));
    }
    let elapsed = started.elapsed();
    Ok(P1Run {
        store,
        loaded: false,
        transfers_per_sec: IDLE_TRANSFERS as f64 / elapsed.as_secs_f64(),
        requests_per_sec: IDLE_TRANSFERS as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&mut lat, 50.0),
        p99_ms: percentile_ms(&mut lat, 99.0),
        lag: 0,
        unfinished: 0,
        deposit_p50_ms: percentile_ms(&mut deposits, 50.0),
    })
}

async fn load(
    client: &reqwest::Client,
    base: &str,
    bank: &bank::Bank,
    ends: &Ends,
    store: Store,
) -> Result<P1Run, BenchError> {
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for a in 0..ACCOUNTS {
        accounts.push(open(client, base, &format!("owner{a}")).await?);
    }
    let accounts = Arc::new(accounts);
    let started = Instant::now();
    let mut joins = Vec::new();
    for task in 0..CLIENTS {
        let (client, base, accounts) = (client.clone(), base.to_owned(), accounts.clone());
        joins.push(tokio::spawn(async move {
            let mine: Vec<usize> = (0..ACCOUNTS).filter(|a| a % CLIENTS == task).collect();
            let mut sent = Vec::new();
            let mut requests = 0usize;
            let mut seed = task as u64 * 7919 + 1;
            for _ in 1..COMMANDS_PER_ACCOUNT {
                for &a in &mine {
                    let id = &accounts[a];
                    post(
                        &client,
                        &format!("{base}/accounts/{id}/deposit"),
                        json!({"amount": 100}),
                    )
                    .await?;
                    requests += 1;
                    if requests.is_multiple_of(TRANSFER_EVERY - 1) {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        let other = (a + 1 + (seed >> 33) as usize % (ACCOUNTS - 1)) % ACCOUNTS;
                        let t = Instant::now();
                        let tid = transfer(&client, &base, id, &accounts[other]).await?;
                        sent.push((tid, t));
                        requests += 1;
                    }
                }
            }
            Ok::<_, BenchError>((sent, requests))
        }));
    }
    let (mut sent, mut requests) = (Vec::new(), 0);
    for j in joins {
        let (s, r) = j.await??;
        sent.extend(s);
        requests += r;
    }
    let elapsed = started.elapsed();
    let lag = bank
        .projections()
        .await
        .map_err(|e| BenchError::Check(e.to_string()))?
        .iter()
        .find(|s| s.name == bank::TRANSFER_PROCESS)
        .map_or(u64::MAX, |s| s.lag);
    let mut lat = Vec::with_capacity(sent.len());
    let mut unfinished = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for (id, t) in &sent {
        let left = deadline.saturating_duration_since(Instant::now());
        match ends.wait(*id, left).await {
            Some(end) => lat.push(end.saturating_duration_since(*t)),
            None => unfinished += 1,
        }
    }
    Ok(P1Run {
        store,
        loaded: true,
        transfers_per_sec: sent.len() as f64 / elapsed.as_secs_f64(),
        requests_per_sec: requests as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&mut lat, 50.0),
        p99_ms: percentile_ms(&mut lat, 99.0),
        lag,
        unfinished,
        deposit_p50_ms: f64::NAN,
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
