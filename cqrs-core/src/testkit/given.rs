//! Given/when/then for aggregates: pure, synchronous, no runtime.

use std::fmt::Debug;

use crate::aggregate::Aggregate;

/// An aggregate test: given past events, when a command, then events or an error.
///
/// ```
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// # enum CounterEvent { Added { n: u64 } }
/// # impl DomainEvent for CounterEvent {}
/// # #[derive(Debug, thiserror::Error)] #[error("too big")] struct TooBig;
/// # #[derive(Debug, Clone, Default)]
/// # struct Counter { total: u64 }
/// # impl Aggregate for Counter {
/// #     const TYPE: &'static str = "counter";
/// #     type Command = u64; type Event = CounterEvent; type Error = TooBig;
/// #     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, TooBig> {
/// #         if self.total + n > 100 { return Err(TooBig) } Ok(vec![CounterEvent::Added { n: *n }]) }
/// #     fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) { self.total += n; }
/// # }
/// use cqrs_core::testkit::AggregateTest;
///
/// AggregateTest::<Counter>::given([CounterEvent::Added { n: 60 }])
///     .when(10)
///     .then([CounterEvent::Added { n: 10 }]);
/// AggregateTest::<Counter>::given([CounterEvent::Added { n: 60 }])
///     .when(50)
///     .then_error(|e| matches!(e, TooBig));
/// ```
#[derive(Debug)]
pub struct AggregateTest<A: Aggregate> {
    state: A,
}

impl<A: Aggregate> AggregateTest<A> {
    /// Starts from the state these events build.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::default();
        for e in events {
            state.apply(&e);
        }
        AggregateTest { state }
    }

    /// Starts from the default state.
    pub fn given_nothing() -> Self {
        AggregateTest {
            state: A::default(),
        }
    }

    /// Starts from the state these events build on aggregate `id`'s
    /// [`initial`](Aggregate::initial) state, for an aggregate that knows its own id.
    pub fn given_for(id: &str, events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut state = A::initial(id);
        for e in events {
            state.apply(&e);
        }
        AggregateTest { state }
    }

    /// Decides on `command`.
    pub fn when(self, command: A::Command) -> Outcome<A> {
        let result = self.state.handle(&command);
        Outcome {
            state: self.state,
            result,
        }
    }
}

/// The decision of an [`AggregateTest`], to check.
#[derive(Debug)]
pub struct Outcome<A: Aggregate> {
    state: A,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Outcome<A>
where
    A::Event: PartialEq + Debug,
{
    /// Asserts the command produced exactly these events; returns the state after them.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<_> = expected.into_iter().collect();
        match self.result {
            Ok(events) => {
                assert_eq!(
                    events, expected,
                    "the command produced other events than expected"
                );
                let mut state = self.state;
                for e in &events {
                    state.apply(e);
                }
                state
            }
            Err(e) => panic!("expected events {expected:?}, the command was rejected: {e}"),
        }
    }

    /// Asserts the command was rejected with an error that `check` accepts.
    #[track_caller]
    pub fn then_error(self, check: impl FnOnce(&A::Error) -> bool) {
        match self.result {
            Ok(events) => panic!("expected a rejection, the command produced {events:?}"),
            Err(e) => assert!(
                check(&e),
                "the command was rejected with an unexpected error: {e}"
            ),
        }
    }

    /// Asserts the command was accepted and produced no events (a repeat that changes
    /// nothing, say); returns the state.
    #[track_caller]
    pub fn then_nothing(self) -> A {
        self.then([])
    }
}

impl<A: Aggregate> Outcome<A> {
    /// Asserts the command was rejected with exactly `expected`.
    ///
    /// ```
    /// # use cqrs_core::{Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// # enum StockEvent { Shipped { qty: u32 } }
    /// # impl DomainEvent for StockEvent {}
    /// #[derive(Debug, PartialEq, thiserror::Error)]
    /// enum StockError {
    ///     #[error("only {on_hand} on hand, {requested} requested")]
    ///     Short { on_hand: u32, requested: u32 },
    /// }
    /// # #[derive(Debug, Clone, Default)]
    /// # struct Stock { on_hand: u32 }
    /// # impl Aggregate for Stock {
    /// #     const TYPE: &'static str = "stock";
    /// #     type Command = u32; type Event = StockEvent; type Error = StockError;
    /// #     fn handle(&self, qty: &u32) -> Result<Vec<StockEvent>, StockError> {
    /// #         if *qty > self.on_hand { return Err(StockError::Short { on_hand: self.on_hand, requested: *qty }) }
    /// #         Ok(vec![StockEvent::Shipped { qty: *qty }]) }
    /// #     fn apply(&mut self, StockEvent::Shipped { qty }: &StockEvent) { self.on_hand -= qty; }
    /// # }
    /// use cqrs_core::testkit::AggregateTest;
    ///
    /// AggregateTest::<Stock>::given_nothing()
    ///     .when(3)
    ///     .then_rejected(StockError::Short { on_hand: 0, requested: 3 });
    /// ```
    #[track_caller]
    pub fn then_rejected(self, expected: A::Error)
    where
        A::Error: PartialEq + Debug,
        A::Event: Debug,
    {
        match self.result {
            Ok(events) => {
                panic!("expected the rejection {expected:?}, the command produced {events:?}")
            }
            Err(e) => assert_eq!(
                e, expected,
                "the command was rejected with another error than expected"
            ),
        }
    }

    /// The raw decision.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }
}
