//! The transfer process manager: start -> debit source -> credit target -> completed, or a
//! refund and failed when the target cannot take the money.
//!
//! It is a projector over the transfer streams. Each command it issues has an id derived from
//! the event that triggered it ([`command_id_for`]), so a redelivered event never repeats an
//! effect; and it acts only if the reloaded transfer still waits for that step, so an outcome
//! once recorded (a refused credit, say) is never decided again.

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
        let id = &event.stream.id;
        let transfer_id: Uuid = id.parse()?;
        let (transfer, _) = self.transfers.load(id).await?;
        let (from, to) = (transfer.from.to_string(), transfer.to.to_string());
        let opts = |step: &str| CommandOptions {
            command_id: Some(command_id_for(event.event_id, step)),
            fingerprint: None,
            metadata: Metadata {
                correlation_id: Some(transfer_id),
                causation_id: Some(event.event_id),
                ..Metadata::default()
            },
        };
        let amount = || Amount::new(transfer.amount).map_err(BoxError::from);
        let (next, step) = match (payload, transfer.status) {
            (TransferEvent::Started { .. }, TransferStatus::Started) => {
                let amount = amount()?;
                let debit = AccountCommand::DebitForTransfer {
                    transfer_id,
                    amount,
                };
                let next = match self
                    .accounts
                    .execute_with(&from, &debit, opts("debit"))
                    .await
                {
                    Ok(_) => TransferCommand::RecordDebit,
                    Err(CommandError::Rejected(e)) => TransferCommand::Fail {
                        reason: e.to_string(),
                    },
                    Err(e) => return Err(e.into()),
                };
                (next, "debit-recorded")
            }
            (TransferEvent::Debited, TransferStatus::Debited) => {
                let amount = amount()?;
                let credit = AccountCommand::CreditFromTransfer {
                    transfer_id,
                    amount,
                };
                let next = match self
                    .accounts
                    .execute_with(&to, &credit, opts("credit"))
                    .await
                {
                    Ok(_) => TransferCommand::Complete,
                    Err(CommandError::Rejected(e)) => TransferCommand::RecordCreditFailure {
                        reason: format!("target {e}"),
                    },
                    Err(e) => return Err(e.into()),
                };
                (next, "credit-recorded")
            }
            (TransferEvent::CreditFailed { reason }, TransferStatus::CreditFailed) => {
                // NOTE: a refund cannot be refused: the source cannot close while this
                // transfer holds its money. If it is, the event is retried, then parked.
                let refund = AccountCommand::RefundTransfer { transfer_id };
                self.accounts
                    .execute_with(&from, &refund, opts("refund"))
                    .await?;
                let reason = reason.clone();
                (TransferCommand::Fail { reason }, "refund-recorded")
            }
            (TransferEvent::Completed, _) => {
                let settle = AccountCommand::SettleTransfer { transfer_id };
                self.accounts
                    .execute_with(&from, &settle, opts("settle"))
                    .await?;
                return Ok(());
            }
            // Redelivered: the transfer has moved past this step already.
            _ => return Ok(()),
        };
        match self.transfers.execute_with(id, &next, opts(step)).await {
            // A refusal: an earlier delivery recorded the step.
            Ok(_) | Err(CommandError::Rejected(_)) => Ok(()),
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
