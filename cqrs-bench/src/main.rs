//! `cqrs-bench`: the workloads of the performance bar, run against PostgreSQL.
//!
//! Run it in release: `cargo run --release -p cqrs-bench -- --help`.

fn main() {}
