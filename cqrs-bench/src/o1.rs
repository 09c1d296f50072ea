//! O1: what seeing it run costs. W1 at 8 clients without a projector, with the framework's
//! spans and metrics off, then on (spans at info level into a formatting subscriber, a Prometheus
//! recorder installed), alternately in one run.
//!
//! NOTE: a tracing subscriber and a metrics recorder are installed once per process; both are
//! installed at the start of O1 and switched by [`ON`], so that off and on alternate.

use std::sync::atomic::{AtomicBool, Ordering};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter};

use crate::BenchError;
use crate::db::Db;
use crate::w1::{self, W1Run};

/// Whether the spans and metrics are on.
static ON: AtomicBool = AtomicBool::new(false);

/// A Prometheus recorder that records only while [`ON`].
struct Switched(PrometheusRecorder);

impl Recorder for Switched {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.0.describe_counter(key, unit, text);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.0.describe_gauge(key, unit, text);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        self.0.describe_histogram(key, unit, text);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if ON.load(Ordering::Relaxed) {
            self.0.register_counter(key, metadata)
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if ON.load(Ordering::Relaxed) {
            self.0.register_gauge(key, metadata)
        } else {
            Gauge::noop()
        }
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if ON.load(Ordering::Relaxed) {
            self.0.register_histogram(key, metadata)
        } else {
            Histogram::noop()
        }
    }
}

/// Installs the switchable subscriber and recorder (once per process).
fn install() -> Result<(), BenchError> {
    let spans = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_filter(filter::LevelFilter::INFO)
        .with_filter(filter::dynamic_filter_fn(|_, _| ON.load(Ordering::Relaxed)));
    tracing_subscriber::registry()
        .with(spans)
        .try_init()
        .map_err(|e| BenchError::Check(format!("installing a tracing subscriber: {e}")))?;
    let recorder = PrometheusBuilder::new().build_recorder();
    metrics::set_global_recorder(Switched(recorder))
        .map_err(|e| BenchError::Check(format!("installing a metrics recorder: {e}")))?;
    Ok(())
}

/// One run of O1: W1 C=8 off, on, off, on; the pairs' throughput and p99.
pub(crate) async fn run(db: &Db, first: bool) -> Result<(Vec<W1Run>, Vec<W1Run>), BenchError> {
    if first {
        install()?;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for telemetry in [false, true] {
            ON.store(telemetry, Ordering::Relaxed);
            let w = w1::run(db, 8, false, false).await?;
            eprintln!(
                "O1 telemetry {}: {w:?}",
                if telemetry { "on" } else { "off" }
            );
            if telemetry { on.push(w) } else { off.push(w) }
        }
    }
    ON.store(false, Ordering::Relaxed);
    Ok((off, on))
}
