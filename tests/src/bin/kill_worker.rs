//! One projector process of the kill checker (`tests/tests/kill.rs`): runs two transactional
//! read models on PostgreSQL under leases until it is killed.
//!
//! `kill_worker <schema>`, with `DATABASE_URL`. Each read model keeps, per stream, the count and
//! the sum of the amounts it applied, the last version, and how often an event came other than
//! right after the one before (`disorder`): the checker compares them with a fold of the log.
//! `kc_plain` never refuses an event; `kc_sequenced` refuses the events marked `poison` while
//! `kc_flags.poison` is set, so they are parked and their streams held behind them;
//! `kc_segmented` is split into 4 segments, each under a lease of its own, so the three
//! processes share it.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{BoxError, RecordedEvent, Runner, RunnerConfig, Segment};
use cqrs_postgres::sqlx::{self, PgConnection};
use cqrs_postgres::{PgConfig, PgEventStore, PgProjector};

/// A read model folding each stream into one row of `table`.
#[derive(Debug)]
struct Fold {
    table: &'static str,
    /// The table's name, or its segment's.
    name: String,
    segment: Option<Segment>,
    refuses_poison: bool,
}

#[cqrs_core::async_trait]
impl PgProjector for Fold {
    fn name(&self) -> &str {
        &self.name
    }

    fn segment(&self) -> Option<Segment> {
        self.segment
    }

    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        let payload = event.payload_value()?;
        if self.refuses_poison && payload["poison"] == true {
            let refuse: bool = sqlx::query_scalar("SELECT poison FROM kc_flags")
                .fetch_one(&mut *tx)
                .await?;
            if refuse {
                return Err(format!("poison at {} v{}", event.stream, event.stream_version).into());
            }
        }
        let amount = payload["amount"].as_i64().ok_or("no amount")?;
        let sql = format!(
            "INSERT INTO {t} (stream, count, total, last_version, disorder) \
             VALUES ($1, 1, $2, $3, CASE WHEN $3 = 1 THEN 0 ELSE 1 END) \
             ON CONFLICT (stream) DO UPDATE SET count = {t}.count + 1, \
             total = {t}.total + $2, last_version = $3, \
             disorder = {t}.disorder + CASE WHEN {t}.last_version + 1 = $3 THEN 0 ELSE 1 END",
            t = self.table
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&event.stream.id)
            .bind(amount)
            .bind(i64::try_from(event.stream_version)?)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let schema = std::env::args()
        .nth(1)
        .ok_or("usage: kill_worker <schema>")?;
    let url = std::env::var("DATABASE_URL")?;
    let store = PgEventStore::connect(&url, PgConfig::with_schema(&schema)).await?;
    let leases = store.leases();
    let config = RunnerConfig {
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        max_attempts: 3,
        backoff: Duration::from_millis(20),
        dead_letter_interval: Duration::from_millis(200),
        lease_interval: Duration::from_millis(300),
        ..RunnerConfig::default()
    };
    let mut runner = Runner::new(Arc::new(store.clone()), Arc::new(store.dead_letters()))
        .with_config(config)
        .with_leases(Arc::new(leases.clone()));
    let mut folds = vec![
        Fold {
            table: "kc_plain",
            name: "kc_plain".into(),
            segment: None,
            refuses_poison: false,
        },
        Fold {
            table: "kc_sequenced",
            name: "kc_sequenced".into(),
            segment: None,
            refuses_poison: true,
        },
    ];
    for segment in Segment::all(4) {
        folds.push(Fold {
            table: "kc_segmented",
            name: segment.name("kc_segmented"),
            segment: Some(segment),
            refuses_poison: false,
        });
    }
    for fold in folds {
        runner = runner.with(store.transactional(fold).fenced_by(leases.clone()));
    }
    let _running = runner.start();
    // NOTE: killed, never stopped: the checker's point.
    std::future::pending::<()>().await;
    Ok(())
}
