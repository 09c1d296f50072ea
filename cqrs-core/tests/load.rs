//! Loading an aggregate: long streams are read in several batches, and an event that no longer
//! decodes is named.

mod common;

use std::sync::Arc;

use common::{Account, AccountCommand};
use cqrs_core::*;
use serde_json::json;

#[tokio::test]
async fn a_stream_longer_than_several_read_batches_loads_whole() {
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("account", "long");
    let opened = NewEvent::new("Opened", json!({"owner": "ann"}));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![opened], None)
        .await
        .unwrap();
    // 12,500 deposits: more than two batches of the handler's reads, and a partial last one.
    let mut version = 1;
    for chunk in 0..25 {
        let events = (0..500)
            .map(|i| NewEvent::new("Deposited", json!({"amount": chunk * 500 + i + 1})))
            .collect();
        version = store
            .append(&stream, ExpectedVersion::Exact(version), events, None)
            .await
            .unwrap()
            .version;
    }
    let accounts = CommandHandler::<Account>::new(store.clone());
    let (state, v) = accounts.load("long").await.unwrap();
    assert_eq!(v, 12_501);
    assert_eq!(state.events, 12_501);
    assert_eq!(state.balance, 12_500 * 12_501 / 2);
    let out = accounts
        .execute("long", &AccountCommand::Deposit { amount: 1 })
        .await
        .unwrap();
    assert_eq!(out.version, 12_502);
}

#[tokio::test]
async fn an_event_that_no_longer_decodes_is_named_when_loading() {
    let store = Arc::new(InMemoryEventStore::new());
    let stream = StreamId::new("account", "a");
    let events = vec![
        NewEvent::new("Opened", json!({"owner": "ann"})),
        NewEvent::new("Deposited", json!({"amount": "ten"})),
    ];
    store
        .append(&stream, ExpectedVersion::NoStream, events, None)
        .await
        .unwrap();
    let accounts = CommandHandler::<Account>::new(store.clone());
    let err = accounts
        .execute("a", &AccountCommand::Deposit { amount: 1 })
        .await
        .unwrap_err();
    match err {
        CommandError::Store(Error::Decode {
            stream: s,
            version,
            event_type,
            schema_version,
            ..
        }) => {
            assert_eq!((s, version), (stream.clone(), 2));
            assert_eq!((event_type.as_str(), schema_version), ("Deposited", 1));
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&stream).await.unwrap(),
        2,
        "nothing written"
    );
}
