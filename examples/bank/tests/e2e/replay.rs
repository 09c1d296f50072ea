//! `bank replay accounts` on a store of 100,000 events rebuilds the same table, row for row.
//! The events come through the library in multi-event appends (200 accounts of 500 events),
//! which is much faster than 100,000 HTTP calls.

use std::process::Command;
use std::time::{Duration, Instant};

use bank::{Account, AccountEvent, Backend, ReadModel};
use cqrs_core::{CommandHandler, ExpectedVersion, Metadata, NewEvent, Runner};

use crate::support::{Rng, pg_db, sqlite_db};

const STREAMS: usize = 200;
const EVENTS_PER_STREAM: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_100_000_events_gives_the_same_accounts_table() {
    let (_dir, db) = sqlite_db();
    replay_gives_the_same_table(&db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_of_100_000_events_gives_the_same_accounts_table_on_postgres() {
    let Some(db) = pg_db().await else { return };
    replay_gives_the_same_table(&db.url).await;
    db.drop_db().await;
}

async fn replay_gives_the_same_table(db: &str) {
    let backend = Backend::open(db).await.unwrap();
    let store = backend.events();

    // Generate the events through the library, one append of 100 events per account.
    let t = Instant::now();
    let mut rng = Rng::new(7);
    for s in 0..STREAMS {
        let id = uuid::Uuid::from_u128(s as u128 + 1).to_string();
        let mut events = vec![AccountEvent::Opened {
            owner: format!("owner{s}"),
        }];
        if s % 10 == 0 {
            // Every tenth account goes in and out, then closes.
            for _ in 0..(EVENTS_PER_STREAM - 2) / 2 {
                let amount = 1 + rng.below(10_000);
                events.push(AccountEvent::Deposited {
                    amount,
                    balance: amount,
                });
                events.push(AccountEvent::Withdrawn { amount, balance: 0 });
            }
            events.push(AccountEvent::Closed);
        } else {
            let mut balance = 0u64;
            for _ in 1..EVENTS_PER_STREAM {
                let amount = 1 + rng.below(10_000);
                events.push(if balance >= amount && rng.below(3) == 0 {
                    balance -= amount;
                    AccountEvent::Withdrawn { amount, balance }
                } else {
                    balance += amount;
                    AccountEvent::Deposited { amount, balance }
                });
            }
        }
        assert_eq!(events.len(), EVENTS_PER_STREAM);
        let new: Vec<_> = events
            .iter()
            .map(|e| NewEvent::from_domain(e, Metadata::default()).unwrap())
            .collect();
        let stream = CommandHandler::<Account>::stream(&id);
        store
            .append(&stream, ExpectedVersion::NoStream, new, None)
            .await
            .unwrap();
    }
    let head = store.head_position().await.unwrap();
    assert_eq!(head, (STREAMS * EVENTS_PER_STREAM) as u64);
    eprintln!(
        "replay: generated {head} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The live projector builds the table.
    let t = Instant::now();
    let mut runner = Runner::new(store.clone(), backend.dead_letters());
    if let Some(leases) = backend.leases() {
        // NOTE: on PostgreSQL the projector commits only under its lease.
        runner = runner.with_leases(leases);
    }
    let runner = runner
        .with_arc(backend.read_model(ReadModel::Accounts))
        .start();
    runner
        .wait_for("accounts", head, Duration::from_secs(120))
        .await
        .unwrap();
    runner.shutdown().await;
    eprintln!(
        "replay: live projection in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let live = backend.queries().accounts().await.unwrap();
    assert_eq!(live.len(), STREAMS);
    assert!(live.iter().any(|r| r.status == "closed"));
    backend.close().await;

    // The CLI rebuilds it from zero.
    let out = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["replay", "accounts", "--database", db])
        .output()
        .expect("run bank replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bank replay failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("100000 events") && stdout.contains("events/s"),
        "{stdout}"
    );
    eprintln!("replay: {}", stdout.trim());

    let backend = Backend::open(db).await.unwrap();
    let rebuilt = backend.queries().accounts().await.unwrap();
    assert_eq!(rebuilt.len(), live.len());
    for (a, b) in live.iter().zip(&rebuilt) {
        assert_eq!(a, b, "row for row");
    }
    backend.close().await;
}
