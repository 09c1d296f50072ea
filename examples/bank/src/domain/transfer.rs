//! The transfer aggregate: the record of one transfer's progress, driven by the process
//! manager in [`crate::TransferProcess`].

use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::Amount;

/// What can be asked of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferCommand {
    /// Starts a transfer of `amount` from `from` to `to`.
    Start {
        /// The source account.
        from: Uuid,
        /// The target account.
        to: Uuid,
        /// How much.
        amount: Amount,
    },
    /// Records that the source was debited.
    RecordDebit,
    /// Records at once that the source was debited and the target credited: the transfer is
    /// complete (the process manager takes both steps before it records them).
    RecordDebitAndCredit,
    /// Records at once that the source was debited and the target could not be credited; the
    /// source is to be refunded.
    RecordDebitNotCredited {
        /// Why.
        reason: String,
    },
    /// Records that the target was credited: the transfer is complete.
    Complete,
    /// Records that the target could not be credited; the source is to be refunded.
    RecordCreditFailure {
        /// Why.
        reason: String,
    },
    /// Ends the transfer as failed.
    Fail {
        /// Why.
        reason: String,
    },
}

/// What happened to a transfer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferEvent {
    /// The transfer was asked for.
    Started {
        /// The source account.
        from: Uuid,
        /// The target account.
        to: Uuid,
        /// How much.
        amount: u64,
    },
    /// The source was debited: the transfer holds the money.
    Debited,
    /// The target was credited.
    Completed,
    /// The target could not be credited (closed or missing).
    CreditFailed {
        /// Why.
        reason: String,
    },
    /// The transfer ended without moving money (after a refund when it had debited).
    Failed {
        /// Why.
        reason: String,
        /// Whether the source got its money back.
        refunded: bool,
    },
}

impl DomainEvent for TransferEvent {}

/// Where a transfer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferStatus {
    /// Not started.
    #[default]
    New,
    /// Started, source not yet debited.
    Started,
    /// Source debited, target not yet credited.
    Debited,
    /// Target not creditable, refund pending.
    CreditFailed,
    /// Done: the money moved.
    Completed,
    /// Done: the money did not move.
    Failed,
}

/// Why a transfer refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Start of a transfer that exists.
    #[error("transfer already started")]
    AlreadyStarted,
    /// Source and target are the same account.
    #[error("cannot transfer to the same account")]
    SameAccount,
    /// A step that does not follow from the current status.
    #[error("transfer is {status:?}, cannot {step}")]
    OutOfOrder {
        /// The current status.
        status: TransferStatus,
        /// The step refused.
        step: &'static str,
    },
}

/// The transfer's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Where it is.
    pub status: TransferStatus,
    /// The source account.
    pub from: Uuid,
    /// The target account.
    pub to: Uuid,
    /// How much.
    pub amount: u64,
    /// Why the target could not be credited, once it could not.
    #[serde(default)]
    pub failure: Option<String>,
}

impl Aggregate for Transfer {
    const TYPE: &'static str = "transfer";
    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;

    fn handle(&self, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        use TransferCommand as C;
        use TransferEvent as E;
        use TransferStatus as S;
        let out_of_order = |step| {
            Err(TransferError::OutOfOrder {
                status: self.status,
                step,
            })
        };
        // NOTE: the two steps recorded at once: one append, so one commit, on the way of
        // every transfer.
        match (command, self.status) {
            (C::RecordDebitAndCredit, S::Started) => return Ok(vec![E::Debited, E::Completed]),
            (C::RecordDebitNotCredited { reason }, S::Started) => {
                let reason = reason.clone();
                return Ok(vec![E::Debited, E::CreditFailed { reason }]);
            }
            (C::RecordDebitAndCredit | C::RecordDebitNotCredited { .. }, _) => {
                return out_of_order("record a debit and its credit");
            }
            _ => {}
        }
        let event = match (command, self.status) {
            (C::Start { .. }, s) if s != S::New => return Err(TransferError::AlreadyStarted),
            (C::Start { from, to, .. }, _) if from == to => return Err(TransferError::SameAccount),
            (C::Start { from, to, amount }, _) => E::Started {
                from: *from,
                to: *to,
                amount: amount.get(),
            },
            (C::RecordDebit, S::Started) => E::Debited,
            (C::RecordDebit, _) => return out_of_order("record a debit"),
            (C::Complete, S::Debited) => E::Completed,
            (C::Complete, _) => return out_of_order("complete"),
            (C::RecordCreditFailure { reason }, S::Debited) => E::CreditFailed {
                reason: reason.clone(),
            },
            (C::RecordCreditFailure { .. }, _) => return out_of_order("record a credit failure"),
            (C::Fail { reason }, S::Started) => E::Failed {
                reason: reason.clone(),
                refunded: false,
            },
            (C::Fail { reason }, S::CreditFailed) => E::Failed {
                reason: reason.clone(),
                refunded: true,
            },
            (C::Fail { .. }, _) => return out_of_order("fail"),
            (C::RecordDebitAndCredit | C::RecordDebitNotCredited { .. }, _) => {
                unreachable!("handled above")
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &TransferEvent) {
        self.status = match event {
            TransferEvent::Started { from, to, amount } => {
                (self.from, self.to, self.amount) = (*from, *to, *amount);
                TransferStatus::Started
            }
            TransferEvent::Debited => TransferStatus::Debited,
            TransferEvent::Completed => TransferStatus::Completed,
            TransferEvent::CreditFailed { reason } => {
                self.failure = Some(reason.clone());
                TransferStatus::CreditFailed
            }
            TransferEvent::Failed { .. } => TransferStatus::Failed,
        };
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::testkit::AggregateTest;

    use super::*;

    type T = AggregateTest<Transfer>;
    use TransferCommand as C;
    use TransferEvent as E;

    fn start(from: u128, to: u128) -> C {
        let (from, to) = (Uuid::from_u128(from), Uuid::from_u128(to));
        C::Start {
            from,
            to,
            amount: Amount::new(10).unwrap(),
        }
    }
    fn started() -> E {
        let (from, to) = (Uuid::from_u128(1), Uuid::from_u128(2));
        E::Started {
            from,
            to,
            amount: 10,
        }
    }
    fn credit_failed() -> E {
        E::CreditFailed {
            reason: "closed".into(),
        }
    }
    fn out_of_order(e: &TransferError) -> bool {
        matches!(e, TransferError::OutOfOrder { .. })
    }

    #[test]
    fn happy_path() {
        let s = T::given_nothing().when(start(1, 2)).then([started()]);
        assert_eq!((s.status, s.amount), (TransferStatus::Started, 10));
        T::given([started()])
            .when(start(1, 2))
            .then_error(|e| *e == TransferError::AlreadyStarted);
        T::given([started()])
            .when(C::RecordDebit)
            .then([E::Debited]);
        let s = T::given([started(), E::Debited])
            .when(C::Complete)
            .then([E::Completed]);
        assert_eq!(s.status, TransferStatus::Completed);
        let s = T::given([started()])
            .when(C::RecordDebitAndCredit)
            .then([E::Debited, E::Completed]);
        assert_eq!(s.status, TransferStatus::Completed);
        let reason = "closed".to_owned();
        let s = T::given([started()])
            .when(C::RecordDebitNotCredited { reason })
            .then([E::Debited, credit_failed()]);
        assert_eq!(s.status, TransferStatus::CreditFailed);
        T::given([started(), E::Debited])
            .when(C::RecordDebitAndCredit)
            .then_error(out_of_order);
    }

    #[test]
    fn no_transfer_to_self() {
        T::given_nothing()
            .when(start(1, 1))
            .then_error(|e| *e == TransferError::SameAccount);
    }

    #[test]
    fn failure_before_and_after_the_debit() {
        let reason = || "closed".to_owned();
        let s = T::given([started()])
            .when(C::Fail { reason: reason() })
            .then([E::Failed {
                reason: reason(),
                refunded: false,
            }]);
        assert_eq!(s.status, TransferStatus::Failed);
        T::given([started(), E::Debited])
            .when(C::RecordCreditFailure { reason: reason() })
            .then([credit_failed()]);
        T::given([started(), E::Debited, credit_failed()])
            .when(C::Fail { reason: reason() })
            .then([E::Failed {
                reason: reason(),
                refunded: true,
            }]);
    }

    #[test]
    fn steps_out_of_order_are_refused() {
        T::given_nothing()
            .when(C::RecordDebit)
            .then_error(out_of_order);
        T::given([started()])
            .when(C::Complete)
            .then_error(out_of_order);
        // Once debited, failing needs a refund first.
        let fail = C::Fail { reason: "x".into() };
        T::given([started(), E::Debited])
            .when(fail)
            .then_error(out_of_order);
        let credit_failure = C::RecordCreditFailure { reason: "x".into() };
        T::given([started(), E::Debited, E::Completed])
            .when(credit_failure)
            .then_error(out_of_order);
    }
}
