//! Leases: at most one process runs a given subscriber at a time.

use async_trait::async_trait;

use crate::error::Result;

/// Hands out exclusive leases on subscriber names, across processes sharing a back-end.
#[async_trait]
pub trait Leases: Send + Sync + std::fmt::Debug {
    /// Tries to take the lease on `name`; `None` when another holder has it.
    async fn try_acquire(&self, name: &str) -> Result<Option<Box<dyn Lease>>>;
}

/// A held lease. Dropping it releases it (at the latest when its holder dies).
#[async_trait]
pub trait Lease: Send + Sync + std::fmt::Debug {
    /// Confirms (and where it applies, extends) the lease; `false` once it is lost, after which
    /// the holder must stop processing.
    async fn renew(&mut self) -> Result<bool>;
}
