//! The notifier's read model and its inbox, fed the bank's real events without a broker (the
//! broker round trips are in `notifier.rs`).

use std::time::Duration;

use bank::{Amount, Backend, Bank, BankConfig, Broker, LARGE_WITHDRAWAL, Notifier};
use cqrs_core::{Cursor, InboxSubscriber, RecordedEvent};

use crate::support::pg_db;

/// A bank's events: alice opens, deposits, withdraws a large amount, pays bob 500. Returns
/// them with alice's and bob's ids.
async fn bank_events() -> (Vec<RecordedEvent>, String, String) {
    let bank = Bank::start(
        Backend::open("sqlite::memory:").await.unwrap(),
        BankConfig::default(),
    );
    let amount = |n| Amount::new(n).unwrap();
    let alice = bank.open_account("alice", None).await.unwrap().id;
    let bob = bank.open_account("bob", None).await.unwrap().id;
    bank.deposit(alice, amount(3_000_000), None).await.unwrap();
    bank.withdraw(alice, amount(LARGE_WITHDRAWAL), None)
        .await
        .unwrap();
    bank.transfer(alice, bob, amount(500), None).await.unwrap();
    bank.settle(Duration::from_secs(10)).await.unwrap();
    let events = bank
        .backend()
        .events()
        .read_all(Cursor::default(), 1000)
        .await
        .unwrap();
    bank.shutdown().await;
    (events, alice.to_string(), bob.to_string())
}

async fn assert_heard(n: &Notifier, alice: &str, bob: &str) {
    let a = n.account(alice).await.unwrap().expect("alice");
    assert_eq!(a.owner, "alice");
    assert_eq!(a.balance, 3_000_000 - LARGE_WITHDRAWAL - 500);
    let mut got = a.notices;
    got.sort();
    let mut want = vec![
        "welcome, alice".to_owned(),
        format!("large withdrawal of {LARGE_WITHDRAWAL}"),
    ];
    want.sort();
    assert_eq!(got, want);
    let b = n.account(bob).await.unwrap().expect("bob");
    assert_eq!((b.owner.as_str(), b.balance), ("bob", 500));
    let mut got = b.notices;
    got.sort();
    assert_eq!(got, vec!["welcome, bob", "you received 500"]);
    assert_eq!(n.notices().await.unwrap().len(), 4, "no other notice");
}

/// Every event delivered, then every event again newest first: no notice twice, no balance
/// going back.
async fn delivered_twice_and_out_of_order(url: &str) {
    let (events, alice, bob) = bank_events().await;
    let n = Notifier::open(url).await.unwrap();
    let inbox = n.inbox();
    let mut fresh = 0;
    for e in &events {
        fresh += usize::from(inbox.handle_once(e).await.unwrap());
    }
    for e in events.iter().rev() {
        assert!(!inbox.handle_once(e).await.unwrap(), "{e:?} handled twice");
    }
    assert_eq!(fresh, events.len());
    assert_heard(&n, &alice, &bob).await;
    n.close().await;
}

#[tokio::test]
async fn events_delivered_twice_and_out_of_order_take_effect_once() {
    delivered_twice_and_out_of_order("sqlite::memory:").await;
}

#[tokio::test]
async fn events_delivered_twice_and_out_of_order_take_effect_once_on_postgres() {
    let Some(db) = pg_db().await else { return };
    delivered_twice_and_out_of_order(&db.url).await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_reopened_notifier_keeps_its_read_model_and_its_inbox() {
    let (events, alice, bob) = bank_events().await;
    let dir = tempfile::tempdir().unwrap();
    let url = dir
        .path()
        .join("notifier.db")
        .to_string_lossy()
        .into_owned();
    let half = events.len() / 2;
    let n = Notifier::open(&url).await.unwrap();
    for e in &events[..half] {
        assert!(n.inbox().handle_once(e).await.unwrap());
    }
    n.close().await;
    let n = Notifier::open(&url).await.unwrap();
    // The broker delivers the first half again (never acknowledged), then the rest.
    let mut fresh = 0;
    for e in &events {
        fresh += usize::from(n.inbox().handle_once(e).await.unwrap());
    }
    assert_eq!(fresh, events.len() - half);
    assert_heard(&n, &alice, &bob).await;
}

#[test]
fn brokers_are_told_apart_by_url() {
    let amqp = "amqp://guest:guest@h:5672/%2f";
    assert_eq!(amqp.parse::<Broker>().unwrap(), Broker::Amqp(amqp.into()));
    assert_eq!("nats://h:4222".parse::<Broker>().unwrap().kind(), "nats");
    assert_eq!(
        "kafka://h1:9092,h2:9092".parse::<Broker>().unwrap(),
        Broker::Kafka("kafka://h1:9092,h2:9092".into())
    );
    assert_eq!(
        "stomp://h:61613".parse::<Broker>().unwrap().kind(),
        "activemq"
    );
    assert!("mqtt://h".parse::<Broker>().is_err());
}
