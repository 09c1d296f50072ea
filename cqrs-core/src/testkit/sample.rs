//! A recorded event with every envelope field set, for tests of codecs and transports.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::event::{Cursor, Metadata, RecordedEvent, StreamId};

/// A recorded `Deposited` event of stream `account-a-1` at version 7, cursor `(3, 42)`, schema
/// version 2, payload `{"amount": 5}`, with correlation and causation ids, a free metadata entry
/// (`user: alice`) and a fixed time with microseconds. The ids are fresh on every call.
///
/// ```
/// let e = cqrs_core::testkit::sample_recorded_event();
/// assert_eq!((e.stream_version, e.cursor.position, e.event_type.as_str()), (7, 42, "Deposited"));
/// ```
pub fn sample_recorded_event() -> RecordedEvent {
    let mut metadata = Metadata::correlated(Uuid::new_v4());
    metadata.causation_id = Some(Uuid::new_v4());
    metadata.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    metadata.extra.insert("user".into(), json!("alice"));
    RecordedEvent {
        event_id: Uuid::new_v4(),
        stream: StreamId::new("account", "a-1"),
        stream_version: 7,
        cursor: Cursor::new(3, 42),
        recorded_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
            .expect("a valid time")
            .with_timezone(&Utc),
        event_type: "Deposited".into(),
        schema_version: 2,
        payload: r#"{"amount":5}"#.to_owned(),
        metadata,
    }
}
