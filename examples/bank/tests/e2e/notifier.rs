//! `bank serve --broker` and `bank notifier`, real processes on the real brokers: the notifier
//! hears every account event, keeps its notices across a SIGKILL, and sends each exactly once,
//! even when the bank relays every event again.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank::{BROKER_RELAY, Backend, Broker, Channels, LARGE_WITHDRAWAL, Notifier};
use reqwest::StatusCode;
use serde_json::json;

use crate::support::{Client, Server, pg_db, sqlite_db};

/// Accounts in the workload; each ends with three notices.
const ACCOUNTS: usize = 16;

/// The `bank notifier` process.
pub(crate) struct NotifierProcess(Child);

impl NotifierProcess {
    /// Starts `bank notifier` and waits until its queue is declared.
    fn start(broker: &str, channels: &Channels, database: &str) -> Self {
        Self::start_with(broker, channels, database, &[])
    }

    /// Like [`start`](Self::start), with extra arguments.
    pub(crate) fn start_with(
        broker: &str,
        channels: &Channels,
        database: &str,
        extra: &[&str],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
            .args(["notifier", "--broker", broker, "--database", database])
            .args([
                "--broker-prefix",
                &channels.prefix,
                "--queue",
                &channels.queue,
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bank notifier");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(
            line.starts_with("bank notifier consuming"),
            "bank notifier did not start: {line:?}"
        );
        NotifierProcess(child)
    }

    /// SIGKILL, as a crash would.
    fn kill(mut self) {
        self.0.kill().expect("kill");
        self.0.wait().expect("wait");
    }
}

impl Drop for NotifierProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broker's URL, or `None` (outside CI) when it cannot be reached.
pub(crate) async fn broker(var: &str, default: &str) -> Option<Broker> {
    let url = std::env::var(var).unwrap_or_else(|_| default.into());
    let broker: Broker = url.parse().expect("a broker URL");
    let reached = match &broker {
        Broker::Amqp(u) => cqrs_rabbitmq::lapin::Connection::connect(u, Default::default())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Broker::Nats(u) => cqrs_nats::async_nats::connect(u.as_str())
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Broker::Kafka(brokers) => crate::notifier_kafka::reach(brokers).await,
        Broker::Stomp(u) => crate::notifier_activemq::reach(u).await,
        Broker::Sqs(u) => crate::notifier_sqs::reach(u).await,
    };
    match reached {
        Ok(()) => Some(broker),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("broker unreachable at {url}: {e}")
        }
        Err(e) => {
            eprintln!("skipping: broker unreachable at {url}: {e}");
            None
        }
    }
}

pub(crate) fn url(broker: &Broker) -> &str {
    match broker {
        Broker::Amqp(u)
        | Broker::Nats(u)
        | Broker::Kafka(u)
        | Broker::Stomp(u)
        | Broker::Sqs(u) => u,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_over_rabbitmq_survives_sigkill_and_a_relay_replay() {
    let Some(b) = broker("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").await else {
        return;
    };
    let (_dir, db) = notifier_sqlite();
    notifier_round_trip(b, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_over_nats_survives_sigkill_and_a_relay_replay() {
    let Some(b) = broker("NATS_URL", "nats://127.0.0.1:4222").await else {
        return;
    };
    let (_dir, db) = notifier_sqlite();
    notifier_round_trip(b, &db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_on_postgres_over_rabbitmq_survives_sigkill_and_a_relay_replay() {
    let Some(b) = broker("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").await else {
        return;
    };
    let Some(db) = pg_db().await else { return };
    notifier_round_trip(b, &db.url).await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_declare_queue_keeps_the_events_relayed_before_the_notifier_starts() {
    let Some(broker) = broker("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").await else {
        return;
    };
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let channels = Channels {
        prefix: format!("banke2e{}", &tag[..10]),
        queue: format!("banke2e-early-{}", &tag[..10]),
        ..Channels::default()
    };
    let _cleanup = Cleanup(broker.clone(), channels.clone());
    let (_bank_dir, bank_db) = sqlite_db();
    let (_dir, notifier_db) = notifier_sqlite();

    // The bank first, and its first account relayed before any notifier ran: without
    // `--declare-queue` RabbitMQ would drop that event (no queue is bound yet).
    let server = Server::start_with(
        &bank_db,
        &[
            "--broker",
            url(&broker),
            "--broker-prefix",
            &channels.prefix,
            "--declare-queue",
            &channels.queue,
        ],
    );
    let early = server.client().open("early").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ready_messages(url(&broker), &channels.queue).await < Some(1) {
        assert!(
            Instant::now() < deadline,
            "the relay did not declare the queue and publish"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let notifier = NotifierProcess::start(url(&broker), &channels, &notifier_db);
    let read = Notifier::open(&notifier_db).await.unwrap();
    wait_for(&read, 1, "the early account's notice").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let want = BTreeMap::from([((early, "welcome, early".to_owned()), 1)]);
    assert_eq!(sent(&read).await, want);
    drop(notifier);
    drop(server);
    read.close().await;
}

/// Messages ready in a RabbitMQ queue, `None` while it does not exist.
async fn ready_messages(url: &str, queue: &str) -> Option<u32> {
    use cqrs_rabbitmq::lapin::options::QueueDeclareOptions;
    let conn = cqrs_rabbitmq::lapin::Connection::connect(url, Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let count = channel
        .queue_declare(queue.into(), passive, Default::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = conn.close(200, "counted".into()).await;
    count
}

/// A SQLite file for the notifier in a temporary directory.
pub(crate) fn notifier_sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir
        .path()
        .join("notifier.db")
        .to_string_lossy()
        .into_owned();
    (dir, db)
}

pub(crate) async fn notifier_round_trip(broker: Broker, notifier_db: &str) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let channels = Channels {
        prefix: format!("banke2e{}", &tag[..10]),
        queue: format!("banke2e-notifier-{}", &tag[..10]),
        ..Channels::default()
    };
    let _cleanup = Cleanup(broker.clone(), channels.clone());
    let (_bank_dir, bank_db) = sqlite_db();

    // NOTE: the notifier first: RabbitMQ drops what is published before its queue exists.
    let first = NotifierProcess::start(url(&broker), &channels, notifier_db);
    let relay_args = [
        "--broker",
        url(&broker),
        "--broker-prefix",
        &channels.prefix,
    ];
    let server = Server::start_with(&bank_db, &relay_args);
    let read = Notifier::open(notifier_db).await.unwrap();

    // The workload runs while the notifier is killed and restarted.
    let work = tokio::spawn(workload(server.client()));
    wait_for(&read, ACCOUNTS / 2, "notices before the kill").await;
    first.kill();
    let at_kill = read.notices().await.unwrap().len();
    let ids = work.await.unwrap();
    let second = NotifierProcess::start(url(&broker), &channels, notifier_db);
    let want = expected(&ids);
    eprintln!("{} notices of {} when killed", at_kill, want.len());
    wait_for(&read, want.len(), "every notice after the restart").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(&read).await, want, "each notice exactly once");

    // Everything is delivered again: the relay lost its checkpoint (as if killed between
    // publish and checkpoint) and publishes every event again; on JetStream, which drops those
    // repeats itself, the notifier's durable consumer is also lost and starts from the first
    // event. The inbox recognises each one.
    server.kill();
    second.kill();
    let backend = Backend::open(&bank_db).await.unwrap();
    backend.checkpoints().reset(BROKER_RELAY).await.unwrap();
    let account_events = backend
        .events()
        .read_all(cqrs_core::Cursor::default(), 100_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.stream.category == "account")
        .count();
    backend.close().await;
    if let Broker::Nats(u) = &broker {
        let js = cqrs_nats::async_nats::jetstream::new(
            cqrs_nats::async_nats::connect(u.as_str()).await.unwrap(),
        );
        let stream = js.get_stream(channels.prefix.to_uppercase()).await.unwrap();
        stream.delete_consumer(&channels.queue).await.unwrap();
    }
    let third = NotifierProcess::start(url(&broker), &channels, notifier_db);
    let server = Server::start_with(&bank_db, &relay_args);
    // A last account, published after every repeat, tells when they have all been heard.
    let marker = server.client().open("marker").await;
    let mut want = want;
    want.insert((marker.clone(), "welcome, marker".to_owned()), 1);
    wait_for(&read, want.len(), "the marker's notice").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sent(&read).await, want, "the repeats had no effect");
    assert_eq!(
        read.heard().await.unwrap() as usize,
        account_events + 1,
        "every account event (and the marker's) handled once"
    );
    let a = read
        .account(&ids[0])
        .await
        .unwrap()
        .expect("the first account");
    assert_eq!(a.owner, "owner0");
    // It paid 100 to the next account and got 100 + 15 from the last one.
    assert_eq!(
        a.balance,
        5_000_000 - LARGE_WITHDRAWAL - 100 + (100 + ACCOUNTS as u64 - 1)
    );

    // `bank notices` lists the same notices.
    let out = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["notices", "--database", notifier_db])
        .output()
        .expect("bank notices");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), want.len(), "{listing}");
    assert!(
        listing.contains(&format!("{marker}  v1    welcome, marker")),
        "{listing}"
    );

    drop(third);
    drop(server);
    read.close().await;
}

/// Deletes the test's queues, exchanges and streams when dropped, a failed test's too.
pub(crate) struct Cleanup(pub(crate) Broker, pub(crate) Channels);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (broker, channels) = (self.0.clone(), self.1.clone());
        // NOTE: a thread of its own: drop cannot await, and the test's runtime may be unwinding.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cleanup(&broker, &channels));
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up the broker failed");
        }
    }
}

/// Opens the accounts, and for each: a deposit, a large withdrawal, a transfer to the next
/// account. Four clients at once. Returns the account ids.
async fn workload(c: Client) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..ACCOUNTS {
        ids.push(c.open(&format!("owner{i}")).await);
    }
    let ids = Arc::new(ids);
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let (c, ids) = (c.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            for i in (lane..ACCOUNTS).step_by(4) {
                c.deposit(&ids[i], 5_000_000).await;
                let (s, b) = c
                    .post(
                        &format!("/accounts/{}/withdraw", ids[i]),
                        json!({ "amount": LARGE_WITHDRAWAL }),
                    )
                    .await;
                assert_eq!(s, StatusCode::OK, "{b}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut transfers = Vec::new();
    for i in 0..ACCOUNTS {
        let to = &ids[(i + 1) % ACCOUNTS];
        let body = json!({ "from": ids[i], "to": to, "amount": 100 + i });
        let (s, b) = c.post("/transfers", body).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        transfers.push(b["id"].as_str().unwrap().to_owned());
    }
    for t in transfers {
        assert_eq!(c.finished_transfer(&t).await["status"], "completed");
    }
    Arc::try_unwrap(ids).unwrap()
}

/// Each account's three notices, by (account, text), each once.
fn expected(ids: &[String]) -> BTreeMap<(String, String), usize> {
    let mut want = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let from = (i + ACCOUNTS - 1) % ACCOUNTS;
        for text in [
            format!("welcome, owner{i}"),
            format!("large withdrawal of {LARGE_WITHDRAWAL}"),
            format!("you received {}", 100 + from),
        ] {
            want.insert((id.clone(), text), 1);
        }
    }
    want
}

/// The notices sent, counted by (account, text).
async fn sent(n: &Notifier) -> BTreeMap<(String, String), usize> {
    let mut got = BTreeMap::new();
    for notice in n.notices().await.unwrap() {
        *got.entry((notice.account_id, notice.notice)).or_default() += 1;
    }
    got
}

async fn wait_for(n: &Notifier, count: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = n.notices().await.unwrap().len();
        if have >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {have} of {count} notices"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Deletes the test's queues, exchanges and streams.
async fn cleanup(broker: &Broker, channels: &Channels) {
    match broker {
        Broker::Amqp(url) => {
            use cqrs_rabbitmq::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
            let conn = cqrs_rabbitmq::lapin::Connection::connect(url, Default::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let q = &channels.queue;
            for name in [q.clone(), format!("{q}.retry"), format!("{q}.dlq")] {
                ch.queue_delete(name.into(), QueueDeleteOptions::default())
                    .await
                    .unwrap();
            }
            // NOTE: the relay publishes every aggregate type, so it declared both exchanges.
            let prefix = format!("{}.", channels.prefix);
            for name in [
                format!("{q}.dlx"),
                cqrs_rabbitmq::exchange_for(&prefix, "account"),
                cqrs_rabbitmq::exchange_for(&prefix, "transfer"),
            ] {
                ch.exchange_delete(name.into(), ExchangeDeleteOptions::default())
                    .await
                    .unwrap();
            }
        }
        Broker::Nats(url) => {
            let js = cqrs_nats::async_nats::jetstream::new(
                cqrs_nats::async_nats::connect(url.as_str()).await.unwrap(),
            );
            let events = channels.prefix.to_uppercase();
            let dlq = cqrs_nats::JetStreamQueue::new(
                &cqrs_nats::JetStreamEvents::new(&events, &channels.prefix),
                &channels.queue,
            )
            .dead_letter_stream();
            for name in [events, dlq] {
                js.delete_stream(name).await.unwrap();
            }
        }
        Broker::Kafka(brokers) => crate::notifier_kafka::cleanup(brokers, channels).await,
        // NOTE: STOMP cannot delete a destination; the notifier's queue is left empty.
        Broker::Stomp(_) => {}
        Broker::Sqs(url) => crate::notifier_sqs::cleanup(url, channels).await,
    }
}

#[test]
fn the_notifier_refuses_an_unknown_broker() {
    let out = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["notifier", "--broker", "mqtt://127.0.0.1:1883"])
        .output()
        .expect("bank notifier");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "expected amqp://..., nats://..., kafka://..., stomp://... (ActiveMQ) or sqs://..."
        ),
        "{err}"
    );
}
