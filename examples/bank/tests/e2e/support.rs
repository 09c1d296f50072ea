//! Shared by the end-to-end tests: the real `bank` binary on a free port, a fresh database
//! per test, and a small JSON client.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

/// The `bank serve` process.
pub(crate) struct Server {
    child: Child,
    pub(crate) base: String,
}

impl Server {
    /// Starts `bank serve` on `database`, on a port the OS picks, and waits until it listens.
    pub(crate) fn start(database: &str) -> Server {
        Self::start_with(database, &[])
    }

    /// Like [`start`](Self::start), with extra arguments.
    pub(crate) fn start_with(database: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["serve", "--listen", "127.0.0.1:0", "--database", database])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bank serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listen line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("bank serve did not start: {line:?}"))
            .to_owned();
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// A client of this server.
    pub(crate) fn client(&self) -> Client {
        Client::new(&self.base)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON client: every call returns the status and the parsed body.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub(crate) fn base_url(&self) -> String {
        self.base.clone()
    }

    pub(crate) fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        Client {
            http,
            base: base.to_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        let status = resp.status();
        (status, resp.json().await.expect("a JSON body"))
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string(), None).await
    }

    pub(crate) async fn post_key(&self, path: &str, body: Value, key: &str) -> (StatusCode, Value) {
        self.post_raw(path, body.to_string(), Some(key)).await
    }

    /// Like [`post`](Self::post), but a failed connection is an `Err` (the server may be gone).
    pub(crate) async fn try_post(
        &self,
        path: &str,
        body: Value,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    /// Like [`post_key`](Self::post_key), but a failed connection is an `Err`.
    pub(crate) async fn try_post_key(
        &self,
        path: &str,
        body: Value,
        key: &str,
    ) -> Result<(StatusCode, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        Ok((status, resp.json().await?))
    }

    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: String,
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.expect("POST");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
        (status, value)
    }

    /// Opens an account; its id.
    pub(crate) async fn open(&self, owner: &str) -> String {
        let (s, b) = self.post("/accounts", json!({ "owner": owner })).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        b["id"].as_str().expect("id").to_owned()
    }

    /// Deposits; the position.
    pub(crate) async fn deposit(&self, id: &str, amount: u64) -> u64 {
        let (s, b) = self
            .post(
                &format!("/accounts/{id}/deposit"),
                json!({ "amount": amount }),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["position"].as_u64().expect("position")
    }

    /// Polls a transfer until it ends; its row.
    pub(crate) async fn finished_transfer(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (s, b) = self.get(&format!("/transfers/{id}")).await;
            if s == StatusCode::OK && (b["status"] == "completed" || b["status"] == "failed") {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "transfer {id} did not end: {s} {b}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every projector has caught up with the head and stays there.
    pub(crate) async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 3 {
            let (_, b) = self.get("/projections").await;
            let caught_up = b.as_array().expect("array").iter().all(|p| p["lag"] == 0);
            quiet = if caught_up { quiet + 1 } else { 0 };
            assert!(
                Instant::now() < deadline,
                "projections did not catch up: {b}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A fresh SQLite file in a temporary directory (kept as long as the returned guard lives).
pub(crate) fn sqlite_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("bank.db").to_string_lossy().into_owned();
    (dir, url)
}

/// The PostgreSQL server the tests use.
pub(crate) fn pg_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh PostgreSQL database with a random name, or `None` (outside CI) when PostgreSQL
/// cannot be reached. Under `CI=true` an unreachable server fails the test.
pub(crate) async fn pg_db() -> Option<PgDb> {
    let admin = pg_url();
    let mut conn = match sqlx::PgConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PostgreSQL unreachable at {admin}: {e}")
        }
        Err(e) => {
            eprintln!("skipping: PostgreSQL unreachable at {admin}: {e}");
            return None;
        }
    };
    let name = format!("bank_e2e_{}", Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (prefix, _) = admin.rsplit_once('/').expect("a database URL with a path");
    let base = prefix.to_owned();
    Some(PgDb {
        admin,
        url: format!("{base}/{name}"),
        name,
    })
}

/// A database created for one test; [`drop_db`](PgDb::drop_db) removes it.
pub(crate) struct PgDb {
    admin: String,
    pub(crate) url: String,
    name: String,
}

impl PgDb {
    pub(crate) async fn drop_db(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&mut conn)
            .await;
        }
    }
}

/// A small deterministic generator for the random workloads (seeded, so failures reproduce).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
