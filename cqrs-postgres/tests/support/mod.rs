//! Shared helpers of the PostgreSQL tests: a fresh database per test, dropped afterwards.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{BoxError, RecordedEvent, RunnerConfig};
use cqrs_postgres::sqlx::postgres::PgConnectOptions;
use cqrs_postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection, PgPool};
use cqrs_postgres::{PgConfig, PgEventStore, PgProjector};
use uuid::Uuid;

pub mod cluster;

/// DATABASE_URL, or the local server. Tests never skip: an unreachable server fails them.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
pub struct TestDb {
    pub name: String,
    pub options: PgConnectOptions,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        let url = database_url();
        let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
        let name = format!("cqrs_pg_test_{}", Uuid::new_v4().simple());
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let options = admin.clone().database(&name);
        TestDb {
            name,
            options,
            admin,
        }
    }

    /// The URL of this database.
    pub fn url(&self) -> String {
        let base = database_url();
        let (head, query) = base
            .split_once('?')
            .map_or((base.as_str(), ""), |(h, q)| (h, q));
        let server = head.rsplit_once('/').map_or(head, |(s, _)| s);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{server}/{}{query}", self.name)
    }

    /// A store in `schema` of this database (migrated).
    pub async fn store(&self, schema: &str) -> PgEventStore {
        PgEventStore::connect_with(
            self.options.clone(),
            PgConfig::with_schema(schema).max_connections(16),
        )
        .await
        .expect("connect store")
    }

    /// A plain connection to this database (no schema set).
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .expect("connect")
    }

    /// Terminates every other session of this database; returns how many.
    pub async fn terminate_all(&self) -> i64 {
        let mut conn = self.connect().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .expect("terminate");
        let _ = conn.close().await;
        n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // NOTE: Drop cannot await; a thread with a runtime of its own does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                }
            });
        })
        .join();
    }
}

/// Runner tuning for tests: short waits.
pub fn fast_config() -> RunnerConfig {
    RunnerConfig {
        batch_size: 500,
        poll_interval: Duration::from_millis(100),
        max_attempts: 3,
        backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        dead_letter_interval: Duration::from_secs(1),
        lease_interval: Duration::from_millis(100),
    }
}

/// A transactional projector recording every event id it handles in `seen` (no unique key, so
/// that a duplicate shows up as a second row).
#[derive(Debug, Clone)]
pub struct Recorder {
    pub name: String,
}

impl Recorder {
    pub async fn new(pool: &PgPool, name: &str) -> Arc<Self> {
        sqlx::query("CREATE TABLE IF NOT EXISTS seen (subscriber TEXT NOT NULL, event_id UUID NOT NULL, position BIGINT NOT NULL)")
            .execute(pool)
            .await
            .expect("create seen");
        Arc::new(Recorder { name: name.into() })
    }
}

#[cqrs_core::async_trait]
impl PgProjector for Recorder {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        self.handle_batch(tx, std::slice::from_ref(event)).await
    }
    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let positions: Vec<i64> = events.iter().map(|e| e.position() as i64).collect();
        sqlx::query("INSERT INTO seen (subscriber, event_id, position) SELECT $1, * FROM UNNEST($2::uuid[], $3::int8[])")
            .bind(&self.name)
            .bind(ids)
            .bind(positions)
            .execute(tx)
            .await?;
        Ok(())
    }
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        sqlx::query("DELETE FROM seen WHERE subscriber = $1")
            .bind(&self.name)
            .execute(tx)
            .await?;
        Ok(())
    }
}

/// (rows, distinct event ids) recorded by `subscriber`, and the number of events stored.
pub async fn seen_counts(pool: &PgPool, subscriber: &str) -> (i64, i64, i64) {
    retry(|| {
        sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM seen WHERE subscriber = $1), \
                    (SELECT COUNT(DISTINCT event_id) FROM seen WHERE subscriber = $1), \
                    (SELECT COUNT(*) FROM events)",
        )
        .bind(subscriber)
        .fetch_one(pool)
    })
    .await
}

/// Events whose id `subscriber` never recorded.
pub async fn missing(pool: &PgPool, subscriber: &str) -> i64 {
    retry(|| {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM events e \
             WHERE NOT EXISTS (SELECT 1 FROM seen s WHERE s.subscriber = $1 AND s.event_id = e.event_id)",
        )
        .bind(subscriber)
        .fetch_one(pool)
    })
    .await
}

/// Runs a query again when it fails (tests that terminate sessions leave dead pool connections,
/// each of which fails once).
async fn retry<T, F: std::future::Future<Output = Result<T, sqlx::Error>>>(
    mut query: impl FnMut() -> F,
) -> T {
    let mut last = None;
    for _ in 0..20 {
        match query().await {
            Ok(v) => return v,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("query keeps failing: {last:?}")
}

/// A small deterministic generator for delays (xorshift), seeded per task.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
