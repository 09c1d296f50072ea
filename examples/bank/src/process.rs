//! The transfer process manager: start -> debit source -> credit target -> completed, or a
//! refund and failed when the target cannot take the money.
//!
//! It is a projector over the transfer streams. Each step it takes is a command whose id is
//! derived from the event that triggered it ([`command_id_for`]), so a redelivered event (after
//! a crash between the command and the checkpoint) never repeats an effect. Before acting it
//! reloads the transfer and acts only if the transfer still waits for that step: an outcome
//! once recorded (a refused credit, say) is never re-decided on redelivery.

use std::sync::Arc;

use cqrs_core::{
    BoxError, CommandError, CommandHandler, CommandOptions, Metadata, Projector, RecordedEvent,
    async_trait, command_id_for,
};
use uuid::Uuid;

use crate::domain::account::{Account, AccountCommand};
use crate::domain::money::Amount;
use crate::domain::transfer::{Transfer, TransferCommand, TransferEvent, TransferStatus};

/// The name of the process manager's subscription.
pub const TRANSFER_PROCESS: &str = "transfer_process";

/// Drives transfers to their end. Run it as a subscriber of the runner.
#[derive(Debug, Clone)]
pub struct TransferProcess {
    accounts: Arc<CommandHandler<Account>>,
    transfers: Arc<CommandHandler<Transfer>>,
}

impl TransferProcess {
    /// A process manager issuing commands through these handlers.
    pub fn new(
        accounts: Arc<CommandHandler<Account>>,
        transfers: Arc<CommandHandler<Transfer>>,
    ) -> Self {
        TransferProcess {
            accounts,
            transfers,
        }
    }

    async fn step(&self, event: &RecordedEvent, payload: &TransferEvent) -> Result<(), BoxError> {
        let transfer_id = &event.stream.id;
        let tid: Uuid = transfer_id.parse()?;
        let (transfer, _) = self.transfers.load(transfer_id).await?;
        let opts = |step: &str| {
            let mut o = CommandOptions::with_id(command_id_for(event.event_id, step));
            o.metadata = Metadata {
                correlation_id: Some(tid),
                causation_id: Some(event.event_id),
                ..Default::default()
            };
            o
        };
        let amount = || Amount::new(transfer.amount).map_err(BoxError::from);
        match (payload, transfer.status) {
            (TransferEvent::Started { .. }, TransferStatus::Started) => {
                let debit = AccountCommand::DebitForTransfer {
                    transfer_id: tid,
                    amount: amount()?,
                };
                let next = match self
                    .accounts
                    .execute_with(&transfer.from.to_string(), &debit, opts("debit"))
                    .await
                {
                    Ok(_) => TransferCommand::RecordDebit,
                    Err(CommandError::Rejected(e)) => TransferCommand::Fail {
                        reason: e.to_string(),
                    },
                    Err(e) => return Err(e.into()),
                };
                self.record(transfer_id, &next, opts("debit-recorded"))
                    .await
            }
            (TransferEvent::Debited, TransferStatus::Debited) => {
                let credit = AccountCommand::CreditFromTransfer {
                    transfer_id: tid,
                    amount: amount()?,
                };
                let next = match self
                    .accounts
                    .execute_with(&transfer.to.to_string(), &credit, opts("credit"))
                    .await
                {
                    Ok(_) => TransferCommand::Complete,
                    Err(CommandError::Rejected(e)) => TransferCommand::RecordCreditFailure {
                        reason: format!("target {}", e),
                    },
                    Err(e) => return Err(e.into()),
                };
                self.record(transfer_id, &next, opts("credit-recorded"))
                    .await
            }
            (TransferEvent::CreditFailed { reason }, TransferStatus::CreditFailed) => {
                let refund = AccountCommand::RefundTransfer { transfer_id: tid };
                // NOTE: a refund cannot be refused: the source cannot close while this
                // transfer holds its money. If it is, the event is retried, then parked.
                self.accounts
                    .execute_with(&transfer.from.to_string(), &refund, opts("refund"))
                    .await?;
                self.record(
                    transfer_id,
                    &TransferCommand::Fail {
                        reason: reason.clone(),
                    },
                    opts("refund-recorded"),
                )
                .await
            }
            (TransferEvent::Completed, _) => {
                let settle = AccountCommand::SettleTransfer { transfer_id: tid };
                self.accounts
                    .execute_with(&transfer.from.to_string(), &settle, opts("settle"))
                    .await?;
                Ok(())
            }
            // Redelivered: the transfer has moved past this step already.
            _ => Ok(()),
        }
    }

    async fn record(
        &self,
        transfer_id: &str,
        command: &TransferCommand,
        opts: CommandOptions,
    ) -> Result<(), BoxError> {
        match self
            .transfers
            .execute_with(transfer_id, command, opts)
            .await
        {
            Ok(_) => Ok(()),
            // The step was recorded by an earlier delivery: nothing to do.
            Err(CommandError::Rejected(e)) => {
                tracing::debug!(transfer = transfer_id, error = %e, "transfer step already recorded");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Projector for TransferProcess {
    fn name(&self) -> &str {
        TRANSFER_PROCESS
    }

    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        match event.decode_for::<Transfer>()? {
            Some(e) => self.step(event, &e.payload).await,
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::{AllStreamReader, InMemoryEventStore, StreamId, StreamReaderExt};

    use super::*;
    use crate::domain::transfer::TransferEvent;

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
            self.accounts
                .execute(&id.to_string(), &AccountCommand::Open { owner: "o".into() })
                .await
                .unwrap();
            if balance > 0 {
                let amount = Amount::new(balance).unwrap();
                self.accounts
                    .execute(&id.to_string(), &AccountCommand::Deposit { amount })
                    .await
                    .unwrap();
            }
            id
        }

        async fn balance(&self, id: Uuid) -> u64 {
            self.accounts.load(&id.to_string()).await.unwrap().0.balance
        }

        /// Feeds every transfer event to the process manager until nothing new happens,
        /// delivering each event twice to model redelivery.
        async fn settle(&self) {
            let mut seen = 0;
            loop {
                let events = self
                    .store
                    .read_all(cqrs_core::Cursor::new(0, seen), 1000)
                    .await
                    .unwrap();
                if events.is_empty() {
                    return;
                }
                for e in &events {
                    self.pm.handle(e).await.unwrap();
                    self.pm.handle(e).await.unwrap();
                    seen = e.position();
                }
            }
        }

        async fn transfer(&self, from: Uuid, to: Uuid, amount: u64) -> Transfer {
            let tid = Uuid::new_v4();
            let start = TransferCommand::Start {
                from,
                to,
                amount: Amount::new(amount).unwrap(),
            };
            self.transfers
                .execute(&tid.to_string(), &start)
                .await
                .unwrap();
            self.settle().await;
            self.transfers.load(&tid.to_string()).await.unwrap().0
        }

        async fn transfer_events(&self) -> Vec<TransferEvent> {
            let mut out = Vec::new();
            for e in self
                .store
                .read_all(cqrs_core::Cursor::START, 10_000)
                .await
                .unwrap()
            {
                if let Some(t) = e.decode_for::<Transfer>().unwrap() {
                    out.push(t.payload);
                }
            }
            out
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
        let n = w
            .store
            .read_stream(&StreamId::new("account", a.to_string()), 1, 100)
            .await
            .unwrap()
            .len();
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
        assert_eq!(t.status, TransferStatus::Failed);
        assert_eq!(w.balance(a).await, 100);
        assert!(matches!(
            w.transfer_events().await.last(),
            Some(TransferEvent::Failed { refunded: true, .. })
        ));
    }

    #[tokio::test]
    async fn a_missing_target_gets_the_source_refunded() {
        let w = world();
        let a = w.account(1, 100).await;
        let t = w.transfer(a, Uuid::from_u128(99), 100).await;
        assert_eq!(t.status, TransferStatus::Failed);
        assert_eq!(w.balance(a).await, 100);
    }

    #[tokio::test]
    async fn insufficient_funds_fail_without_a_refund() {
        let w = world();
        let (a, b) = (w.account(1, 10).await, w.account(2, 0).await);
        let t = w.transfer(a, b, 11).await;
        assert_eq!(t.status, TransferStatus::Failed);
        assert_eq!((w.balance(a).await, w.balance(b).await), (10, 0));
        assert!(matches!(
            w.transfer_events().await.last(),
            Some(TransferEvent::Failed {
                refunded: false,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_refused_credit_is_not_redecided_when_the_target_appears_later() {
        let w = world();
        let a = w.account(1, 100).await;
        let tid = Uuid::new_v4();
        let missing = Uuid::from_u128(5);
        let start = TransferCommand::Start {
            from: a,
            to: missing,
            amount: Amount::new(40).unwrap(),
        };
        w.transfers.execute(&tid.to_string(), &start).await.unwrap();
        w.settle().await;
        // The target opens, then every event is delivered again (a lost checkpoint).
        w.account(5, 0).await;
        for e in w
            .store
            .read_all(cqrs_core::Cursor::START, 1000)
            .await
            .unwrap()
        {
            w.pm.handle(&e).await.unwrap();
        }
        assert_eq!((w.balance(a).await, w.balance(missing).await), (100, 0));
    }
}
