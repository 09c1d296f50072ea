//! The inbound half: a [`Consumer`] supervises a broker's [`Source`] (sessions opened again
//! with backoff when they break), hands each message's event to an [`InboxSubscriber`],
//! acknowledges only once the inbox committed, sends failures back for a bounded number of
//! tries, then dead-letters them with their error.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::{BoxError, InboxSubscriber, RecordedEvent, Result, error_chain};
use tokio::sync::watch;
use tracing::Instrument;

use crate::Backoff;
use crate::handle::{ConsumerHandle, Counters};

/// What a broker bridge implements to consume: where the messages come from, and how a session
/// with the broker is opened.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// One session's life with the broker (a connection, a pull).
    type Session: Session;

    /// Names what is consumed (a queue, a durable consumer), for logs.
    fn name(&self) -> &str;

    /// Tries of a message (the first delivery included) before it is dead-lettered.
    fn max_attempts(&self) -> u32;

    /// Connects, declares what is consumed, and starts receiving for the inbox `consumer`.
    async fn open(&self, consumer: &str) -> Result<Self::Session>;
}

/// One session with the broker: messages in, and what becomes of each. An error from any
/// method ends the session; the [`Consumer`] opens another after a backoff, and the messages
/// it did not acknowledge come back.
#[async_trait]
pub trait Session: Send {
    /// The broker's message, kept to acknowledge it.
    type Message: Send + Sync;

    /// The next message, decoded. Waits until one comes; an error means the session broke
    /// (and a subscription the broker ended is one).
    async fn next(&mut self) -> Result<Received<Self::Message>>;

    /// Acknowledges `message`: the broker forgets it.
    async fn ack(&mut self, message: &Self::Message) -> Result<()>;

    /// Sends `message` back for another try, after the broker's retry delay.
    async fn retry(&mut self, message: &Self::Message) -> Result<()>;

    /// Publishes `message` with its `failure` (in the [`error`, `attempts` and `origin`
    /// headers](cqrs_core::wire::HeaderNames::error)) to the dead-letter destination, and
    /// returns once the broker confirmed it. The [`Consumer`] acknowledges the original after.
    async fn dead_letter(&mut self, message: &Self::Message, failure: &Failure) -> Result<()>;

    /// Ends the session cleanly (on shutdown); unacknowledged messages go back to the broker.
    async fn close(self)
    where
        Self: Sized,
    {
    }
}

/// A message as a [`Session`] received it.
#[derive(Debug)]
pub struct Received<M> {
    /// The broker's message.
    pub message: M,
    /// Which try this delivery is, counting from 1, as the broker counted them.
    pub attempt: u32,
    /// The event it carries, or why it cannot be read (a message that cannot be read never
    /// will be: it is dead-lettered at once).
    pub event: Result<RecordedEvent>,
}

/// Why a message goes to the dead-letter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The handler's last error with its causes, or why the message could not be read.
    pub error: String,
    /// How many times it was tried.
    pub attempts: u32,
}

/// Consumes a [`Source`] into an [`InboxSubscriber`].
///
/// Each message's event goes to [`handle_once`](InboxSubscriber::handle_once), which skips an
/// event id it has seen and commits the effect with the id. The message is acknowledged only
/// after that, so a crash or a lost session redelivers it, and the inbox makes the repeat
/// harmless. A failing handler has its message sent back ([`Session::retry`]); once the
/// source's [`max_attempts`](Source::max_attempts) are spent the message is dead-lettered with
/// the error, and the consumer goes on with the next one. A session that breaks is opened again
/// with [`Backoff`], and counted in [`ConsumerStats::reconnects`](crate::ConsumerStats).
#[derive(Debug)]
pub struct Consumer<D, S> {
    source: D,
    inbox: S,
}

impl<D: Source, S: InboxSubscriber + 'static> Consumer<D, S> {
    /// A consumer of `source` feeding `inbox`.
    pub fn new(source: D, inbox: S) -> Self {
        Consumer { source, inbox }
    }

    /// Starts consuming on the current tokio runtime.
    pub fn start(self) -> ConsumerHandle {
        let (stop, rx) = watch::channel(false);
        let stats = Arc::<Counters>::default();
        let task = tokio::spawn(self.run(rx, stats.clone()));
        ConsumerHandle { stop, task, stats }
    }

    async fn run(self, mut stop: watch::Receiver<bool>, stats: Arc<Counters>) {
        let mut backoff = Backoff::default();
        loop {
            let halted = *stop.borrow();
            if halted {
                break;
            }
            match self.session(&mut stop, &mut backoff, &stats).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(source = self.source.name(), error = %e, "consumer lost its session, opening another");
                    Counters::bump(&stats.reconnects);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_wait()) => {}
                        () = stopped(&mut stop) => break,
                    }
                }
            }
        }
    }

    /// One session's life: consume until stopped (`Ok`) or the session breaks (`Err`).
    async fn session(
        &self,
        stop: &mut watch::Receiver<bool>,
        backoff: &mut Backoff,
        stats: &Counters,
    ) -> Result<()> {
        let mut session = self.source.open(self.inbox.name()).await?;
        backoff.reset();
        loop {
            let next = tokio::select! {
                () = stopped(stop) => None,
                next = session.next() => Some(next),
            };
            match next {
                None => {
                    session.close().await;
                    return Ok(());
                }
                Some(received) => self.handle(&mut session, received?, stats).await?,
            }
        }
    }

    async fn handle(
        &self,
        session: &mut D::Session,
        received: Received<<D::Session as Session>::Message>,
        stats: &Counters,
    ) -> Result<()> {
        Counters::bump(&stats.delivered);
        let Received {
            message,
            attempt,
            event,
        } = received;
        let failure = match event {
            // NOTE: a message that cannot be read never will be: no retries.
            Err(e) => Some((error_chain(&e), true)),
            Ok(event) => match self.handle_traced(&event, attempt).await {
                Ok(true) => {
                    Counters::bump(&stats.handled);
                    None
                }
                Ok(false) => {
                    Counters::bump(&stats.duplicates);
                    None
                }
                Err(e) => {
                    tracing::debug!(source = self.source.name(), event = %event.event_id, attempt, error = %e, "handler failed");
                    Some((error_chain(&*e), attempt >= self.source.max_attempts()))
                }
            },
        };
        match failure {
            Some((error, true)) => {
                tracing::warn!(
                    source = self.source.name(),
                    attempts = attempt,
                    error,
                    "dead-lettering message"
                );
                let failure = Failure {
                    error,
                    attempts: attempt,
                };
                session.dead_letter(&message, &failure).await?;
                Counters::bump(&stats.dead_lettered);
                session.ack(&message).await
            }
            Some((_, false)) => {
                session.retry(&message).await?;
                Counters::bump(&stats.retried);
                Ok(())
            }
            None => session.ack(&message).await,
        }
    }
}

impl<D: Source, S: InboxSubscriber + 'static> Consumer<D, S> {
    /// Hands `event` to the inbox in a `consume` span, a child of the trace the event was
    /// written in when its message carried one (`traceparent`).
    async fn handle_traced(&self, event: &RecordedEvent, attempt: u32) -> Result<bool, BoxError> {
        let span = tracing::info_span!(
            "consume",
            source = self.source.name(),
            consumer = self.inbox.name(),
            event_id = %event.event_id,
            event_type = %event.event_type,
            stream = %event.stream,
            attempt,
        );
        cqrs_core::trace::continue_from(&span, event.metadata.traceparent.as_deref());
        self.inbox.handle_once(event).instrument(span).await
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // NOTE: the guard `wait_for` returns is not `Send`; drop it before anything else awaits.
    let _ = stop.wait_for(|s| *s).await;
}
