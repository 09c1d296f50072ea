//! `cqrs-bench`: the workloads of the performance bar, run against PostgreSQL, each beside the
//! raw PostgreSQL limit it is compared with, measured in the same run.
//!
//! ```text
//! cargo run --release -p cqrs-bench -- [--database URL] [--runs N] [--only w1,w2,w3,w4,l1,l3,e1,p1,o1] [--quick]
//!     [--tasks 1,8] [--grouping off|on|both]
//! ```
//!
//! Every workload works in a schema of its own (`bench_<pid>_...`), created fresh and dropped
//! after. See RESULTS.md for the workloads, the bar and the figures of this machine.

mod db;
mod domain;
mod e1;
mod o1;
mod p1;
mod report;
mod stats;
mod w1;
mod w2;
mod w3;

use clap::Parser;

use crate::db::Db;
use crate::report::Report;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BenchError {
    /// The framework failed.
    #[error(transparent)]
    Core(#[from] cqrs_core::Error),
    /// A command failed.
    #[error("command failed: {0}")]
    Command(String),
    /// The driver failed.
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Serialization failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A task or a child process failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A task panicked.
    #[error(transparent)]
    Join(#[from] tokio::task::JoinError),
    /// An HTTP request to the bank failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// A result was wrong.
    #[error("check failed: {0}")]
    Check(String),
}

impl<E: std::error::Error + Send + Sync + 'static> From<cqrs_core::CommandError<E>> for BenchError {
    fn from(e: cqrs_core::CommandError<E>) -> Self {
        BenchError::Command(format!("{e}: {:?}", std::error::Error::source(&e)))
    }
}

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Benchmarks of the cqrs framework on PostgreSQL, with raw limits")]
struct Args {
    /// The PostgreSQL database to work in (schemas `bench_<pid>_*` are created and dropped).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    database: String,
    /// Runs of each workload.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Only these workloads (w1, w2, w3, w4, l1, l3, e1, p1, o1), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// W1 (and its L1) with these client counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
    tasks: Vec<usize>,
    /// W1 with group append off, on, or both (each beside its own L1s).
    #[arg(long, value_enum, default_value_t = Grouping::Both)]
    grouping: Grouping,
    /// Skip the million-event replay.
    #[arg(long)]
    quick: bool,
    /// Keep the schemas at the end (to inspect them, or to profile a replay with
    /// `--replay-child SCHEMA`); drop them by hand with `DROP SCHEMA ... CASCADE`.
    #[arg(long)]
    keep: bool,
    /// Internal: rebuild the read model of this schema and print the result (W3's child).
    #[arg(long, hide = true)]
    replay_child: Option<String>,
    /// Internal: the W3 child's read model in this many segments, rebuilt side by side.
    #[arg(long, hide = true, default_value_t = 1)]
    segments: u32,
}

/// Which W1 runs to make: appends grouped, ungrouped, or both in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Grouping {
    Off,
    On,
    Both,
}

impl Grouping {
    fn modes(self) -> &'static [bool] {
        match self {
            Grouping::Off => &[false],
            Grouping::On => &[true],
            Grouping::Both => &[false, true],
        }
    }
}

impl Args {
    fn wants(&self, w: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|x| x.eq_ignore_ascii_case(w)))
    }
}

#[tokio::main]
async fn main() -> Result<(), BenchError> {
    let args = Args::parse();
    let db = Db::new(&args.database);
    if let Some(schema) = &args.replay_child {
        return w3::replay_child(&db, schema, args.segments).await;
    }
    let result = run_all(&db, &args).await;
    if args.keep {
        eprintln!("schemas kept: {}_*", db.prefix());
    } else {
        db.drop_all().await?;
    }
    let report = result?;
    println!("{report}");
    Ok(())
}

async fn run_all(db: &Db, args: &Args) -> Result<Report, BenchError> {
    let mut r = Report::new(db, args.runs).await?;
    let runs = args.runs.max(1);
    let (w1, w4, l1) = (args.wants("w1"), args.wants("w4"), args.wants("l1"));
    for run in 0..runs {
        for tasks in args.tasks.iter().copied() {
            // NOTE: the disk's fsync time drifts by an order of magnitude over minutes on a
            // shared machine, so each W1 is sandwiched between two L1s and compared with their
            // mean: L1, W1 without projector, L1, W1 with the read model, L1 (and again with
            // appends grouped, from that last L1 on).
            let limit = || async {
                let l = w1::raw_inserts(db, tasks).await?;
                eprintln!("run {run} L1 C={tasks}: {l:?}");
                Ok::<_, BenchError>(l)
            };
            if !(l1 || w1 || (w4 && tasks == 8)) {
                continue;
            }
            let before = limit().await?;
            let mut last = before.per_sec;
            r.l1(tasks, before);
            for &group in args.grouping.modes() {
                let g = if group { "grouped" } else { "ungrouped" };
                if w1 {
                    let w = w1::run(db, tasks, false, group).await?;
                    eprintln!("run {run} W1 C={tasks} {g} no read model: {w:?}");
                    let after = limit().await?;
                    r.w1(tasks, false, group, w, (last + after.per_sec) / 2.0);
                    last = after.per_sec;
                    r.l1(tasks, after);
                }
                if w1 || (w4 && tasks == 8) {
                    let w = w1::run(db, tasks, true, group).await?;
                    eprintln!("run {run} W1 C={tasks} {g} read model: {w:?}");
                    let after = limit().await?;
                    r.w1(tasks, true, group, w, (last + after.per_sec) / 2.0);
                    last = after.per_sec;
                    r.l1(tasks, after);
                }
            }
        }
    }
    if args.wants("o1") {
        for run in 0..runs {
            let (off, on) = o1::run(db, run == 0).await?;
            r.o1(off, on);
        }
    }
    if args.wants("e1") {
        for run in 0..runs {
            let e = e1::run(db, run).await?;
            eprintln!("run {run} E1: {e:?}");
            r.e1(e);
        }
    }
    if args.wants("p1") {
        for run in 0..runs {
            for store in [p1::Store::Sqlite, p1::Store::Postgres] {
                for loaded in [false, true] {
                    let p = p1::run(db, store, loaded, run).await?;
                    eprintln!("run {run} P1: {p:?}");
                    r.p1(p);
                }
            }
        }
    }
    if args.wants("w2") {
        for run in 0..runs {
            let w = w2::run(db, run).await?;
            eprintln!("run {run} W2: {w:?}");
            r.w2(w);
        }
    }
    let (w3, l3) = (args.wants("w3"), args.wants("l3"));
    if w3 || l3 {
        let sizes: &[usize] = if args.quick || !w3 {
            &[1_000]
        } else {
            &[1_000, 10_000]
        };
        for &accounts in sizes {
            let schema = db.schema(&format!("w3_{accounts}"));
            let t = std::time::Instant::now();
            w3::populate(db, &schema, accounts).await?;
            eprintln!(
                "W3: {} events appended in {:.1} s",
                accounts * w3::EVENTS_PER_ACCOUNT,
                t.elapsed().as_secs_f64()
            );
            for run in 0..runs {
                if l3 && accounts == 1_000 {
                    let rate = w3::raw_read(db, &schema).await?;
                    eprintln!("run {run} L3: {rate:.0} rows/s");
                    r.l3(rate);
                }
                if w3 {
                    let rep = w3::replay_in_child(db, &schema, 1).await?;
                    eprintln!("run {run} W3 {accounts} accounts: {rep:?}");
                    r.w3(rep);
                }
                if w3 && accounts == 1_000 {
                    let rep = w3::replay_in_child(db, &schema, 2).await?;
                    eprintln!("run {run} W3 {accounts} accounts, 2 segments: {rep:?}");
                    r.w3_segments(rep);
                }
            }
            if !args.keep {
                db.drop_schema(&schema).await?;
            }
        }
    }
    Ok(r)
}
