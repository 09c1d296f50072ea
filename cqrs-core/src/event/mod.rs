//! Events: the domain trait, the envelope, and the serialized forms the stores keep.

mod cursor;
mod domain_event;
mod metadata;
mod new_event;
mod recorded;
mod stream;
mod tagged;

pub use cursor::Cursor;
pub use domain_event::DomainEvent;
pub use metadata::Metadata;
pub use new_event::NewEvent;
pub use recorded::{Envelope, RecordedEvent};
pub use stream::{ExpectedVersion, StreamId};
