//! The service's errors, each with the HTTP status and the stable code the API reports.

use cqrs_core::CommandError;

use crate::domain::account::AccountError;
use crate::domain::transfer::TransferError;

/// Why a request to the bank failed. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BankError {
    /// The request was refused: a field is invalid (400), the thing exists already or
    /// concurrent updates outlasted the retries (409), a business rule said no (422). Also the
    /// refusal remembered for an idempotency key, given again.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Stable code: `invalid_field`, `insufficient_funds`, `conflict`, ...
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An account or transfer does not exist (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A read model did not reach the asked position in time (504).
    #[error("read model {0} did not catch up in time")]
    Timeout(String),
    /// The store failed (500).
    #[error("storage error")]
    Store(#[source] cqrs_core::Error),
}

/// Codes of refusals that stay true: the same request gets the same answer.
const FINAL_CODES: &[&str] = &[
    "not_found",
    "already_exists",
    "account_closed",
    "insufficient_funds",
    "balance_limit",
    "balance_not_zero",
    "transfers_in_flight",
    "same_account",
    "rejected",
];

impl BankError {
    /// The 422 for an idempotency key sent again with another request.
    pub fn key_reused() -> Self {
        let message = "this Idempotency-Key was first used for another request";
        refused(422, "idempotency_key_reused", message)
    }

    /// A 400 for an invalid field.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        refused(400, "invalid_field", message)
    }

    /// A refusal remembered for an idempotency key, answered again.
    pub fn repeated(status: u16, code: &str, message: String) -> Self {
        let code = FINAL_CODES.iter().find(|c| **c == code);
        refused(status, code.unwrap_or(&"rejected"), message)
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            BankError::Refused { status, .. } => *status,
            BankError::NotFound(_) => 404,
            BankError::Timeout(_) => 504,
            BankError::Store(_) => 500,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::Refused { code, .. } => code,
            BankError::NotFound(_) => "not_found",
            BankError::Timeout(_) => "timeout",
            BankError::Store(_) => "internal",
        }
    }

    /// Whether this is a refusal to remember for an idempotency key: a broken rule or an
    /// unknown account, not a transient conflict, a timeout or a storage failure.
    pub fn is_final(&self) -> bool {
        matches!(self.status(), 404 | 409 | 422) && FINAL_CODES.contains(&self.code())
    }
}

fn refused(status: u16, code: &'static str, message: impl std::fmt::Display) -> BankError {
    let message = message.to_string();
    BankError::Refused {
        status,
        code,
        message,
    }
}

impl From<AccountError> for BankError {
    fn from(e: AccountError) -> Self {
        let code = match e {
            AccountError::NotFound => return BankError::NotFound("account"),
            AccountError::AlreadyOpen => return refused(409, "already_exists", e),
            AccountError::InvalidOwner => return BankError::invalid(e),
            AccountError::Closed => "account_closed",
            AccountError::InsufficientFunds { .. } => "insufficient_funds",
            AccountError::BalanceLimit => "balance_limit",
            AccountError::BalanceNotZero { .. } => "balance_not_zero",
            AccountError::TransfersInFlight(_) => "transfers_in_flight",
            _ => "rejected",
        };
        refused(422, code, e)
    }
}

impl From<TransferError> for BankError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::SameAccount => refused(422, "same_account", e),
            _ => refused(409, "already_exists", e),
        }
    }
}

impl From<cqrs_core::Error> for BankError {
    fn from(e: cqrs_core::Error) -> Self {
        match e {
            // NOTE: the store keeps the fingerprint of a keyed command's request.
            cqrs_core::Error::CommandIdReused { .. } => BankError::key_reused(),
            e => BankError::Store(e),
        }
    }
}

impl<E: Into<BankError>> From<CommandError<E>> for BankError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => e.into(),
            e if e.is_conflict() => {
                let message = "concurrent updates kept conflicting; try again";
                refused(409, "conflict", message)
            }
            CommandError::Store(e) => e.into(),
            _ => BankError::Store(cqrs_core::Error::Invalid("unexpected command error".into())),
        }
    }
}
