//! The kill checker: three projector processes (`kill_worker`) share three read models (one of
//! them split into 4 segments) on one PostgreSQL database under leases while events are
//! appended; one process at a time is SIGKILLed and started again, and database backends of
//! the workers are terminated, for a bounded time (`KILL_CHECK_SECS`, default 30; longer as a soak). Some events are poison for
//! the sequenced read model and are parked, their streams held behind them; at the end the
//! poison is cured and the parked events retried. Then every read model row must equal a fold
//! of its stream's events from the log: nothing lost, nothing applied twice, nothing out of
//! order.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use cqrs_core::{
    CheckpointStore, DeadLetterStatus, DeadLetterStore, EventAppender, ExpectedVersion, NewEvent,
    StreamId,
};
use cqrs_postgres::{PgEventStore, sqlx};
use integration_tests::{PgSchema, database_url};

const WORKERS: usize = 3;
const STREAMS: u64 = 40;
const READ_MODELS: [&str; 3] = ["kc_plain", "kc_sequenced", "kc_segmented"];
/// The subscribers: the first two read models, and the four segments of the third.
const SUBSCRIBERS: [&str; 6] = [
    "kc_plain",
    "kc_sequenced",
    "kc_segmented#0of4",
    "kc_segmented#1of4",
    "kc_segmented#2of4",
    "kc_segmented#3of4",
];

/// A small deterministic generator (xorshift), seeded per run and printed on failure.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn spawn_worker(schema: &str) -> Child {
    let url = database_url();
    let sep = if url.contains('?') { '&' } else { '?' };
    Command::new(env!("CARGO_BIN_EXE_kill_worker"))
        .arg(schema)
        .env(
            "DATABASE_URL",
            format!("{url}{sep}application_name=kill_worker"),
        )
        .env("RUST_LOG", "off")
        .spawn()
        .expect("start a worker")
}

async fn create_tables(store: &PgEventStore) {
    for table in READ_MODELS {
        let sql = format!(
            "CREATE TABLE {table} (stream TEXT PRIMARY KEY, count BIGINT NOT NULL, \
             total BIGINT NOT NULL, last_version BIGINT NOT NULL, disorder BIGINT NOT NULL)"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(store.pool())
            .await
            .unwrap();
    }
    sqlx::raw_sql(
        "CREATE TABLE kc_flags (poison BOOLEAN NOT NULL); INSERT INTO kc_flags VALUES (true)",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

/// Terminates one live backend of the workers; how many it found.
async fn terminate_a_backend(store: &PgEventStore, pick: u64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM (SELECT pid FROM pg_stat_activity \
         WHERE application_name = 'kill_worker' ORDER BY pid OFFSET $1 LIMIT 1) AS one",
    )
    .bind(i64::try_from(pick % 8).unwrap())
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_models_equal_a_fold_of_the_log_across_kills_of_processes_and_backends() {
    let secs: u64 = std::env::var("KILL_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("kill checker: seed {seed}, {secs} s");
    let mut rng = Rng(seed);
    let schema = PgSchema::new();
    let store = schema.store().await;
    create_tables(&store).await;
    let mut workers: Vec<Child> = (0..WORKERS).map(|_| spawn_worker(&schema.name)).collect();

    // Appends, one event per call to a random stream, some of them poison.
    let writer = {
        let store = store.clone();
        let mut rng = Rng(seed.rotate_left(17) | 1);
        tokio::spawn(async move {
            let stop = Instant::now() + Duration::from_secs(secs);
            let mut appended = 0u64;
            while Instant::now() < stop {
                let stream = StreamId::new("kc", format!("s{}", rng.below(STREAMS)));
                let amount = 1 + rng.below(1000);
                let poison = rng.below(150) == 0;
                let event = NewEvent::new(
                    "Moved",
                    serde_json::json!({ "amount": amount, "poison": poison }),
                );
                store
                    .append(&stream, ExpectedVersion::Any, vec![event], None)
                    .await
                    .expect("append");
                appended += 1;
                if appended.is_multiple_of(20) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            appended
        })
    };

    // Faults: a worker SIGKILLed and started again, or a worker's backend terminated.
    let (mut kills, mut terminations) = (0, 0);
    let stop = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        if rng.below(2) == 0 {
            let i = rng.below(WORKERS as u64) as usize;
            workers[i].kill().expect("SIGKILL a worker");
            workers[i].wait().expect("reap it");
            workers[i] = spawn_worker(&schema.name);
            kills += 1;
        } else {
            terminations += terminate_a_backend(&store, rng.below(8)).await;
        }
    }
    let appended = writer.await.unwrap();
    println!(
        "kill checker: {appended} events, {kills} processes killed, {terminations} backends terminated"
    );
    assert!(
        kills > 0 && appended > 1000,
        "the checker ran: {kills} kills, {appended} events"
    );

    // Cure the poison, retry what was parked (held letters follow their blocker), wait for the
    // read models to reach the head with no letter left.
    sqlx::query("UPDATE kc_flags SET poison = false")
        .execute(store.pool())
        .await
        .unwrap();
    let dead = store.dead_letters();
    let waiting = dead.list(Some("kc_sequenced")).await.unwrap();
    let held = waiting
        .iter()
        .filter(|l| l.status == DeadLetterStatus::Held)
        .count();
    println!(
        "kill checker: {} letters at the cure, {held} of them held",
        waiting.len()
    );
    assert!(held > 0, "poison parked and streams held behind it");
    let head = cqrs_core::AllStreamReader::head_position(&store)
        .await
        .unwrap();
    let checkpoints = store.checkpoints();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let letters = dead.list(None).await.unwrap();
        for l in &letters {
            if l.status == DeadLetterStatus::Parked {
                dead.set_status(l.id, DeadLetterStatus::RetryRequested)
                    .await
                    .unwrap();
            }
        }
        let mut at_head = true;
        for name in SUBSCRIBERS {
            at_head &= checkpoints.load(name).await.unwrap().position >= head;
        }
        if letters.is_empty() && at_head {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not settled (seed {seed}): {} letters, checkpoints behind head {head}",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for w in &mut workers {
        w.kill().ok();
        w.wait().ok();
    }

    // The fold of the log, per stream: count, total, last version.
    let expected: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT stream_id, count(*), sum((payload->>'amount')::bigint)::bigint, max(stream_version) \
         FROM events WHERE stream_category = 'kc' GROUP BY stream_id ORDER BY stream_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(expected.iter().map(|r| r.1).sum::<i64>() as u64, appended);
    for table in READ_MODELS {
        let sql = format!(
            "SELECT stream, count, total, last_version, disorder FROM {table} ORDER BY stream"
        );
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(store.pool())
            .await
            .unwrap();
        let got: Vec<_> = rows.iter().map(|r| (r.0.clone(), r.1, r.2, r.3)).collect();
        assert_eq!(
            got, expected,
            "{table} equals the fold of the log (seed {seed})"
        );
        let disorder: i64 = rows.iter().map(|r| r.4).sum();
        assert_eq!(
            disorder, 0,
            "{table} applied every stream in order (seed {seed})"
        );
    }
    schema.drop(store).await;
}
