//! The service's errors, each with the HTTP status and the stable code the API reports.

use cqrs_core::CommandError;

use crate::domain::account::AccountError;
use crate::domain::transfer::TransferError;

/// Why a request to the bank failed. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BankError {
    /// The request is malformed or a field is invalid (400).
    #[error("{message}")]
    Invalid {
        /// Stable code: `malformed_json`, `invalid_field`, ...
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// An account or transfer does not exist (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A concurrency conflict outlasted the retries, or the thing exists already (409).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What clashed.
        message: String,
    },
    /// A business rule refused the command (422).
    #[error("{message}")]
    Rule {
        /// Stable code: `insufficient_funds`, `balance_not_zero`, ...
        code: &'static str,
        /// The rule's message.
        message: String,
    },
    /// A read model did not reach the asked position in time (504).
    #[error("read model {0} did not catch up in time")]
    Timeout(String),
    /// The refusal recorded for an idempotency key, given again (404, 409 or 422).
    #[error("{message}")]
    Repeated {
        /// The first answer's status.
        status: u16,
        /// The first answer's code.
        code: &'static str,
        /// The first answer's message.
        message: String,
    },
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
        rule("idempotency_key_reused", message)
    }

    /// A 400 for an invalid field.
    pub fn invalid(message: impl Into<String>) -> Self {
        let message = message.into();
        BankError::Invalid {
            code: "invalid_field",
            message,
        }
    }

    /// A refusal recorded earlier, answered again.
    pub fn repeated(status: u16, code: &str, message: String) -> Self {
        let code = FINAL_CODES
            .iter()
            .find(|c| **c == code)
            .unwrap_or(&"rejected");
        BankError::Repeated {
            status,
            code,
            message,
        }
    }

    /// The HTTP status code.
    pub fn status(&self) -> u16 {
        match self {
            BankError::Invalid { .. } => 400,
            BankError::NotFound(_) => 404,
            BankError::Conflict { .. } => 409,
            BankError::Rule { .. } => 422,
            BankError::Timeout(_) => 504,
            BankError::Repeated { status, .. } => *status,
            BankError::Store(_) => 500,
        }
    }

    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            BankError::Invalid { code, .. }
            | BankError::Conflict { code, .. }
            | BankError::Rule { code, .. }
            | BankError::Repeated { code, .. } => code,
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

fn rule(code: &'static str, e: impl std::fmt::Display) -> BankError {
    BankError::Rule {
        code,
        message: e.to_string(),
    }
}

fn conflict(code: &'static str, e: impl std::fmt::Display) -> BankError {
    BankError::Conflict {
        code,
        message: e.to_string(),
    }
}

impl From<AccountError> for BankError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::NotFound => BankError::NotFound("account"),
            AccountError::AlreadyOpen => conflict("already_exists", e),
            AccountError::InvalidOwner => BankError::invalid(e.to_string()),
            AccountError::Closed => rule("account_closed", e),
            AccountError::InsufficientFunds { .. } => rule("insufficient_funds", e),
            AccountError::BalanceLimit => rule("balance_limit", e),
            AccountError::BalanceNotZero { .. } => rule("balance_not_zero", e),
            AccountError::TransfersInFlight(_) => rule("transfers_in_flight", e),
            _ => rule("rejected", e),
        }
    }
}

impl From<TransferError> for BankError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::SameAccount => rule("same_account", e),
            _ => conflict("already_exists", e),
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
                conflict("conflict", "concurrent updates kept conflicting; try again")
            }
            CommandError::Store(e) => e.into(),
            _ => BankError::Store(cqrs_core::Error::Invalid("unexpected command error".into())),
        }
    }
}
