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

/// A store that passes everything to an in-memory one, counts the load reads running at once,
/// makes each last a little (so that overlapping reads overlap for sure), can hide events and
/// can hand over the stream's version of a range read before its events.
struct Observed {
    inner: InMemoryEventStore,
    running: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    hide_every: u64,
    version_first: bool,
}

impl Observed {
    fn new(hide_every: u64) -> Self {
        Observed {
            inner: InMemoryEventStore::new(),
            running: Default::default(),
            most: Default::default(),
            hide_every,
            version_first: false,
        }
    }
}

#[async_trait::async_trait]
impl EventAppender for Observed {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        command: Option<CommandId>,
    ) -> Result<AppendResult> {
        self.inner.append(stream, expected, events, command).await
    }
    async fn command_result(
        &self,
        stream: &StreamId,
        command: CommandId,
    ) -> Result<Option<AppendResult>> {
        self.inner.command_result(stream, command).await
    }
}

#[async_trait::async_trait]
impl StreamReader for Observed {
    async fn read_stream_into(
        &self,
        stream: &StreamId,
        versions: std::ops::RangeInclusive<u64>,
        sink: &mut StreamSink<'_>,
    ) -> Result<u64> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.version_first {
            sink(StreamItem::Version(
                self.inner.stream_version(stream).await?,
            ))?;
        }
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut events = Vec::new();
        let head = self
            .inner
            .read_stream_into(stream, versions, &mut |item| {
                if let StreamItem::Event(e) = item {
                    events.push(e);
                }
                Ok(())
            })
            .await;
        self.running.fetch_sub(1, SeqCst);
        let head = head?;
        if !self.version_first {
            sink(StreamItem::Version(head))?;
        }
        for e in events {
            if self.hide_every == 0 || e.stream_version % self.hide_every != 0 {
                sink(StreamItem::Event(e))?;
            }
        }
        Ok(head)
    }
}

#[async_trait::async_trait]
impl AllStreamReader for Observed {
    async fn read_all(&self, after: Cursor, limit: usize) -> Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }
    async fn head_position(&self) -> Result<u64> {
        self.inner.head_position().await
    }
    async fn cursor_of(&self, position: u64) -> Result<Option<Cursor>> {
        self.inner.cursor_of(position).await
    }
    fn wake_ups(&self) -> WakeUps {
        self.inner.wake_ups()
    }
}

/// An opened account with `deposits` deposits of 1, 2, 3, ...
async fn long_account(store: &dyn EventStore, id: &str, deposits: u64) {
    let stream = StreamId::new("account", id);
    let opened = NewEvent::new("Opened", json!({"owner": "ann"}));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![opened], None)
        .await
        .unwrap();
    let mut version = 1;
    while version <= deposits {
        let events = (version..=deposits.min(version + 999))
            .map(|n| NewEvent::new("Deposited", json!({"amount": n})))
            .collect();
        version = store
            .append(&stream, ExpectedVersion::Exact(version), events, None)
            .await
            .unwrap()
            .version;
    }
}

#[tokio::test]
async fn a_long_stream_is_read_in_ranges_at_once_and_loads_as_read_in_order() {
    let deposits = 12_000;
    for parallel in [1, 2, 4] {
        let store = Arc::new(Observed::new(0));
        long_account(store.as_ref(), "long", deposits).await;
        let accounts =
            CommandHandler::<Account>::new(store.clone()).with_load_parallelism(parallel);
        let (state, version) = accounts.load("long").await.unwrap();
        assert_eq!(version, deposits + 1, "parallelism {parallel}");
        assert_eq!(state.events, deposits + 1);
        assert_eq!(state.balance, deposits * (deposits + 1) / 2);
        let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(most, parallel, "reads running at once");
    }
}

#[tokio::test]
async fn the_rest_of_a_long_stream_is_read_while_the_first_read_runs_if_the_store_tells_its_version_first()
 {
    let deposits = 3_000;
    for parallel in [1, 2] {
        let store = Arc::new(Observed {
            version_first: true,
            ..Observed::new(0)
        });
        long_account(store.as_ref(), "long", deposits).await;
        let accounts =
            CommandHandler::<Account>::new(store.clone()).with_load_parallelism(parallel);
        let (state, version) = accounts.load("long").await.unwrap();
        assert_eq!((version, state.events), (deposits + 1, deposits + 1));
        assert_eq!(state.balance, deposits * (deposits + 1) / 2);
        let most = store.most.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            most,
            parallel + 1,
            "the first read and the range reads at once"
        );
    }
}

#[tokio::test]
async fn a_store_that_hides_events_loads_what_it_returns_in_order_at_any_parallelism() {
    // A store that hides every 700th event: ranges come back short, and the load must apply
    // exactly what the store returns, in order, however many ranges are read at once.
    let deposits = 6_000;
    let store = Arc::new(Observed::new(700));
    long_account(store.as_ref(), "gappy", deposits).await;
    let parallel = CommandHandler::<Account>::new(store.clone());
    let in_order = CommandHandler::<Account>::new(store.clone()).with_load_parallelism(1);
    let (a, va) = parallel.load("gappy").await.unwrap();
    let (b, vb) = in_order.load("gappy").await.unwrap();
    let hidden = (deposits + 1) / 700;
    assert_eq!((va, a.events), (deposits + 1, deposits + 1 - hidden));
    assert_eq!((vb, &b), (va, &a));
}

#[tokio::test]
async fn a_load_racing_appends_sees_a_whole_prefix_of_the_stream() {
    let store = Arc::new(InMemoryEventStore::new());
    long_account(store.as_ref(), "busy", 5_000).await;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let accounts = CommandHandler::<Account>::new(store);
            for _ in 0..100 {
                accounts
                    .execute("busy", &AccountCommand::Deposit { amount: 1 })
                    .await
                    .unwrap();
            }
        })
    };
    let accounts = CommandHandler::<Account>::new(store.clone());
    let mut last = 0;
    while !writer.is_finished() {
        let (state, version) = accounts.load("busy").await.unwrap();
        // Every event up to the version it reports, and no other, went into the state.
        assert_eq!(state.events, version);
        assert_eq!(state.balance, 5_000 * 5_001 / 2 + (version - 5_001));
        assert!(version >= last);
        last = version;
    }
    writer.await.unwrap();
    assert_eq!(accounts.load("busy").await.unwrap().1, 5_101);
}
