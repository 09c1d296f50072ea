//! The write-side model: an aggregate decides on commands and evolves by its own events.

use crate::event::DomainEvent;

/// A consistency boundary whose state is rebuilt from its own events.
///
/// `handle` is the decision: pure, synchronous, given the current state and a command it returns
/// the events that follow or a typed domain error. `apply` is the evolution: it never fails and
/// never does I/O. The state starts at [`initial`](Aggregate::initial), which is `Default`
/// unless overridden.
///
/// ```
/// use cqrs_core::{Aggregate, DomainEvent};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum CounterEvent { Added { n: u64 } }
/// impl DomainEvent for CounterEvent {}
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("too big")]
/// struct TooBig;
///
/// #[derive(Debug, Clone, Default, Serialize, Deserialize)]
/// struct Counter { total: u64 }
///
/// impl Aggregate for Counter {
///     const TYPE: &'static str = "counter";
///     type Command = u64;
///     type Event = CounterEvent;
///     type Error = TooBig;
///
///     fn handle(&self, n: &u64) -> Result<Vec<CounterEvent>, TooBig> {
///         if self.total + n > 100 { return Err(TooBig) }
///         Ok(vec![CounterEvent::Added { n: *n }])
///     }
///     fn apply(&mut self, CounterEvent::Added { n }: &CounterEvent) {
///         self.total += n;
///     }
/// }
///
/// let mut c = Counter::default();
/// for e in c.handle(&40).unwrap() { c.apply(&e) }
/// assert_eq!(c.total, 40);
/// assert!(c.handle(&70).is_err());
/// ```
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// The aggregate type: the category of its streams (`account`, `transfer`). Keep it stable.
    const TYPE: &'static str;
    /// What it can be asked to do.
    type Command: Send + Sync;
    /// What it records.
    type Event: DomainEvent;
    /// Why it refuses a command.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Decides on a command: the events to record, or a domain error. Must not do I/O.
    fn handle(&self, command: &Self::Command) -> Result<Vec<Self::Event>, Self::Error>;

    /// Evolves the state by one event. Must not fail and must not do I/O.
    fn apply(&mut self, event: &Self::Event);

    /// The state of aggregate `id` before its first event: where the aggregate learns its own
    /// id, so that commands need not repeat it and events can carry it. The
    /// [`CommandHandler`](crate::CommandHandler) starts every load from it (a load from a
    /// snapshot starts from the saved state instead, so keep the id in the serialized state).
    /// The default is `Self::default()`, ignoring the id.
    ///
    /// ```
    /// use cqrs_core::{Aggregate, DomainEvent};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    /// enum ItemEvent { Registered { sku: String } }
    /// impl DomainEvent for ItemEvent {}
    ///
    /// #[derive(Debug, Clone, Default)]
    /// struct Item { sku: String, registered: bool }
    ///
    /// impl Aggregate for Item {
    ///     const TYPE: &'static str = "item";
    ///     type Command = ();
    ///     type Event = ItemEvent;
    ///     type Error = std::convert::Infallible;
    ///
    ///     fn initial(id: &str) -> Self {
    ///         Item { sku: id.to_owned(), ..Item::default() }
    ///     }
    ///     fn handle(&self, _: &()) -> Result<Vec<ItemEvent>, Self::Error> {
    ///         // The command says nothing of the id: the state knows it.
    ///         Ok(vec![ItemEvent::Registered { sku: self.sku.clone() }])
    ///     }
    ///     fn apply(&mut self, _: &ItemEvent) {
    ///         self.registered = true;
    ///     }
    /// }
    ///
    /// let item = Item::initial("sku-1");
    /// assert_eq!(item.handle(&()).unwrap(), [ItemEvent::Registered { sku: "sku-1".into() }]);
    /// ```
    fn initial(id: &str) -> Self {
        let _ = id;
        Self::default()
    }
}
