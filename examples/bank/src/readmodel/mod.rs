//! Read models: SQL tables kept by transactional projectors, on either back-end.

mod adapters;
mod projections;
pub(crate) mod sql;
mod views;

pub use adapters::SqlProjection;
pub use projections::{LARGE_WITHDRAWAL, ReadModel};
pub(crate) use views::{AccountRow, LargeWithdrawalRow, StatementRow, TransferRow};
pub use views::{AccountView, LargeWithdrawalView, StatementLine, TransferView};
