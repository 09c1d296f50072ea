//! The figures of all runs, printed as a Markdown table beside the bar.

use std::collections::BTreeMap;
use std::fmt;

use crate::BenchError;
use crate::db::Db;
use crate::e1::{CLIENTS, E1Run};
use crate::p1::{P1Run, Store};
use crate::stats::{Runs, num};
use crate::w1::{L1Run, W1Run};
use crate::w2::W2Run;
use crate::w3::ReplayRun;

#[derive(Debug, Default)]
struct Throughput {
    rate: Runs,
    p50: Runs,
    p99: Runs,
    ratio: Runs,
    lag: Runs,
    catch_up: Runs,
}

/// W2's measures, one entry per run.
#[derive(Debug, Default)]
struct W2Runs {
    no_snapshot: Runs,
    snapshot: Runs,
    new_stream: Runs,
    snapshot_ratio: Runs,
    raw_read: Runs,
    lean_read: Runs,
    /// W2 without a snapshot over L2, each run's pair.
    load_ratio: Runs,
}

/// Everything measured, by workload.
#[derive(Debug, Default)]
pub(crate) struct Report {
    env: String,
    runs: usize,
    l1: BTreeMap<usize, Throughput>,
    /// By tasks, read model, grouped appends.
    w1: BTreeMap<(usize, bool, bool), Throughput>,
    /// By grouped appends.
    w4: BTreeMap<bool, (Runs, Runs)>,
    w2: W2Runs,
    l3: Runs,
    last_l3: Option<f64>,
    w3: BTreeMap<u64, (Runs, Runs, Runs, Runs)>,
    /// W3 of 100,000 events in 2 segments side by side: events/s, and over W3 in one.
    w3_segments: (Runs, Runs),
    /// E1: requests/s, p50, p99, read-your-write p50, p99.
    e1: [Runs; 5],
    /// O1: W1 C=8 events/s with telemetry off, on, and on over off (each pair); p99 off, on.
    o1: [Runs; 5],
    /// P1 by store and load: transfers/s, requests/s, p50, p99, lag at end, unfinished, one
    /// deposit's p50, completion p50 over it.
    p1: BTreeMap<(Store, bool), [Runs; 8]>,
}

impl Report {
    pub(crate) async fn new(db: &Db, runs: usize) -> Result<Self, BenchError> {
        let env = format!(
            "PostgreSQL {} (fsync={}, synchronous_commit={}, shared_buffers={}), {} CPU cores",
            db.show("server_version").await?,
            db.show("fsync").await?,
            db.show("synchronous_commit").await?,
            db.show("shared_buffers").await?,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        Ok(Report {
            env,
            runs,
            ..Default::default()
        })
    }

    pub(crate) fn l1(&mut self, tasks: usize, l: L1Run) {
        let t = self.l1.entry(tasks).or_default();
        t.rate.push(l.per_sec);
        t.p50.push(l.p50_ms);
        t.p99.push(l.p99_ms);
    }

    /// A run of W1, compared with `limit`, the L1 rate measured around it.
    pub(crate) fn w1(&mut self, tasks: usize, read_model: bool, group: bool, w: W1Run, limit: f64) {
        let t = self.w1.entry((tasks, read_model, group)).or_default();
        t.rate.push(w.per_sec);
        t.p50.push(w.p50_ms);
        t.p99.push(w.p99_ms);
        t.ratio.push(w.per_sec / limit);
        if let (Some(lag), Some(c)) = (w.lag, w.catch_up_ms) {
            t.lag.push(lag as f64);
            t.catch_up.push(c);
        }
        if let (8, Some(p50), Some(p99)) = (tasks, w.visible_p50_ms, w.visible_p99_ms) {
            let w4 = self.w4.entry(group).or_default();
            w4.0.push(p50);
            w4.1.push(p99);
        }
    }

    pub(crate) fn o1(&mut self, off: Vec<W1Run>, on: Vec<W1Run>) {
        let [off_rate, on_rate, ratio, off_p99, on_p99] = &mut self.o1;
        for (off, on) in off.iter().zip(&on) {
            off_rate.push(off.per_sec);
            on_rate.push(on.per_sec);
            ratio.push(on.per_sec / off.per_sec);
            off_p99.push(off.p99_ms);
            on_p99.push(on.p99_ms);
        }
    }

    pub(crate) fn e1(&mut self, e: E1Run) {
        let [rate, p50, p99, r50, r99] = &mut self.e1;
        rate.push(e.per_sec);
        p50.push(e.p50_ms);
        p99.push(e.p99_ms);
        r50.push(e.read_p50_ms);
        r99.push(e.read_p99_ms);
    }

    pub(crate) fn p1(&mut self, p: P1Run) {
        let [rate, reqs, p50, p99, lag, left, dep, ratio] =
            self.p1.entry((p.store, p.loaded)).or_default();
        if !p.loaded {
            dep.push(p.deposit_p50_ms);
            ratio.push(p.p50_ms / p.deposit_p50_ms);
        }
        rate.push(p.transfers_per_sec);
        reqs.push(p.requests_per_sec);
        p50.push(p.p50_ms);
        p99.push(p.p99_ms);
        lag.push(p.lag as f64);
        left.push(p.unfinished as f64);
    }

    pub(crate) fn w2(&mut self, w: W2Run) {
        let r = &mut self.w2;
        r.no_snapshot.push(w.no_snapshot_ms);
        r.snapshot.push(w.snapshot_ms);
        r.new_stream.push(w.new_stream_ms);
        r.snapshot_ratio.push(w.snapshot_ms / w.new_stream_ms);
        r.raw_read.push(w.raw_read_ms);
        r.lean_read.push(w.lean_read_ms);
        r.load_ratio.push(w.no_snapshot_ms / w.raw_read_ms);
    }

    pub(crate) fn l3(&mut self, rate: f64) {
        self.l3.push(rate);
        self.last_l3 = Some(rate);
    }

    pub(crate) fn w3(&mut self, r: ReplayRun) {
        let e = self.w3.entry(r.events).or_default();
        e.0.push(r.per_sec);
        e.1.push(r.hwm_mib);
        e.2.push(r.base_mib);
        if let (100_000, Some(l3)) = (r.events, self.last_l3) {
            e.3.push(r.per_sec / l3);
        }
    }

    /// W3 in 2 segments, right after the run of W3 in one on the same rows.
    pub(crate) fn w3_segments(&mut self, r: ReplayRun) {
        self.w3_segments.0.push(r.per_sec);
        if let Some(one) = self.w3.get(&r.events).and_then(|e| e.0.0.last()) {
            self.w3_segments.1.push(r.per_sec / one);
        }
    }
}

fn row(f: &mut fmt::Formatter<'_>, what: &str, runs: &Runs, bar: &str) -> fmt::Result {
    if runs.0.is_empty() {
        return Ok(());
    }
    writeln!(f, "| {what} | {runs} | {bar} |")
}

fn text_row(f: &mut fmt::Formatter<'_>, what: &str, cell: String) -> fmt::Result {
    if cell.is_empty() {
        return Ok(());
    }
    writeln!(f, "| {what} | {cell} | |")
}

fn ok(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}; median (min–max) of {} runs.\n", self.env, self.runs)?;
        writeln!(f, "| Measure | Median (min–max) | Bar |")?;
        writeln!(f, "|---|---|---|")?;
        for (tasks, t) in &self.l1 {
            row(f, &format!("L1 C={tasks}: raw inserts/s"), &t.rate, "")?;
            text_row(
                f,
                &format!("L1 C={tasks}: p50 / p99 ms"),
                pair(&t.p50, &t.p99),
            )?;
        }
        for ((tasks, rm, group), t) in &self.w1 {
            let name = format!(
                "W1 C={tasks} {}{}",
                if *rm {
                    "live read model"
                } else {
                    "no projector"
                },
                if *group { ", grouped" } else { "" }
            );
            let need = match (tasks, rm, group) {
                (1, false, false) => Some(0.6),
                (8, false, false) => Some(0.7),
                (8, true, false) => Some(0.5),
                (8, false, true) => Some(1.5),
                (8, true, true) => Some(1.0),
                _ => None,
            };
            row(f, &format!("{name}: commands/s"), &t.rate, "")?;
            text_row(f, &format!("{name}: p50 / p99 ms"), pair(&t.p50, &t.p99))?;
            let bar = need.map_or("(no bar)".to_owned(), |n| {
                format!(">= {n} x L1: {}", ok(t.ratio.median() >= n))
            });
            row(f, &format!("{name}: W1/L1"), &t.ratio, &bar)?;
            row(f, &format!("{name}: lag at end (events)"), &t.lag, "")?;
            row(f, &format!("{name}: catch-up ms"), &t.catch_up, "")?;
        }
        for rm in [false, true] {
            let (Some(off), Some(on)) = (self.w1.get(&(1, rm, false)), self.w1.get(&(1, rm, true)))
            else {
                continue;
            };
            let ratio = on.ratio.median() / off.ratio.median();
            let name = if rm {
                "live read model"
            } else {
                "no projector"
            };
            writeln!(
                f,
                "| W1 C=1 {name}: grouped / ungrouped (W1/L1 medians) | {ratio:.3} | >= 0.95: {} |",
                ok(ratio >= 0.95)
            )?;
        }
        for rm in [false, true] {
            let (Some(off), Some(on)) = (self.w1.get(&(8, rm, false)), self.w1.get(&(8, rm, true)))
            else {
                continue;
            };
            let (a, b) = (off.p99.median(), on.p99.median());
            let name = if rm {
                "live read model"
            } else {
                "no projector"
            };
            writeln!(
                f,
                "| W1 C=8 {name}: p99 ms ungrouped / grouped | {a:.2} / {b:.2} | grouped no worse: {} |",
                ok(b <= a)
            )?;
        }
        for (group, (p50, p99)) in &self.w4 {
            let g = if *group { ", grouped" } else { "" };
            let w4_bar = format!("p99 < 50 ms: {}", ok(p99.median() < 50.0));
            row(f, &format!("W4 C=8{g} commit to visible: p50 ms"), p50, "")?;
            row(
                f,
                &format!("W4 C=8{g} commit to visible: p99 ms"),
                p99,
                &w4_bar,
            )?;
        }
        let [off_rate, on_rate, ratio, off_p99, on_p99] = &self.o1;
        if !ratio.0.is_empty() {
            let o1 = "O1 W1 C=8 no projector";
            row(f, &format!("{o1}, telemetry off: events/s"), off_rate, "")?;
            row(
                f,
                &format!("{o1}, spans + metrics on: events/s"),
                on_rate,
                "",
            )?;
            row(f, &format!("{o1}: on / off"), ratio, ">= 0.95")?;
            text_row(f, &format!("{o1}: p99 ms off / on"), pair(off_p99, on_p99))?;
        }
        let [rate, p50, p99, r50, r99] = &self.e1;
        let e1 = format!("E1 bank over HTTP, {CLIENTS} clients");
        row(f, &format!("{e1}: requests/s"), rate, "(no bar)")?;
        text_row(f, &format!("{e1}: p50 / p99 ms"), pair(p50, p99))?;
        text_row(
            f,
            &format!("{e1}: read own write, p50 / p99 ms"),
            pair(r50, r99),
        )?;
        for ((store, loaded), [rate, reqs, p50, p99, lag, left, dep, ratio]) in &self.p1 {
            let name = format!(
                "P1 {store:?} {}",
                if *loaded {
                    "under W1 + 1 transfer in 10, 8 clients"
                } else {
                    "idle, one transfer at a time"
                }
            );
            row(f, &format!("{name}: transfers/s"), rate, "")?;
            if *loaded {
                row(f, &format!("{name}: requests/s"), reqs, "")?;
            }
            row(
                f,
                &format!("{name}: completion p50 ms"),
                p50,
                &if *loaded {
                    String::new()
                } else {
                    format!("< 5 ms: {}", ok(p50.median() < 5.0))
                },
            )?;
            row(
                f,
                &format!("{name}: one deposit p50 ms (raw: one commit)"),
                dep,
                "",
            )?;
            row(
                f,
                &format!("{name}: completion p50 / one deposit p50"),
                ratio,
                "",
            )?;
            let pg = *loaded && *store == Store::Postgres;
            let bar = |b: String| if pg { b } else { String::new() };
            row(
                f,
                &format!("{name}: completion p99 ms"),
                p99,
                &bar(format!("< 100 ms: {}", ok(p99.median() < 100.0))),
            )?;
            if *loaded {
                row(
                    f,
                    &format!("{name}: process manager lag at end (events)"),
                    lag,
                    &bar(format!("< 1,000: {}", ok(lag.median() < 1000.0))),
                )?;
                row(
                    f,
                    &format!("{name}: transfers unfinished 30 s after"),
                    left,
                    "",
                )?;
            }
        }
        let w2 = &self.w2;
        row(f, "W2 10,000 events, no snapshot: ms", &w2.no_snapshot, "")?;
        row(
            f,
            "L2 plain read of those 10,000 rows: ms",
            &w2.raw_read,
            "",
        )?;
        row(
            f,
            "L2 the same, only version/type/payload: ms",
            &w2.lean_read,
            "",
        )?;
        let load = format!("<= 1.5: {}", ok(w2.load_ratio.median() <= 1.5));
        row(f, "W2 no snapshot / L2", &w2.load_ratio, &load)?;
        row(f, "W2 10,000 events, snapshot: ms", &w2.snapshot, "")?;
        row(f, "W2 new stream: ms", &w2.new_stream, "")?;
        let snap = format!("<= 1.5: {}", ok(w2.snapshot_ratio.median() <= 1.5));
        row(f, "W2 snapshot / new stream", &w2.snapshot_ratio, &snap)?;
        row(f, "L3 sequential read: rows/s", &self.l3, "")?;
        let base = self.w3.get(&100_000).map(|w| w.1.median());
        for (events, (rate, hwm, start, ratio)) in &self.w3 {
            let name = format!("W3 replay {} events", num(*events as f64));
            let bar = format!(">= 200,000: {}", ok(rate.median() >= 200_000.0));
            row(f, &format!("{name}: events/s"), rate, &bar)?;
            let flat = match base {
                Some(b) if *events > 100_000 => format!(
                    "flat: {} ({:+.1} MiB vs 100,000)",
                    ok(hwm.median() <= b * 1.2 + 4.0),
                    hwm.median() - b
                ),
                _ => String::new(),
            };
            row(f, &format!("{name}: peak RSS MiB"), hwm, &flat)?;
            row(f, &format!("{name}: RSS before replay MiB"), start, "")?;
            row(f, &format!("{name}: W3/L3"), ratio, "")?;
        }
        if !self.w3_segments.0.0.is_empty() {
            let (rate, ratio) = &self.w3_segments;
            row(
                f,
                "W3 replay 100,000 events, 2 segments: events/s",
                rate,
                "",
            )?;
            row(f, "W3 2 segments / W3 in one", ratio, "")?;
        }
        Ok(())
    }
}

/// Two latency percentiles in one cell: both medians, and the spread of the second.
fn pair(a: &Runs, b: &Runs) -> String {
    if a.0.is_empty() {
        return String::new();
    }
    format!(
        "{} / {} (p99 {}–{})",
        num(a.median()),
        num(b.median()),
        num(b.min()),
        num(b.max())
    )
}
