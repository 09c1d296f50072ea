//! The kit's own logic, with no broker: a source in process whose sessions the test breaks, and
//! a publisher whose attempts the test fails. What a real broker adds (confirms, redelivery) is
//! tested in each bridge against its broker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cqrs_broker::testkit::{Recorder, eventually};
use cqrs_broker::*;
use cqrs_core::testkit::sample_recorded_event;
use cqrs_core::*;

/// What the session did with each message, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Ack(u32),
    Retry(u32),
    DeadLetter(u32, Failure),
}

/// A queue in process: each message is (its id, the try it is on, the event or a decode error);
/// `breaks` sessions fail at once when opened, and a retried message goes to the back.
/// A message in the queue: its id, the try it is on, the event or why it cannot be read.
type Waiting = (u32, u32, Result<RecordedEvent>);

#[derive(Debug, Default, Clone)]
struct Queue {
    messages: Arc<Mutex<VecDeque<Waiting>>>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    breaks: Arc<AtomicU32>,
}

struct QueueSession(Queue);

#[async_trait]
impl Source for Queue {
    type Session = QueueSession;
    fn name(&self) -> &str {
        "queue"
    }
    fn max_attempts(&self) -> u32 {
        3
    }
    async fn open(&self, _consumer: &str) -> Result<QueueSession> {
        let broken = self
            .breaks
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if broken.is_ok() {
            return Err(Error::backend("connection refused"));
        }
        Ok(QueueSession(self.clone()))
    }
}

#[async_trait]
impl Session for QueueSession {
    type Message = (u32, u32, RecordedEvent);
    async fn next(&mut self) -> Result<Received<Self::Message>> {
        loop {
            let next = self.0.messages.lock().unwrap().pop_front();
            match next {
                Some((id, attempt, event)) => {
                    let kept = event
                        .as_ref()
                        .cloned()
                        .unwrap_or_else(|_| sample_recorded_event());
                    return Ok(Received {
                        message: (id, attempt, kept),
                        attempt,
                        event,
                    });
                }
                None => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }
    async fn ack(&mut self, m: &Self::Message) -> Result<()> {
        self.0.outcomes.lock().unwrap().push(Outcome::Ack(m.0));
        Ok(())
    }
    async fn retry(&mut self, m: &Self::Message) -> Result<()> {
        self.0.outcomes.lock().unwrap().push(Outcome::Retry(m.0));
        let again = (m.0, m.1 + 1, Ok(m.2.clone()));
        self.0.messages.lock().unwrap().push_back(again);
        Ok(())
    }
    async fn dead_letter(&mut self, m: &Self::Message, failure: &Failure) -> Result<()> {
        let outcome = Outcome::DeadLetter(m.0, failure.clone());
        self.0.outcomes.lock().unwrap().push(outcome);
        Ok(())
    }
}

fn event(event_type: &str) -> RecordedEvent {
    let mut e = sample_recorded_event();
    e.event_id = uuid::Uuid::new_v4();
    e.event_type = event_type.into();
    e
}

#[tokio::test]
async fn a_broken_session_is_opened_again_and_counted() {
    let queue = Queue::default();
    queue.breaks.store(3, Ordering::SeqCst);
    queue
        .messages
        .lock()
        .unwrap()
        .push_back((1, 1, Ok(event("Noted"))));
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = Consumer::new(queue.clone(), inbox.clone()).start();
    eventually(5, "the message handled", || consumer.stats().handled == 1).await;
    assert_eq!(consumer.stats().reconnects, 3);
    assert_eq!(*queue.outcomes.lock().unwrap(), [Outcome::Ack(1)]);
    consumer.shutdown().await;
}

#[tokio::test]
async fn a_failing_message_is_retried_then_dead_lettered_with_its_error_while_others_go_on() {
    let queue = Queue::default();
    {
        let mut messages = queue.messages.lock().unwrap();
        messages.push_back((1, 1, Ok(event("Poison"))));
        messages.push_back((2, 1, Ok(event("Noted"))));
        messages.push_back((3, 1, Err(Error::Invalid("missing or bad header".into()))));
    }
    let inbox = Arc::new(InMemoryInbox::new(Recorder::default()));
    let consumer = Consumer::new(queue.clone(), inbox.clone()).start();
    eventually(5, "two dead letters", || {
        consumer.stats().dead_lettered == 2
    })
    .await;
    let stats = consumer.stats();
    assert_eq!((stats.delivered, stats.handled, stats.retried), (5, 1, 2));

    let outcomes = queue.outcomes.lock().unwrap().clone();
    let dead: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::DeadLetter(id, f) => Some((*id, f.attempts, f.error.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(dead.len(), 2);
    // The unreadable message is dead-lettered at its first try, the poison one at its third.
    assert_eq!((dead[0].0, dead[0].1), (3, 1));
    assert!(dead[0].2.contains("missing or bad header"), "{}", dead[0].2);
    assert_eq!((dead[1].0, dead[1].1), (1, 3));
    assert!(dead[1].2.starts_with("cannot digest"), "{}", dead[1].2);
    // Every dead letter is acknowledged after it was published, never before.
    for id in [1, 3] {
        let at = |o: &Outcome| outcomes.iter().position(|x| x == o);
        let letter = outcomes
            .iter()
            .position(|o| matches!(o, Outcome::DeadLetter(i, _) if *i == id));
        assert!(letter < at(&Outcome::Ack(id)), "{outcomes:?}");
    }
    assert_eq!(inbox.projector().len(), 1);
    consumer.shutdown().await;
}

/// Fails its first `failures` attempts, then records every batch it publishes.
#[derive(Debug, Default)]
struct Flaky {
    failures: AtomicU32,
    published: Mutex<Vec<Vec<u64>>>,
}

#[async_trait]
impl Publisher for Flaky {
    async fn publish(&self, batch: &[WireMessage<'_>]) -> Result<()> {
        let failing = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            return Err(Error::backend("broker unreachable"));
        }
        let positions = batch.iter().map(|m| m.event.cursor.position).collect();
        self.published.lock().unwrap().push(positions);
        Ok(())
    }
}

#[tokio::test]
async fn the_relay_publishes_a_failed_batch_again_and_moves_the_checkpoint_only_after() {
    let events: Vec<RecordedEvent> = (1..=10)
        .map(|p| RecordedEvent {
            cursor: Cursor::new(0, p),
            ..event("Noted")
        })
        .collect();
    let checkpoints = Arc::new(InMemoryCheckpointStore::new());
    let flaky = Flaky {
        failures: AtomicU32::new(2),
        ..Default::default()
    };
    let relay = Relay::new("relay", flaky).checkpointed(checkpoints.clone());
    relay.process(&events, events[9].cursor).await.unwrap();
    let published = relay
        .projector()
        .publisher()
        .published
        .lock()
        .unwrap()
        .clone();
    assert_eq!(
        published,
        [(1..=10).collect::<Vec<u64>>()],
        "the whole batch, once it went through"
    );
    assert_eq!(checkpoints.load("relay").await.unwrap(), events[9].cursor);

    // A publisher that keeps failing past the window fails the batch, and the checkpoint stays.
    let down = Flaky {
        failures: AtomicU32::new(u32::MAX),
        ..Default::default()
    };
    let relay = Relay::new("down", down)
        .retry_for(Duration::from_millis(200))
        .checkpointed(checkpoints.clone());
    let err = relay.process(&events, events[9].cursor).await.unwrap_err();
    let err = error_chain(&*err);
    assert!(err.contains("broker unreachable"), "{err}");
    assert_eq!(checkpoints.load("down").await.unwrap(), Cursor::default());
}

#[test]
fn a_wire_message_carries_the_envelope_and_the_ordering_key() {
    let e = sample_recorded_event();
    let m = WireMessage::encode(&wire::HeaderNames::DEFAULT, &e).unwrap();
    assert_eq!(m.id(), e.event_id.to_string());
    assert_eq!(m.ordering_key(), "account-a-1");
    let back = wire::event_from_headers(
        &wire::HeaderNames::DEFAULT,
        Some(&m.id()),
        m.headers.as_slice(),
        &m.body,
    );
    assert_eq!(back.unwrap(), e);
}
