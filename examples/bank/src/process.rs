//! The transfer process manager: start -> debit source -> credit target -> completed, or a
//! refund and failed when the target cannot take the money.
//!
//! It is a [`ProcessManager`] whose instances are the transfers: the runner hands it the events
//! of many transfers at once, those of one transfer in order. Its state is the transfer
//! aggregate it drives: on an event it loads the transfer and takes every step the status
//! calls for, one after the other, without waiting for each step's event to come round (so a
//! transfer ends within one delivery). Each command's id derives from the transfer and the step
//! ([`command_id_for`]), so a redelivered event, a retry or a second process never repeats an
//! effect; and a step is taken only when the reloaded transfer still waits for it, so an
//! outcome once recorded (a refused credit, say) is never decided again.

use std::sync::Arc;

use cqrs_core::{
    BoxError, CommandError, CommandHandler, CommandOptions, Metadata, ProcessManager,
    RecordedEvent, async_trait, command_id_for,
};
use uuid::Uuid;

use crate::domain::account::{Account, AccountCommand};
use crate::domain::money::Amount;
use crate::domain::transfer::{Transfer, TransferCommand, TransferStatus};

/// The name of the process manager's subscription.
pub const TRANSFER_PROCESS: &str = "transfer_process";

/// Drives transfers to their end. Run it under the runner with [`cqrs_core::Process`].
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

    /// Takes every step transfer `id` waits for, from the state `transfer` at `version`.
    async fn drive(
        &self,
        id: &str,
        cause: Uuid,
        mut transfer: Transfer,
        mut version: u64,
    ) -> Result<(), BoxError> {
        let transfer_id: Uuid = id.parse()?;
        let (from, to) = (transfer.from.to_string(), transfer.to.to_string());
        // NOTE: ids from the transfer and the step, not from the event at hand: a step is
        // taken at most once per transfer whichever event (or delivery) leads to it.
        let opts = |step: &str| CommandOptions {
            command_id: Some(command_id_for(transfer_id, step)),
            fingerprint: None,
            metadata: Metadata {
                correlation_id: Some(transfer_id),
                causation_id: Some(cause),
                ..Metadata::default()
            },
        };
        loop {
            let amount = || Amount::new(transfer.amount).map_err(BoxError::from);
            let (next, step) = match transfer.status {
                TransferStatus::Started => {
                    let debit = AccountCommand::DebitForTransfer {
                        transfer_id,
                        amount: amount()?,
                    };
                    let refused = match self
                        .accounts
                        .execute_with(&from, &debit, opts("debit"))
                        .await
                    {
                        Ok(_) => None,
                        Err(CommandError::Rejected(e)) => Some(e.to_string()),
                        Err(e) => return Err(e.into()),
                    };
                    if let Some(reason) = refused {
                        (TransferCommand::Fail { reason }, "debit-recorded")
                    } else {
                        // NOTE: the credit follows at once, and the transfer records both in one
                        // append: a crash in between finds the transfer started, and the debit's
                        // and the credit's ids make their repeats no-ops.
                        let credit = AccountCommand::CreditFromTransfer {
                            transfer_id,
                            amount: amount()?,
                        };
                        let next = match self
                            .accounts
                            .execute_with(&to, &credit, opts("credit"))
                            .await
                        {
                            Ok(_) => TransferCommand::RecordDebitAndCredit,
                            Err(CommandError::Rejected(e)) => {
                                TransferCommand::RecordDebitNotCredited {
                                    reason: format!("target {e}"),
                                }
                            }
                            Err(e) => return Err(e.into()),
                        };
                        (next, "debit-and-credit-recorded")
                    }
                }
                TransferStatus::Debited => {
                    let credit = AccountCommand::CreditFromTransfer {
                        transfer_id,
                        amount: amount()?,
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
                TransferStatus::CreditFailed => {
                    // NOTE: a refund cannot be refused: the source cannot close while this
                    // transfer holds its money. If it is, the event is retried, then parked.
                    let refund = AccountCommand::RefundTransfer { transfer_id };
                    self.accounts
                        .execute_with(&from, &refund, opts("refund"))
                        .await?;
                    let reason = transfer.failure.clone().unwrap_or_default();
                    (TransferCommand::Fail { reason }, "refund-recorded")
                }
                TransferStatus::Completed => {
                    let settle = AccountCommand::SettleTransfer { transfer_id };
                    self.accounts
                        .execute_with(&from, &settle, opts("settle"))
                        .await?;
                    return Ok(());
                }
                TransferStatus::New | TransferStatus::Failed => return Ok(()),
            };
            match self.transfers.execute_with(id, &next, opts(step)).await {
                Ok(_) | Err(CommandError::Rejected(_)) => {}
                Err(e) => return Err(e.into()),
            }
            // NOTE: reloaded rather than predicted: an earlier delivery may have recorded
            // another outcome (a refusal then, say); the handler's cache makes it one read.
            let (t, v) = self.transfers.load(id).await?;
            if v == version {
                return Err(format!("transfer {id} did not move past {:?}", t.status).into());
            }
            (transfer, version) = (t, v);
        }
    }
}

#[async_trait]
impl ProcessManager for TransferProcess {
    fn name(&self) -> &str {
        TRANSFER_PROCESS
    }

    fn instance(&self, event: &RecordedEvent) -> Option<String> {
        (event.stream.category == <Transfer as cqrs_core::Aggregate>::TYPE)
            .then(|| event.stream.id.clone())
    }

    async fn handle(&self, instance: &str, event: &RecordedEvent) -> Result<(), BoxError> {
        let (transfer, version) = self.transfers.load(instance).await?;
        // NOTE: an event the transfer has moved past leaves the work to its latest event,
        // which comes later in the same instance's order.
        if event.stream_version < version {
            return Ok(());
        }
        self.drive(instance, event.event_id, transfer, version)
            .await
    }
}
