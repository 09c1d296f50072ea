//! The transfer process manager fed by hand on the in-memory store, every event delivered
//! twice: each transfer ends once, with a refund where the target cannot take the money.

use std::sync::Arc;

use bank::{
    Account, AccountCommand, Amount, Transfer, TransferCommand, TransferEvent, TransferProcess,
    TransferStatus,
};
use cqrs_core::{
    AllStreamReader, CommandHandler, Cursor, InMemoryEventStore, ProcessManager, RecordedEvent,
    StreamId, StreamReaderExt,
};
use uuid::Uuid;

/// A store, its handlers and the process manager, fed by hand.
struct World {
    store: Arc<InMemoryEventStore>,
    accounts: Arc<CommandHandler<Account>>,
    transfers: Arc<CommandHandler<Transfer>>,
    pm: TransferProcess,
}

fn world() -> World {
    let store = Arc::new(InMemoryEventStore::new());
    let accounts = Arc::new(CommandHandler::<Account>::new(store.clone()));
    let transfers = Arc::new(CommandHandler::<Transfer>::new(store.clone()));
    let pm = TransferProcess::new(accounts.clone(), transfers.clone());
    World {
        store,
        accounts,
        transfers,
        pm,
    }
}

impl World {
    async fn account(&self, id: u128, balance: u64) -> Uuid {
        let id = Uuid::from_u128(id);
        let open = AccountCommand::Open { owner: "o".into() };
        self.accounts.execute(&id.to_string(), &open).await.unwrap();
        if let Ok(amount) = Amount::new(balance) {
            let deposit = AccountCommand::Deposit { amount };
            self.accounts
                .execute(&id.to_string(), &deposit)
                .await
                .unwrap();
        }
        id
    }

    async fn balance(&self, id: Uuid) -> u64 {
        self.accounts.load(&id.to_string()).await.unwrap().0.balance
    }

    async fn events(&self, after: u64) -> Vec<RecordedEvent> {
        self.store
            .read_all(Cursor::new(0, after), 10_000)
            .await
            .unwrap()
    }

    /// Feeds every event to the process manager until nothing new happens, each twice to
    /// model redelivery.
    async fn settle(&self) {
        let mut seen = 0;
        loop {
            let events = self.events(seen).await;
            if events.is_empty() {
                return;
            }
            for e in &events {
                self.deliver(e).await;
                self.deliver(e).await;
                seen = e.position();
            }
        }
    }

    /// Hands `event` to the process manager, if it is one of its instances'.
    async fn deliver(&self, event: &RecordedEvent) {
        if let Some(instance) = self.pm.instance(event) {
            self.pm.handle(&instance, event).await.unwrap();
        }
    }

    async fn start(&self, from: Uuid, to: Uuid, amount: u64) -> Uuid {
        let tid = Uuid::new_v4();
        let amount = Amount::new(amount).unwrap();
        let start = TransferCommand::Start { from, to, amount };
        self.transfers
            .execute(&tid.to_string(), &start)
            .await
            .unwrap();
        tid
    }

    async fn transfer(&self, from: Uuid, to: Uuid, amount: u64) -> Transfer {
        let tid = self.start(from, to, amount).await;
        self.settle().await;
        self.transfers.load(&tid.to_string()).await.unwrap().0
    }

    async fn last_transfer_event(&self) -> Option<TransferEvent> {
        let events = self.events(0).await;
        let decoded = events
            .iter()
            .filter_map(|e| e.decode_for::<Transfer>().unwrap());
        decoded.map(|e| e.payload).next_back()
    }
}

#[tokio::test]
async fn a_transfer_completes_once_even_when_redelivered() {
    let w = world();
    let (a, b) = (w.account(1, 100).await, w.account(2, 0).await);
    let t = w.transfer(a, b, 30).await;
    assert_eq!(t.status, TransferStatus::Completed);
    assert_eq!((w.balance(a).await, w.balance(b).await), (70, 30));
    // The source no longer waits for the transfer: it can empty and close.
    let (src, _) = w.accounts.load(&a.to_string()).await.unwrap();
    assert!(src.outgoing.is_empty());
    let stream = StreamId::new("account", a.to_string());
    let n = w.store.read_stream(&stream, 1, 100).await.unwrap().len();
    assert_eq!(n, 4, "opened, deposited, debited, settled: once each");
}

#[tokio::test]
async fn a_closed_target_gets_the_source_refunded() {
    let w = world();
    let (a, b) = (w.account(1, 100).await, w.account(2, 0).await);
    w.accounts
        .execute(&b.to_string(), &AccountCommand::Close)
        .await
        .unwrap();
    let t = w.transfer(a, b, 30).await;
    assert_eq!(
        (t.status, w.balance(a).await),
        (TransferStatus::Failed, 100)
    );
    let last = w.last_transfer_event().await;
    assert!(matches!(
        last,
        Some(TransferEvent::Failed { refunded: true, .. })
    ));
}

#[tokio::test]
async fn a_missing_target_gets_the_source_refunded() {
    let w = world();
    let a = w.account(1, 100).await;
    let t = w.transfer(a, Uuid::from_u128(99), 100).await;
    assert_eq!(
        (t.status, w.balance(a).await),
        (TransferStatus::Failed, 100)
    );
}

#[tokio::test]
async fn insufficient_funds_fail_without_a_refund() {
    let w = world();
    let (a, b) = (w.account(1, 10).await, w.account(2, 0).await);
    let t = w.transfer(a, b, 11).await;
    assert_eq!(t.status, TransferStatus::Failed);
    assert_eq!((w.balance(a).await, w.balance(b).await), (10, 0));
    let last = w.last_transfer_event().await;
    assert!(matches!(
        last,
        Some(TransferEvent::Failed {
            refunded: false,
            ..
        })
    ));
}

#[tokio::test]
async fn a_refused_credit_is_not_redecided_when_the_target_appears_later() {
    let w = world();
    let (a, missing) = (w.account(1, 100).await, Uuid::from_u128(5));
    w.start(a, missing, 40).await;
    w.settle().await;
    // The target opens, then every event is delivered again (a lost checkpoint).
    w.account(5, 0).await;
    for e in w.events(0).await {
        w.deliver(&e).await;
    }
    assert_eq!((w.balance(a).await, w.balance(missing).await), (100, 0));
}
