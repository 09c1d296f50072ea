//! The example bank service. Run: `cargo run -p bank -- demo`, or `cargo run -p bank -- serve`.
//!
//! `--database` (or `DATABASE_URL`) picks the store: none is the embedded store in `./bank.db`,
//! `sqlite::memory:` a throwaway one, `postgres://...` PostgreSQL.
//!
//! With a broker, a second service: `bank notifier --broker amqp://...` (or `nats://...`), then
//! `bank serve --broker` with the same URL; `bank notices` lists what the notifier sent.

use std::process::ExitCode;
use std::time::Duration;

use bank::Channels;
use bank::telemetry::{self, LogFormat};
use clap::{Parser, Subcommand};

mod cli;

/// The example bank: accounts, transfers, read models, over HTTP.
#[derive(Debug, Parser)]
#[command(name = "bank", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// How the log lines on stderr are written: `text`, or `json` (one object per line, with
    /// the span fields, for a log collector).
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Export the spans over OTLP/HTTP to this collector (`http://127.0.0.1:4318`, say): one
    /// trace runs from a request through its command and events to the projectors, the relay
    /// and the notifier.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, clap::Args)]
struct Database {
    /// The store: a file path, `sqlite:...`, `sqlite::memory:` or `postgres://...`
    #[arg(long = "database", env = "DATABASE_URL", global = true)]
    #[arg(default_value = bank::DEFAULT_DATABASE)]
    url: String,
}

#[derive(Debug, clap::Args)]
struct NotifierDatabase {
    /// The notifier's own database: a file path, `sqlite:...`, `sqlite::memory:` or
    /// `postgres://...` (its schema `notifier`)
    #[arg(long = "database", env = "NOTIFIER_DATABASE_URL")]
    #[arg(default_value = bank::DEFAULT_NOTIFIER_DATABASE)]
    url: String,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serves the HTTP API, with command handling, every projector and the process manager.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// How long a read with `?after=N` waits for its read model before a 504, in ms.
        #[arg(long, default_value_t = 5000)]
        read_timeout_ms: u64,
        #[command(flatten)]
        db: Database,
        /// Also relay every event to this broker: `amqp://...` (RabbitMQ), `nats://...`
        /// (NATS JetStream), `kafka://host:port` (Kafka, topics `<prefix>.<aggregate type>`),
        /// `stomp://host:61613` (ActiveMQ) or `sqs://[key:secret@host:port]` (Amazon SQS, FIFO
        /// queues `<prefix>-<aggregate type>.fifo`). On RabbitMQ, start `bank notifier` once first (events
        /// published before its queue exists are dropped), or pass `--declare-queue`.
        #[arg(long)]
        broker: Option<bank::Broker>,
        /// The exchanges `<PREFIX>.<aggregate type>` (RabbitMQ) or the stream `<PREFIX>`
        /// (JetStream, subjects `<prefix>.>`) the events are published to.
        #[arg(long, default_value = "bank")]
        broker_prefix: String,
        /// RabbitMQ: the relay declares the notifier's queue of this name (as `bank notifier
        /// --queue` does) before it publishes, so that events wait for a notifier not started
        /// yet.
        #[arg(long, value_name = "QUEUE", requires = "broker")]
        declare_queue: Option<String>,
        /// The token the admin page (`/admin`) asks for before a retry or a skip; without one,
        /// anyone who reaches the address may retry and skip dead letters.
        #[arg(long, env = "BANK_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Serve the admin (`/admin`) and `/metrics` on this address of their own instead of
        /// beside the API (an address only operators reach, say).
        #[arg(long, value_name = "ADDR")]
        admin_listen: Option<String>,
    },
    /// A second service: consumes the bank's account events from a broker into its own read
    /// model (balances and the notices sent to customers), logging each notice.
    Notifier {
        /// `amqp://...` (RabbitMQ), `nats://...` (NATS JetStream), `kafka://host:port`,
        /// `stomp://host:61613` (ActiveMQ) or `sqs://[key:secret@host:port]` (Amazon SQS).
        #[arg(long, env = "BROKER_URL")]
        broker: bank::Broker,
        /// The bank's `--broker-prefix`.
        #[arg(long, default_value = "bank")]
        broker_prefix: String,
        /// The notifier's queue (RabbitMQ) or durable consumer (JetStream), shared by its
        /// instances.
        #[arg(long, default_value = "bank-notifier")]
        queue: String,
        #[command(flatten)]
        db: NotifierDatabase,
    },
    /// The notices the notifier has sent, oldest first.
    Notices {
        #[command(flatten)]
        db: NotifierDatabase,
    },
    /// A scripted tour on a fresh in-memory store.
    Demo,
    /// Rebuilds a read model from the first event, with a progress bar. Stop `bank serve` on
    /// the same database first (PostgreSQL enforces it with the projector's lease).
    Replay {
        /// accounts, statement, transfers or large_withdrawals.
        projection: String,
        #[command(flatten)]
        db: Database,
    },
    /// Position, lag and parked events of every projector.
    Projections {
        #[command(flatten)]
        db: Database,
    },
    /// Events a projector could not handle.
    DeadLetters {
        #[command(subcommand)]
        action: DeadLetterAction,
        #[command(flatten)]
        db: Database,
    },
}

#[derive(Debug, Subcommand)]
enum DeadLetterAction {
    /// Lists parked events.
    List,
    /// Asks the running service to try a parked event again.
    Retry {
        /// The dead letter's id.
        id: uuid::Uuid,
    },
    /// Drops a parked event for good.
    Skip {
        /// The dead letter's id.
        id: uuid::Uuid,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let services = matches!(
        args.command,
        Command::Serve { .. } | Command::Notifier { .. }
    );
    let service = match args.command {
        Command::Serve { .. } => "bank",
        Command::Notifier { .. } => "bank-notifier",
        _ => "bank-cli",
    };
    let format = match args.log_format.as_str() {
        "json" => LogFormat::Json,
        _ => LogFormat::Text,
    };
    let filter = if services { "info" } else { "warn" };
    let _telemetry = match telemetry::init(service, filter, format, args.otlp_endpoint.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: telemetry: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        Command::Serve {
            listen,
            read_timeout_ms,
            db,
            broker,
            broker_prefix,
            declare_queue,
            admin_token,
            admin_listen,
        } => {
            let relay = broker.map(|broker| {
                let channels = Channels {
                    prefix: broker_prefix,
                    declare_queue: declare_queue.is_some(),
                    queue: declare_queue.unwrap_or_else(|| Channels::default().queue),
                };
                (broker, channels)
            });
            let read_timeout = Duration::from_millis(read_timeout_ms);
            let admin = cli::AdminAt {
                token: admin_token,
                listen: admin_listen,
            };
            cli::serve(&listen, &db.url, read_timeout, relay, admin).await
        }
        Command::Notifier {
            broker,
            broker_prefix,
            queue,
            db,
        } => {
            let channels = Channels {
                prefix: broker_prefix,
                queue,
                declare_queue: false,
            };
            bank::run_notifier(&broker, &channels, &db.url, cli::stop_signal()).await
        }
        Command::Notices { db } => cli::notices(&db.url).await,
        Command::Demo => cli::demo().await,
        Command::Replay { projection, db } => cli::replay(&projection, &db.url).await,
        Command::Projections { db } => cli::projections(&db.url).await,
        Command::DeadLetters { action, db } => match action {
            DeadLetterAction::List => cli::dead_letters(&db.url).await,
            DeadLetterAction::Retry { id } => cli::dead_letter_retry(&db.url, id).await,
            DeadLetterAction::Skip { id } => cli::dead_letter_skip(&db.url, id).await,
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bank: {}", cqrs_core::error_chain(&*e));
            ExitCode::FAILURE
        }
    }
}
