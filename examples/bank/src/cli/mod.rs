//! The subcommands other than the argument parsing: `serve`, the operator commands and the
//! demo.

use std::sync::Arc;
use std::time::Duration;

use bank::{Backend, Bank, BankConfig, Handlers, ReadModel, TRANSFER_PROCESS};
use cqrs_core::{DeadLetter, DeadLetterStatus, Replay, RetryPolicy};
use indicatif::{ProgressBar, ProgressStyle};

mod demo;

pub(crate) use demo::demo;

/// What a subcommand fails with.
pub(crate) type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Where `bank serve` serves its admin, and the token it asks for.
#[derive(Debug, Default)]
pub(crate) struct AdminAt {
    pub(crate) token: Option<String>,
    pub(crate) listen: Option<String>,
}

pub(crate) async fn serve(
    listen: &str,
    url: &str,
    read_timeout: Duration,
    relay: Option<(bank::Broker, bank::Channels)>,
    admin: AdminAt,
) -> CliResult {
    let backend = Backend::open(url).await?;
    let kind = backend.kind();
    let relay = match relay {
        Some((broker, channels)) => {
            tracing::info!(broker = broker.kind(), prefix = %channels.prefix, "relaying events");
            Some(bank::start_relay(&backend, &broker, &channels).await?)
        }
        None => None,
    };
    let config = BankConfig {
        read_timeout,
        ..BankConfig::default()
    };
    let bank = Arc::new(Bank::start(backend.clone(), config));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    // NOTE: tests and scripts read this line to learn the port (`--listen 127.0.0.1:0`).
    println!("bank listening on http://{addr} ({kind} store)");
    // NOTE: the framework records through the `metrics` facade; this recorder keeps it for
    // `GET /metrics`.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let ops = bank::Operations {
        admin_token: admin.token,
        metrics: Some(metrics),
    };
    let app = match admin.listen {
        None => bank::router_with(bank.clone(), ops),
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            // NOTE: tests and scripts read this line to learn the port.
            println!("bank admin on http://{}/admin", listener.local_addr()?);
            let ops = bank::operations_router(bank.clone(), ops);
            tokio::spawn(async move { axum::serve(listener, ops).await });
            bank::router(bank.clone())
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    tracing::info!("stopping");
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    if let Ok(bank) = Arc::try_unwrap(bank) {
        bank.shutdown().await;
        backend.close().await;
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => drop(s.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
}

pub(crate) async fn notices(database: &str) -> CliResult {
    let notifier = bank::Notifier::open(database).await?;
    let notices = notifier.notices().await?;
    if notices.is_empty() {
        println!("no notices");
    }
    for n in notices {
        let (seq, at, account) = (n.seq, n.sent_at, n.account_id);
        println!("{seq:>6}  {at}  {account}  v{:<4} {}", n.version, n.notice);
    }
    notifier.close().await;
    Ok(())
}

pub(crate) async fn replay(projection: &str, url: &str) -> CliResult {
    if projection == TRANSFER_PROCESS {
        let why = "is a process manager: replaying it would issue its commands again";
        return Err(format!("{TRANSFER_PROCESS} {why}").into());
    }
    let Some(model) = ReadModel::from_name(projection) else {
        let names = ReadModel::ALL.map(ReadModel::name).join(", ");
        return Err(format!("unknown projection {projection:?}; one of: {names}").into());
    };
    let backend = Backend::open(url).await?;
    // NOTE: hold the projector's lease for the whole rebuild, so that a running server cannot
    // write the table meanwhile (on PostgreSQL it is fenced out if it tries).
    let _lease =
        match backend.leases() {
            Some(leases) => Some(leases.try_acquire(model.name()).await?.ok_or_else(|| {
                format!("{projection} is running in another process; stop it first")
            })?),
            None => None,
        };
    let head = backend.events().head_position().await?;
    let bar = ProgressBar::new(head);
    let template = "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})";
    bar.set_style(ProgressStyle::with_template(template)?.progress_chars("=> "));
    bar.set_message(format!("replaying {projection}"));
    let report = Replay::new(backend.events(), backend.dead_letters())
        .run(&*backend.read_model(model), |p| {
            bar.set_length(p.head.max(p.position));
            bar.set_position(p.position);
        })
        .await?;
    bar.finish_and_clear();
    let parked = match report.parked {
        0 => String::new(),
        n => format!(", {n} parked"),
    };
    let (events, secs) = (report.events, report.elapsed.as_secs_f64());
    println!(
        "replayed {projection}: {events} events in {secs:.2} s ({:.0} events/s){parked}",
        report.rate()
    );
    backend.close().await;
    Ok(())
}

pub(crate) async fn projections(url: &str) -> CliResult {
    let backend = Backend::open(url).await?;
    let head = backend.events().head_position().await?;
    let letters = backend.dead_letters().list(None).await?;
    println!(
        "{:<20} {:>10} {:>10} {:>7} {:>7}",
        "NAME", "POSITION", "LAG", "PARKED", "HELD"
    );
    let handlers = Handlers::new(&backend, RetryPolicy::default());
    for sub in bank::subscribers(&backend, &handlers) {
        let position = sub.checkpoint().await?.position;
        let mine = letters.iter().filter(|l| l.subscriber == sub.name());
        let held = mine
            .clone()
            .filter(|l| l.status == DeadLetterStatus::Held)
            .count();
        let parked = mine.count() - held;
        let lag = head.saturating_sub(position);
        println!(
            "{:<20} {position:>10} {lag:>10} {parked:>7} {held:>7}",
            sub.name()
        );
    }
    println!("head position: {head}");
    backend.close().await;
    Ok(())
}

pub(crate) async fn dead_letters(url: &str) -> CliResult {
    let backend = Backend::open(url).await?;
    let letters = backend.dead_letters().list(None).await?;
    if letters.is_empty() {
        println!("no dead letters");
    }
    // NOTE: a held letter is listed under the letter of its stream it waits behind.
    let behind = |blocker: &DeadLetter, l: &DeadLetter| {
        l.status == DeadLetterStatus::Held
            && l.subscriber == blocker.subscriber
            && l.event.stream == blocker.event.stream
            && l.event.stream_version > blocker.event.stream_version
    };
    for l in &letters {
        let blocked = letters
            .iter()
            .any(|b| b.status != DeadLetterStatus::Held && behind(b, l));
        if blocked {
            continue;
        }
        let status = match l.status {
            DeadLetterStatus::Parked => "parked",
            DeadLetterStatus::Held => "held, released shortly",
            _ => "retry requested",
        };
        let e = &l.event;
        println!(
            "{}  {}  {} v{} {} (position {})  {} attempts, {status}, parked {}\n    {}",
            l.id,
            l.subscriber,
            e.stream,
            e.stream_version,
            e.event_type,
            e.position(),
            l.attempts,
            l.parked_at.format("%Y-%m-%d %H:%M:%S"),
            l.error
        );
        for h in letters.iter().filter(|h| behind(l, h)) {
            let e = &h.event;
            println!(
                "    held behind it: {}  v{} {} (position {})",
                h.id,
                e.stream_version,
                e.event_type,
                e.position()
            );
        }
    }
    backend.close().await;
    Ok(())
}

pub(crate) async fn dead_letter_retry(url: &str, id: uuid::Uuid) -> CliResult {
    let backend = Backend::open(url).await?;
    let retry = DeadLetterStatus::RetryRequested;
    backend.dead_letters().set_status(id, retry).await?;
    println!(
        "dead letter {id}: retry requested; the running service tries it within a second or so"
    );
    backend.close().await;
    Ok(())
}

pub(crate) async fn dead_letter_skip(url: &str, id: uuid::Uuid) -> CliResult {
    let backend = Backend::open(url).await?;
    backend.dead_letters().remove(id).await?;
    println!("dead letter {id}: skipped and removed");
    backend.close().await;
    Ok(())
}
