//! `serve`, `notifier`, `notices`, `replay`, `projections` and `dead-letters`.

use std::sync::Arc;
use std::time::Duration;

use bank::{Backend, Bank, BankConfig, Handlers, ReadModel, TRANSFER_PROCESS};
use cqrs_core::{DeadLetterStatus, Replay, Subscriber};
use indicatif::{ProgressBar, ProgressStyle};

use super::CliResult;

pub(crate) async fn serve(
    listen: &str,
    url: &str,
    read_timeout: Duration,
    relay: Option<(bank::Broker, bank::Channels)>,
) -> CliResult {
    let backend = Backend::open(url).await?;
    let kind = backend.kind();
    let config = BankConfig {
        read_timeout,
        ..BankConfig::default()
    };
    let relay = match relay {
        Some((broker, channels)) => {
            tracing::info!(broker = broker.kind(), prefix = %channels.prefix, "relaying events");
            Some(bank::start_relay(&backend, &broker, &channels).await?)
        }
        None => None,
    };
    let bank = Arc::new(Bank::start(backend, config));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, store = kind, "serving");
    // NOTE: tests and scripts read this line to learn the port (`--listen 127.0.0.1:0`).
    println!("bank listening on http://{addr} ({kind} store)");
    axum::serve(listener, bank::router(bank.clone()))
        .with_graceful_shutdown(stop_signal())
        .await?;
    tracing::info!("stopping");
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    if let Ok(bank) = Arc::try_unwrap(bank) {
        let backend = bank.backend().clone();
        bank.shutdown().await;
        backend.close().await;
    }
    Ok(())
}

pub(crate) async fn notifier(
    broker: &bank::Broker,
    channels: &bank::Channels,
    database: &str,
) -> CliResult {
    bank::run_notifier(broker, channels, database, stop_signal()).await
}

pub(crate) async fn notices(database: &str) -> CliResult {
    let notifier = bank::Notifier::open(database).await?;
    let notices = notifier.notices().await?;
    if notices.is_empty() {
        println!("no notices");
    }
    for n in notices {
        println!(
            "{:>6}  {}  {}  v{:<4} {}",
            n.seq, n.sent_at, n.account_id, n.version, n.notice
        );
    }
    notifier.close().await;
    Ok(())
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

pub(crate) async fn replay(projection: &str, url: &str) -> CliResult {
    if projection == TRANSFER_PROCESS {
        return Err(format!(
            "{TRANSFER_PROCESS} is a process manager: replaying it would issue its commands again"
        )
        .into());
    }
    let names: Vec<_> = ReadModel::ALL.iter().map(|m| m.name()).collect();
    let model = ReadModel::from_name(projection).ok_or_else(|| {
        format!(
            "unknown projection {projection:?}; one of: {}",
            names.join(", ")
        )
    })?;
    let backend = Backend::open(url).await?;
    // NOTE: hold the projector's lease for the whole rebuild, so that a running server cannot
    // write the table while it is rebuilt (on PostgreSQL it is fenced out if it tries).
    let leases = backend.leases();
    let _lease = match &leases {
        Some(leases) => leases.try_acquire(model.name()).await?,
        None => None,
    };
    if leases.is_some() && _lease.is_none() {
        return Err(format!("{projection} is running in another process; stop it first").into());
    }
    let sub = backend.read_model(model);
    let head = backend.events().head_position().await?;
    let bar = ProgressBar::new(head);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
        )?
        .progress_chars("=> "),
    );
    bar.set_message(format!("replaying {projection}"));
    let report = Replay::new(backend.events(), backend.dead_letters())
        .run(&*sub, |p| {
            bar.set_length(p.head.max(p.position));
            bar.set_position(p.position);
        })
        .await?;
    bar.finish_and_clear();
    println!(
        "replayed {projection}: {} events in {:.2} s ({:.0} events/s){}",
        report.events,
        report.elapsed.as_secs_f64(),
        report.rate(),
        if report.parked > 0 {
            format!(", {} parked", report.parked)
        } else {
            String::new()
        }
    );
    backend.close().await;
    Ok(())
}

pub(crate) async fn projections(url: &str) -> CliResult {
    let backend = Backend::open(url).await?;
    let head = backend.events().head_position().await?;
    let letters = backend.dead_letters().list(None).await?;
    println!(
        "{:<20} {:>10} {:>10} {:>7}",
        "NAME", "POSITION", "LAG", "PARKED"
    );
    let handlers = Handlers::new(&backend, cqrs_core::RetryPolicy::default());
    for sub in bank::subscribers(&backend, &handlers) {
        let position = sub.checkpoint().await?.position;
        let parked = letters
            .iter()
            .filter(|l| l.subscriber == sub.name())
            .count();
        println!(
            "{:<20} {:>10} {:>10} {:>7}",
            sub.name(),
            position,
            head.saturating_sub(position),
            parked
        );
    }
    println!("head position: {head}");
    backend.close().await;
    Ok(())
}

pub(crate) async fn dead_letters_list(url: &str) -> CliResult {
    let backend = Backend::open(url).await?;
    let letters = backend.dead_letters().list(None).await?;
    if letters.is_empty() {
        println!("no dead letters");
    }
    for l in letters {
        let status = if l.status == DeadLetterStatus::Parked {
            "parked"
        } else {
            "retry requested"
        };
        println!(
            "{}  {}  {} v{} {} (position {})  {} attempts, {status}, parked {}\n    {}",
            l.id,
            l.subscriber,
            l.event.stream,
            l.event.stream_version,
            l.event.event_type,
            l.event.position(),
            l.attempts,
            l.parked_at.format("%Y-%m-%d %H:%M:%S"),
            l.error
        );
    }
    backend.close().await;
    Ok(())
}

pub(crate) async fn dead_letter_retry(url: &str, id: uuid::Uuid) -> CliResult {
    let backend = Backend::open(url).await?;
    backend
        .dead_letters()
        .set_status(id, DeadLetterStatus::RetryRequested)
        .await?;
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

/// How long the demo waits for read models.
pub(crate) const SETTLE: Duration = Duration::from_secs(10);
