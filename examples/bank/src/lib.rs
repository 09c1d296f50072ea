//! The example bank service, as a library so that tests can drive it.
mod domain;
mod process;

pub use domain::account::{
    Account, AccountCommand, AccountError, AccountEvent, AccountStatus, MAX_OWNER_LEN, valid_owner,
};
pub use domain::money::{Amount, InvalidAmount, MAX_AMOUNT, MAX_BALANCE, format_minor};
pub use domain::transfer::{
    Transfer, TransferCommand, TransferError, TransferEvent, TransferStatus,
};
pub use process::{TRANSFER_PROCESS, TransferProcess};
