//! The terms of a command call: its options, its outcome, its error, its retry policy.

use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::Metadata;
use crate::event_store::{CommandId, Fingerprint};

/// How often a command is re-run after a concurrency conflict, and how long to wait between.
///
/// Commands on one aggregate through one handler take turns and never conflict with each
/// other; conflicts come from writers in other processes. The defaults (10 attempts, waits
/// from 2 ms doubling up to 100 ms, with jitter) ride out ordinary contention between
/// processes. No policy makes optimistic concurrency fair: two processes that both keep one
/// aggregate saturated can starve one another, so route an aggregate's hot traffic to one
/// process. Change one field and keep the rest:
///
/// ```
/// use std::time::Duration;
/// use cqrs_core::RetryPolicy;
///
/// let patient = RetryPolicy { max_attempts: 20, ..RetryPolicy::default() };
/// assert_eq!(patient.backoff, Duration::from_millis(2));
/// // The wait before each retry: doubling, capped, never above the cap with jitter.
/// assert!(patient.wait(1) <= Duration::from_millis(2));
/// assert!(patient.wait(15) <= patient.max_backoff);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry). Default: 10.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles on each further one, up to `max_backoff`.
    /// Default: 2 ms.
    pub backoff: Duration,
    /// Upper bound of one wait. Default: 100 ms.
    pub max_backoff: Duration,
    /// Whether each wait is drawn at random from its upper half (between half the doubled
    /// wait and all of it), so that writers who conflicted together do not retry together
    /// again. Default: true.
    pub jitter: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            backoff: Duration::from_millis(2),
            max_backoff: Duration::from_millis(100),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// Never retry: a conflict goes straight back to the caller.
    pub const NEVER: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        jitter: false,
    };

    /// The wait after failed attempt number `attempt` (1 for the first): `backoff` doubled
    /// `attempt - 1` times, at most `max_backoff`, and with `jitter` a random point of its
    /// upper half.
    pub fn wait(&self, attempt: u32) -> Duration {
        let full = self
            .backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        if !self.jitter || full.is_zero() {
            return full;
        }
        // NOTE: a v4 uuid is the randomness at hand (the core has no rand dependency); a
        // retry waits milliseconds anyway.
        let half = full / 2;
        let nanos = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
        let draw = (Uuid::new_v4().as_u128() as u64) % nanos.saturating_add(1);
        half + Duration::from_nanos(draw)
    }
}

/// Per-call options of a command.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// An id that makes the command idempotent on its stream: a second call with the same id
    /// appends nothing and returns the first result.
    pub command_id: Option<Uuid>,
    /// The fingerprint of the request the command id stands for, kept by the store beside it:
    /// the same id with another fingerprint fails with
    /// [`Error::CommandIdReused`](crate::Error::CommandIdReused) instead of answering with the
    /// first request's result. `None` takes any repeat of the id as the same request.
    /// [`CommandHandler::execute_once`] sets it to the command's own fingerprint.
    ///
    /// [`CommandHandler::execute_once`]: super::CommandHandler::execute_once
    pub fingerprint: Option<Fingerprint>,
    /// Metadata stamped on every event the command produces. When `causation_id` is unset it
    /// becomes the command id.
    pub metadata: Metadata,
}

impl CommandOptions {
    /// Options with a command id.
    pub fn with_id(command_id: Uuid) -> Self {
        CommandOptions {
            command_id: Some(command_id),
            ..Default::default()
        }
    }

    /// Options with a command id for `request`: the store keeps the request's
    /// [`Fingerprint`] beside the id, so that the id sent again with another request is refused.
    /// Fingerprint what identifies the request to the caller (a request body, say); when that is
    /// the command itself, [`CommandHandler::execute_once`] does it.
    ///
    /// [`CommandHandler::execute_once`]: super::CommandHandler::execute_once
    pub fn for_request<R: Serialize + ?Sized>(command_id: Uuid, request: &R) -> Result<Self> {
        Ok(CommandOptions {
            command_id: Some(command_id),
            fingerprint: Some(Fingerprint::of(request)?),
            ..Default::default()
        })
    }

    /// The command id and fingerprint as the store takes them.
    pub(super) fn command(&self) -> Option<CommandId> {
        self.command_id.map(|id| CommandId {
            id,
            fingerprint: self.fingerprint,
        })
    }
}

/// What a handled command left: the token for reading your own writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommandOutcome {
    /// The stream's version after the command.
    pub version: u64,
    /// Global position of the last event appended (0 when the command appended nothing).
    pub position: u64,
    /// How many events this call appended (0 for a repeated command id, or a decision that
    /// emitted nothing).
    pub appended: usize,
    /// The same count as [`appended`](CommandOutcome::appended), under its old name.
    #[deprecated(note = "a count, not the events: read `appended`")]
    pub events: usize,
    /// True when the command id had been handled before and this is its first result.
    pub duplicate: bool,
}

impl CommandOutcome {
    #[allow(deprecated)]
    pub(super) fn new(version: u64, position: u64, appended: usize, duplicate: bool) -> Self {
        CommandOutcome {
            version,
            position,
            appended,
            events: appended,
            duplicate,
        }
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command; nothing was written.
    #[error("command rejected")]
    Rejected(#[source] E),
    /// The store failed, or a conflict outlasted the retry policy; nothing was written.
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// True when conflicts outlasted the retries.
    pub fn is_conflict(&self) -> bool {
        matches!(self, CommandError::Store(e) if e.is_conflict())
    }
}

/// A deterministic command id for the command a handler issues in reaction to an event.
///
/// Process managers use it so that handling the same event twice (after a crash between the
/// command and the checkpoint) issues the same command id, which the store appends only once.
pub fn command_id_for(event_id: Uuid, step: &str) -> Uuid {
    Uuid::new_v5(&event_id, step.as_bytes())
}
