//! W1 (command throughput, with or without a live read model) and W4 (subscription latency),
//! and L1 (the raw insert limit they are compared with).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::{
    BoxError, CommandHandler, Cursor, RecordedEvent, Result as CoreResult, Runner, RunnerConfig,
    Subscriber, async_trait,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::BenchError;
use crate::db::Db;
use crate::domain::{Account, AccountCommand, AccountEvent, account_id};
use crate::stats::percentile_ms;

pub(crate) const ACCOUNTS: usize = 100;
pub(crate) const COMMANDS_PER_ACCOUNT: usize = 100;

/// What one run of W1 measured.
#[derive(Debug)]
pub(crate) struct W1Run {
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// With a read model: its lag (events) when the last command returned.
    pub(crate) lag: Option<u64>,
    /// With a read model: how long it then took to catch up.
    pub(crate) catch_up_ms: Option<f64>,
    /// With a read model (W4): commit to visible in the read model.
    pub(crate) visible_p50_ms: Option<f64>,
    pub(crate) visible_p99_ms: Option<f64>,
}

type Instants = Arc<Mutex<HashMap<u64, Instant>>>;

/// Wraps a subscriber to note when each event's batch was committed.
struct Timed<S> {
    inner: S,
    visible: Instants,
}

#[async_trait]
impl<S: Subscriber> Subscriber for Timed<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn sequenced(&self) -> bool {
        self.inner.sequenced()
    }
    fn segment(&self) -> Option<cqrs_core::Segment> {
        self.inner.segment()
    }
    fn sequence_key(&self, event: &RecordedEvent) -> cqrs_core::StreamId {
        self.inner.sequence_key(event)
    }
    async fn setup(&self) -> Result<(), BoxError> {
        self.inner.setup().await
    }
    async fn checkpoint(&self) -> CoreResult<Cursor> {
        self.inner.checkpoint().await
    }
    async fn process(&self, events: &[RecordedEvent], to: Cursor) -> Result<(), BoxError> {
        self.inner.process(events, to).await?;
        let now = Instant::now();
        let mut seen = self.visible.lock().expect("lock");
        for e in events {
            seen.entry(e.position()).or_insert(now);
        }
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.inner.reset().await
    }
}

/// The accounts task `task` of `tasks` owns.
fn owned(task: usize, tasks: usize) -> Vec<usize> {
    (0..ACCOUNTS).filter(|a| a % tasks == task).collect()
}

/// One run of W1 with `tasks` concurrent tasks, with the live read model or without, appends
/// grouped or not.
pub(crate) async fn run(
    db: &Db,
    tasks: usize,
    read_model: bool,
    group: bool,
) -> Result<W1Run, BenchError> {
    let schema = format!("w1_c{tasks}_{}_{}", u8::from(read_model), u8::from(group));
    let store = db.store_grouped(&db.schema(&schema), group).await?;
    let visible: Instants = Arc::default();
    let runner = read_model.then(|| {
        let sub = Timed {
            inner: store.transactional(crate::domain::AccountsProjector::whole()),
            visible: visible.clone(),
        };
        Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
            .with_config(RunnerConfig {
                batch_size: 1000,
                ..RunnerConfig::default()
            })
            .with(sub)
            .start()
    });
    let handler =
        Arc::new(CommandHandler::<Account>::new(Arc::new(store.clone())).with_cache(ACCOUNTS * 2));
    let committed: Instants = Arc::default();
    let started = Instant::now();
    let mut joins = Vec::new();
    for task in 0..tasks {
        let (handler, committed) = (handler.clone(), committed.clone());
        joins.push(tokio::spawn(async move {
            let mine = owned(task, tasks);
            let mut lat = Vec::with_capacity(mine.len() * COMMANDS_PER_ACCOUNT);
            let mut last = 0;
            for round in 0..COMMANDS_PER_ACCOUNT {
                for &a in &mine {
                    let cmd = if round == 0 {
                        AccountCommand::Open(a)
                    } else {
                        AccountCommand::Deposit(a, round)
                    };
                    let t0 = Instant::now();
                    let out = handler.execute(&account_id(a), &cmd).await?;
                    let t1 = Instant::now();
                    lat.push(t1 - t0);
                    committed.lock().expect("lock").insert(out.position, t1);
                    last = last.max(out.position);
                }
            }
            Ok::<_, BenchError>((lat, last))
        }));
    }
    let mut lat = Vec::new();
    let mut head = 0;
    for j in joins {
        let (l, last) = j.await??;
        lat.extend(l);
        head = head.max(last);
    }
    let elapsed = started.elapsed();
    let mut out = W1Run {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&mut lat, 50.0),
        p99_ms: percentile_ms(&mut lat, 99.0),
        lag: None,
        catch_up_ms: None,
        visible_p50_ms: None,
        visible_p99_ms: None,
    };
    if let Some(runner) = runner {
        let status = runner.status().await?;
        out.lag = status.first().map(|s| s.lag);
        let t = Instant::now();
        runner
            .wait_for("accounts", head, Duration::from_secs(120))
            .await?;
        out.catch_up_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        runner.shutdown().await;
        check_read_model(store.pool()).await?;
        let committed = committed.lock().expect("lock");
        let visible = visible.lock().expect("lock");
        let mut delays: Vec<Duration> = committed
            .iter()
            .map(|(pos, at)| {
                visible
                    .get(pos)
                    .map_or(Duration::MAX, |v| v.saturating_duration_since(*at))
            })
            .collect();
        out.visible_p50_ms = Some(percentile_ms(&mut delays, 50.0));
        out.visible_p99_ms = Some(percentile_ms(&mut delays, 99.0));
    }
    db.finish(store).await?;
    Ok(out)
}

/// The read model must hold every account with all its deposits.
async fn check_read_model(pool: &PgPool) -> Result<(), BenchError> {
    let (rows, balance, events): (i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), SUM(balance)::int8, SUM(events)::int8 FROM accounts")
            .fetch_one(pool)
            .await?;
    let deposits = (ACCOUNTS * (COMMANDS_PER_ACCOUNT - 1)) as i64;
    let want = (
        ACCOUNTS as i64,
        Some(deposits * 100),
        Some(deposits + ACCOUNTS as i64),
    );
    if (rows, balance, events) != want {
        return Err(BenchError::Check(format!(
            "read model has {rows} accounts, balance {balance:?}, events {events:?}; expected {want:?}"
        )));
    }
    Ok(())
}

/// What one run of L1 measured.
#[derive(Debug)]
pub(crate) struct L1Run {
    pub(crate) per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

const INSERT: &str = "INSERT INTO events (stream_category, stream_id, stream_version, event_id, \
     event_type, schema_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// L1: the same rows as W1, one plain INSERT per transaction, by `tasks` tasks.
pub(crate) async fn raw_inserts(db: &Db, tasks: usize) -> Result<L1Run, BenchError> {
    let schema = db.schema(&format!("l1_c{tasks}"));
    let store = db.store(&schema).await?;
    let pool = db.plain_pool(&schema, tasks as u32).await?;
    let started = Instant::now();
    let mut joins = Vec::new();
    for task in 0..tasks {
        let pool = pool.clone();
        joins.push(tokio::spawn(async move {
            let mine = owned(task, tasks);
            let mut lat = Vec::with_capacity(mine.len() * COMMANDS_PER_ACCOUNT);
            // Each task keeps one connection: the plainest loop there is.
            let mut conn = pool.acquire().await?;
            for round in 0..COMMANDS_PER_ACCOUNT {
                for &a in &mine {
                    let event = if round == 0 {
                        AccountEvent::opened(a)
                    } else {
                        AccountEvent::deposit(a, round)
                    };
                    let new = cqrs_core::NewEvent::from_domain(&event, Default::default())?;
                    let t0 = Instant::now();
                    sqlx::query(INSERT)
                        .bind("account")
                        .bind(account_id(a))
                        .bind(round as i64 + 1)
                        .bind(Uuid::new_v4())
                        .bind(&new.event_type)
                        .bind(1_i32)
                        .bind(&new.payload)
                        .bind(serde_json::json!({}))
                        .execute(&mut *conn)
                        .await?;
                    lat.push(t0.elapsed());
                }
            }
            Ok::<_, BenchError>(lat)
        }));
    }
    let mut lat = Vec::new();
    for j in joins {
        lat.extend(j.await??);
    }
    let elapsed = started.elapsed();
    pool.close().await;
    db.finish(store).await?;
    Ok(L1Run {
        per_sec: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&mut lat, 50.0),
        p99_ms: percentile_ms(&mut lat, 99.0),
    })
}
