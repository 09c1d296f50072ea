//! What the bank's processes tell the outside: log lines on stderr (text or JSON), and with an
//! OTLP endpoint their spans, exported over OTLP/HTTP to a collector.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person at a terminal.
    Text,
    /// One JSON object per line, with the span fields, for a log collector.
    Json,
}

/// Keeps the span exporter running; dropping it sends what is still buffered.
#[must_use = "dropping the guard stops the export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: the last spans were not exported: {e}");
        }
    }
}

/// Installs the process's tracing subscriber: `filter` (`RUST_LOG` wins over it) for the log
/// lines in `format`, and, with `otlp_endpoint` (a collector's OTLP/HTTP base URL such as
/// `http://127.0.0.1:4318`), every span exported as service `service`. The spans carry the
/// W3C trace context across processes: a request's `traceparent`, the events' metadata and
/// the brokers' message headers (see `cqrs_core::trace`).
pub fn init(
    service: &str,
    filter: &str,
    format: LogFormat,
    otlp_endpoint: Option<&str>,
) -> Result<Telemetry, Box<dyn std::error::Error + Send + Sync>> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    let provider = otlp_endpoint
        .map(|url| exporter(service, url))
        .transpose()?;
    // NOTE: the spans have a filter of their own: quieter log lines (`RUST_LOG=warn`) keep
    // every span of the framework and the service, and the exporter's own HTTP client is
    // never traced into the traces it sends.
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("bank"))
            .with_filter(EnvFilter::new(
                "info,h2=off,hyper=off,hyper_util=off,reqwest=off,tower=off,opentelemetry=off",
            ))
            .boxed()
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()?;
    Ok(Telemetry { provider })
}

fn exporter(
    service: &str,
    url: &str,
) -> Result<SdkTracerProvider, Box<dyn std::error::Error + Send + Sync>> {
    let url = url.trim_end_matches('/');
    let endpoint = if url.ends_with("/v1/traces") {
        url.to_owned()
    } else {
        format!("{url}/v1/traces")
    };
    let exporter = SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}
