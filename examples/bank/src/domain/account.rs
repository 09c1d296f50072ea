//! The account aggregate: open, deposit, withdraw without overdraft, close at zero.
//!
//! Transfers move money in two steps on two streams: the source is debited (the money is then
//! held by the transfer), then the target is credited, or the source refunded. An account with
//! outgoing transfers in flight cannot close, so that a refund always has somewhere to go.

use std::collections::BTreeMap;

use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::money::{Amount, MAX_BALANCE, format_minor};

/// The longest owner name accepted, in characters.
pub const MAX_OWNER_LEN: usize = 200;

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Opens the account for `owner`.
    Open {
        /// The owner's name (non-blank, at most [`MAX_OWNER_LEN`] characters).
        owner: String,
    },
    /// Puts money in.
    Deposit {
        /// How much.
        amount: Amount,
    },
    /// Takes money out, never below zero.
    Withdraw {
        /// How much.
        amount: Amount,
    },
    /// Closes the account; only at a zero balance with no outgoing transfer in flight.
    Close,
    /// Takes the money of an outgoing transfer (process manager step 1).
    DebitForTransfer {
        /// The transfer.
        transfer_id: Uuid,
        /// How much.
        amount: Amount,
    },
    /// Receives the money of an incoming transfer (process manager step 2).
    CreditFromTransfer {
        /// The transfer.
        transfer_id: Uuid,
        /// How much.
        amount: Amount,
    },
    /// Gives back the money of an outgoing transfer that could not be credited.
    RefundTransfer {
        /// The transfer.
        transfer_id: Uuid,
    },
    /// Forgets an outgoing transfer once it has completed.
    SettleTransfer {
        /// The transfer.
        transfer_id: Uuid,
    },
}

/// What happened to an account. Money events carry the balance after them, so that read
/// models (the statement above all) need no arithmetic of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    Opened {
        /// The owner's name.
        owner: String,
    },
    /// Money was deposited.
    Deposited {
        /// How much.
        amount: u64,
        /// The balance after.
        balance: u64,
    },
    /// Money was withdrawn.
    Withdrawn {
        /// How much.
        amount: u64,
        /// The balance after.
        balance: u64,
    },
    /// Money left for a transfer; the transfer holds it until credited or refunded.
    TransferDebited {
        /// The transfer.
        transfer_id: Uuid,
        /// How much.
        amount: u64,
        /// The balance after.
        balance: u64,
    },
    /// Money arrived from a transfer.
    TransferCredited {
        /// The transfer.
        transfer_id: Uuid,
        /// How much.
        amount: u64,
        /// The balance after.
        balance: u64,
    },
    /// The money of a failed transfer came back.
    TransferRefunded {
        /// The transfer.
        transfer_id: Uuid,
        /// How much.
        amount: u64,
        /// The balance after.
        balance: u64,
    },
    /// An outgoing transfer completed; the account no longer waits for it.
    TransferSettled {
        /// The transfer.
        transfer_id: Uuid,
    },
    /// The account was closed.
    Closed,
}

impl DomainEvent for AccountEvent {}

/// Why an account refuses a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// The account does not exist (never opened).
    #[error("account not found")]
    NotFound,
    /// Open on an account that already exists.
    #[error("account already exists")]
    AlreadyOpen,
    /// The account is closed.
    #[error("account is closed")]
    Closed,
    /// The owner name is blank or too long.
    #[error("owner must be 1 to {MAX_OWNER_LEN} characters, not blank")]
    InvalidOwner,
    /// A withdrawal or debit larger than the balance.
    #[error(
        "insufficient funds: balance {}, requested {}",
        format_minor(*balance as i128),
        format_minor(*requested as i128)
    )]
    InsufficientFunds {
        /// The balance.
        balance: u64,
        /// The amount asked for.
        requested: u64,
    },
    /// A deposit or credit that would take the balance past [`MAX_BALANCE`].
    #[error("balance limit exceeded")]
    BalanceLimit,
    /// Close with money left.
    #[error("balance is not zero: {}", format_minor(*balance as i128))]
    BalanceNotZero {
        /// The balance.
        balance: u64,
    },
    /// Close while outgoing transfers still hold money that may come back.
    #[error("{0} outgoing transfer(s) in flight")]
    TransfersInFlight(usize),
    /// A refund of a transfer this account is not waiting for.
    #[error("no outgoing transfer {0} in flight")]
    UnknownTransfer(Uuid),
}

/// Where an account is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountStatus {
    /// Never opened.
    #[default]
    New,
    /// Open.
    Open,
    /// Closed for good.
    Closed,
}

/// The account's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// Where it is in its life.
    pub status: AccountStatus,
    /// The owner's name.
    pub owner: String,
    /// Available money in minor units.
    pub balance: u64,
    /// Outgoing transfers debited but not yet settled or refunded: transfer id -> amount.
    pub outgoing: BTreeMap<Uuid, u64>,
}

impl Account {
    fn require_open(&self) -> Result<(), AccountError> {
        match self.status {
            AccountStatus::New => Err(AccountError::NotFound),
            AccountStatus::Closed => Err(AccountError::Closed),
            AccountStatus::Open => Ok(()),
        }
    }

    fn plus(&self, amount: u64) -> Result<u64, AccountError> {
        self.balance
            .checked_add(amount)
            .filter(|b| *b <= MAX_BALANCE)
            .ok_or(AccountError::BalanceLimit)
    }

    fn minus(&self, amount: u64) -> Result<u64, AccountError> {
        self.balance
            .checked_sub(amount)
            .ok_or(AccountError::InsufficientFunds {
                balance: self.balance,
                requested: amount,
            })
    }
}

/// Whether `owner` is an acceptable owner name.
pub fn valid_owner(owner: &str) -> bool {
    !owner.trim().is_empty() && owner.chars().count() <= MAX_OWNER_LEN
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        use AccountEvent as E;
        if let C::Open { owner } = command {
            if self.status != AccountStatus::New {
                return Err(AccountError::AlreadyOpen);
            }
            if !valid_owner(owner) {
                return Err(AccountError::InvalidOwner);
            }
            return Ok(vec![E::Opened {
                owner: owner.clone(),
            }]);
        }
        // NOTE: a refund must land even on an account that could not otherwise be used, but
        // an account with a transfer in flight cannot close, so it is always open here.
        self.require_open()?;
        let event = match command {
            C::Open { .. } => unreachable!("handled above"),
            C::Deposit { amount } => E::Deposited {
                amount: amount.get(),
                balance: self.plus(amount.get())?,
            },
            C::Withdraw { amount } => E::Withdrawn {
                amount: amount.get(),
                balance: self.minus(amount.get())?,
            },
            C::Close if self.balance != 0 => {
                return Err(AccountError::BalanceNotZero {
                    balance: self.balance,
                });
            }
            C::Close if !self.outgoing.is_empty() => {
                return Err(AccountError::TransfersInFlight(self.outgoing.len()));
            }
            C::Close => E::Closed,
            C::DebitForTransfer { transfer_id, .. } if self.outgoing.contains_key(transfer_id) => {
                return Ok(vec![]);
            }
            C::DebitForTransfer {
                transfer_id,
                amount,
            } => E::TransferDebited {
                transfer_id: *transfer_id,
                amount: amount.get(),
                balance: self.minus(amount.get())?,
            },
            C::CreditFromTransfer {
                transfer_id,
                amount,
            } => E::TransferCredited {
                transfer_id: *transfer_id,
                amount: amount.get(),
                balance: self.plus(amount.get())?,
            },
            C::RefundTransfer { transfer_id } => {
                let amount = *self
                    .outgoing
                    .get(transfer_id)
                    .ok_or(AccountError::UnknownTransfer(*transfer_id))?;
                E::TransferRefunded {
                    transfer_id: *transfer_id,
                    amount,
                    balance: self.plus(amount)?,
                }
            }
            C::SettleTransfer { transfer_id } if !self.outgoing.contains_key(transfer_id) => {
                return Ok(vec![]);
            }
            C::SettleTransfer { transfer_id } => E::TransferSettled {
                transfer_id: *transfer_id,
            },
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { owner } => {
                self.status = AccountStatus::Open;
                self.owner = owner.clone();
            }
            AccountEvent::Deposited { balance, .. }
            | AccountEvent::Withdrawn { balance, .. }
            | AccountEvent::TransferCredited { balance, .. } => self.balance = *balance,
            AccountEvent::TransferDebited {
                transfer_id,
                amount,
                balance,
            } => {
                self.balance = *balance;
                self.outgoing.insert(*transfer_id, *amount);
            }
            AccountEvent::TransferRefunded {
                transfer_id,
                balance,
                ..
            } => {
                self.balance = *balance;
                self.outgoing.remove(transfer_id);
            }
            AccountEvent::TransferSettled { transfer_id } => {
                self.outgoing.remove(transfer_id);
            }
            AccountEvent::Closed => self.status = AccountStatus::Closed,
        }
    }
}

#[cfg(test)]
#[path = "account_tests.rs"]
mod tests;
