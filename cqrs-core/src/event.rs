//! Events: the domain trait, the envelope, and the serialized forms the stores keep.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A domain event: something that happened, named in the past tense.
///
/// Write an enum, derive serde, and implement this trait with no body. The variant name (or its
/// `#[serde(rename)]`) is the stable *type name* kept in the store; the variant's fields are the
/// payload. Rename a variant only together with an upcaster.
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     #[serde(rename = "Deposited")]
///     MoneyIn { amount: u64 },
///     Closed,
/// }
/// impl DomainEvent for AccountEvent {}
///
/// let (ty, payload) = AccountEvent::MoneyIn { amount: 5 }.encode()?;
/// assert_eq!(ty, "Deposited");
/// assert_eq!(payload, serde_json::json!({"amount": 5}));
/// assert_eq!(AccountEvent::decode(&ty, payload)?, AccountEvent::MoneyIn { amount: 5 });
/// assert_eq!(AccountEvent::Closed.encode()?.0, "Closed");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The schema version this code writes for an event of `event_type`. Bump it when the
    /// payload's shape changes, and register an upcaster from the old version.
    fn schema_version(event_type: &str) -> u32 {
        let _ = event_type;
        1
    }

    /// Splits the event into its stable type name and its JSON payload.
    ///
    /// The default reads serde's externally tagged enum form (`{"Variant": {..}}` or `"Variant"`).
    fn encode(&self) -> Result<(String, Value), serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(map) if map.len() == 1 => {
                let (ty, payload) = map.into_iter().next().expect("one entry");
                Ok((ty, payload))
            }
            Value::String(ty) => Ok((ty, Value::Null)),
            _ => Err(serde::ser::Error::custom(
                "a DomainEvent must serialize as an externally tagged enum; override encode/decode otherwise",
            )),
        }
    }

    /// Rebuilds the event from its type name and payload (already upcast to the current version).
    ///
    /// `payload` is any JSON deserializer: a [`Value`] or `&Value`, or a
    /// `&mut serde_json::Deserializer` reading the stored text, so a load decodes straight from
    /// the bytes the store returned, with no [`Value`] tree in between. The default reads serde's
    /// externally tagged enum form: the type name selects the variant, the payload fills it
    /// (`null` for a unit variant). Override it together with [`encode`](Self::encode).
    ///
    /// ```
    /// # use cqrs_core::DomainEvent;
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Debug, PartialEq, Serialize, Deserialize)]
    /// # enum AccountEvent { Deposited { amount: u64 }, Closed }
    /// # impl DomainEvent for AccountEvent {}
    /// let mut text = serde_json::Deserializer::from_str(r#"{"amount": 5}"#);
    /// let event = AccountEvent::decode("Deposited", &mut text)?;
    /// text.end()?;
    /// assert_eq!(event, AccountEvent::Deposited { amount: 5 });
    /// assert_eq!(AccountEvent::decode("Closed", serde_json::Value::Null)?, AccountEvent::Closed);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    fn decode<'de, D>(event_type: &str, payload: D) -> Result<Self, serde_json::Error>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        Self::deserialize(tagged::Tagged::new(event_type, payload))
    }

    /// Decodes an event from its type name and its payload as JSON text (the whole text must
    /// be one JSON value). Calls [`decode`](Self::decode).
    fn decode_json(event_type: &str, payload: &str) -> Result<Self, serde_json::Error> {
        let mut text = serde_json::Deserializer::from_str(payload);
        let event = Self::decode(event_type, &mut text)?;
        text.end()?;
        Ok(event)
    }
}

/// The externally tagged form `{"<type>": <payload>}` presented to serde without building it.
mod tagged {
    use serde::de::{
        self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess,
        VariantAccess, Visitor,
    };

    type Error = serde_json::Error;

    /// An event type name and its payload, deserialized as a one-variant enum (or one-entry map).
    pub(super) struct Tagged<'a, D> {
        event_type: &'a str,
        payload: D,
    }

    impl<'a, D> Tagged<'a, D> {
        pub(super) fn new(event_type: &'a str, payload: D) -> Self {
            Tagged {
                event_type,
                payload,
            }
        }
    }

    impl<'de, D> Deserializer<'de> for Tagged<'_, D>
    where
        D: Deserializer<'de, Error = Error>,
    {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_map(Entry {
                key: Some(self.event_type),
                payload: Some(self.payload),
            })
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_enum(self)
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
            ignored_any
        }
    }

    impl<'de, D> EnumAccess<'de> for Tagged<'_, D>
    where
        D: Deserializer<'de, Error = Error>,
    {
        type Error = Error;
        type Variant = Payload<D>;

        fn variant_seed<V: DeserializeSeed<'de>>(
            self,
            seed: V,
        ) -> Result<(V::Value, Payload<D>), Error> {
            let variant = seed.deserialize(self.event_type.into_deserializer())?;
            Ok((variant, Payload(self.payload)))
        }
    }

    /// The payload of the selected variant.
    pub(super) struct Payload<D>(D);

    impl<'de, D> VariantAccess<'de> for Payload<D>
    where
        D: Deserializer<'de, Error = Error>,
    {
        type Error = Error;

        fn unit_variant(self) -> Result<(), Error> {
            de::Deserialize::deserialize(self.0)
        }

        fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
            seed.deserialize(self.0)
        }

        fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
            self.0.deserialize_tuple(len, visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.0.deserialize_struct("", fields, visitor)
        }
    }

    /// The one entry of the map form.
    struct Entry<'a, D> {
        key: Option<&'a str>,
        payload: Option<D>,
    }

    impl<'de, D> MapAccess<'de> for Entry<'_, D>
    where
        D: Deserializer<'de, Error = Error>,
    {
        type Error = Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.key.take() {
                Some(key) => seed.deserialize(key.into_deserializer()).map(Some),
                None => Ok(None),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            match self.payload.take() {
                Some(payload) => seed.deserialize(payload),
                None => Err(de::Error::custom("the payload was read already")),
            }
        }

        fn size_hint(&self) -> Option<usize> {
            Some(usize::from(self.key.is_some()))
        }
    }
}

/// Identifies one stream: the aggregate type (category) and the aggregate id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId {
    /// The aggregate type, such as `account`.
    pub category: String,
    /// The aggregate id within its category.
    pub id: String,
}

impl StreamId {
    /// A stream id from a category and an id.
    pub fn new(category: impl Into<String>, id: impl Into<String>) -> Self {
        StreamId {
            category: category.into(),
            id: id.into(),
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.category, self.id)
    }
}

/// What an append expects of the stream, for optimistic concurrency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be exactly at this version (0 is the same as [`ExpectedVersion::NoStream`]).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream now at `actual` (0 when absent) satisfies this expectation.
    pub fn matches(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exact(v) => v == actual,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any version"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// Where a subscriber stands in the all-stream; events are read in increasing cursor order.
///
/// `position` is the event's global position. `tx` is a commit-order key for back-ends whose
/// positions are handed out before commit (PostgreSQL keeps the writing transaction's id there,
/// so that a reader never passes an event that commits later with a lower position). Back-ends
/// whose positions already follow commit order leave `tx` at 0. [`Cursor::START`] is before
/// every event.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Cursor {
    /// Commit-order key (0 where positions are already in commit order).
    pub tx: u64,
    /// Global position of the last event passed.
    pub position: u64,
}

impl Cursor {
    /// Before the first event.
    pub const START: Cursor = Cursor { tx: 0, position: 0 };

    /// A cursor from a commit-order key and a position.
    pub const fn new(tx: u64, position: u64) -> Self {
        Cursor { tx, position }
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tx == 0 {
            write!(f, "{}", self.position)
        } else {
            write!(f, "{}@{}", self.position, self.tx)
        }
    }
}

/// Metadata carried by every event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// The id shared by everything one request or process set off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// The id of the message (command or event) that directly caused this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// Free-form entries.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

impl Metadata {
    /// Metadata with a correlation id.
    pub fn correlated(correlation_id: Uuid) -> Self {
        Metadata {
            correlation_id: Some(correlation_id),
            ..Default::default()
        }
    }
}

/// An event ready to append: serialized, not yet positioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Value,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event of `event_type` (schema version 1) with a fresh id and no metadata.
    pub fn new(event_type: impl Into<String>, payload: Value) -> Self {
        NewEvent {
            event_id: Uuid::new_v4(),
            event_type: event_type.into(),
            schema_version: 1,
            payload,
            metadata: Metadata::default(),
        }
    }

    /// Serializes a domain event with a fresh id.
    pub fn from_domain<E: DomainEvent>(event: &E, metadata: Metadata) -> Result<Self> {
        let (event_type, payload) = event.encode().map_err(|source| Error::Serialize {
            event_type: std::any::type_name::<E>().to_owned(),
            source,
        })?;
        Ok(NewEvent {
            event_id: Uuid::new_v4(),
            schema_version: E::schema_version(&event_type),
            event_type,
            payload,
            metadata,
        })
    }
}

/// An event as stored: serialized, with its place in its stream and in the all-stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream, from 1.
    pub stream_version: u64,
    /// Its place in the all-stream (with the commit-order key where the back-end has one).
    pub cursor: Cursor,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Stable type name.
    pub event_type: String,
    /// Schema version of `payload`.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Value,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
}

impl RecordedEvent {
    /// The event's global position.
    pub fn position(&self) -> u64 {
        self.cursor.position
    }

    /// Decodes the payload into a domain event, keeping the envelope.
    ///
    /// An unknown type or a payload that no longer fits gives [`Error::Decode`] naming the
    /// stream, version and type.
    pub fn decode<E: DomainEvent>(&self) -> Result<Envelope<E>> {
        let payload =
            E::decode(&self.event_type, &self.payload).map_err(|e| self.decode_error(e))?;
        Ok(Envelope {
            event_id: self.event_id,
            stream: self.stream.clone(),
            stream_version: self.stream_version,
            position: self.cursor.position,
            recorded_at: self.recorded_at,
            metadata: self.metadata.clone(),
            payload,
        })
    }

    /// Decodes the event if it belongs to aggregate type `A`, else gives `None`.
    pub fn decode_for<A: crate::Aggregate>(&self) -> Result<Option<Envelope<A::Event>>> {
        if self.stream.category == A::TYPE {
            self.decode().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Builds the [`Error::Decode`] for this event.
    pub fn decode_error(&self, source: impl Into<crate::BoxError>) -> Error {
        Error::Decode {
            stream: self.stream.clone(),
            version: self.stream_version,
            event_type: self.event_type.clone(),
            schema_version: self.schema_version,
            source: source.into(),
        }
    }
}

/// A decoded event with its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope<E> {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// Its version in the stream, from 1.
    pub stream_version: u64,
    /// Its global position.
    pub position: u64,
    /// When the store recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation and free entries.
    pub metadata: Metadata,
    /// The domain event.
    pub payload: E,
}

#[cfg(test)]
mod decode_tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::DomainEvent;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Ev {
        Opened {
            owner: String,
            limit: Option<u64>,
        },
        #[serde(rename = "MoneyIn")]
        Deposited(u64),
        Pair(u32, String),
        Noted(Option<String>),
        Closed,
    }
    impl DomainEvent for Ev {}

    fn samples() -> Vec<Ev> {
        vec![
            Ev::Opened {
                owner: "ann".into(),
                limit: None,
            },
            Ev::Deposited(7),
            Ev::Pair(1, "x".into()),
            Ev::Noted(None),
            Ev::Noted(Some("n".into())),
            Ev::Closed,
        ]
    }

    #[test]
    fn every_variant_kind_round_trips_through_value_borrowed_value_and_text() {
        for e in samples() {
            let (ty, payload) = e.encode().unwrap();
            let text = payload.to_string();
            assert_eq!(
                Ev::decode(&ty, payload.clone()).unwrap(),
                e,
                "{ty} by value"
            );
            assert_eq!(Ev::decode(&ty, &payload).unwrap(), e, "{ty} borrowed");
            assert_eq!(Ev::decode_json(&ty, &text).unwrap(), e, "{ty} from {text}");
        }
    }

    #[test]
    fn a_renamed_variant_is_found_by_its_stored_name_only() {
        assert_eq!(Ev::decode_json("MoneyIn", "5").unwrap(), Ev::Deposited(5));
        assert!(Ev::decode_json("Deposited", "5").is_err());
    }

    #[test]
    fn bad_payloads_and_unknown_types_are_errors() {
        let unknown = Ev::decode_json("Vanished", "{}").unwrap_err();
        assert!(unknown.to_string().contains("Vanished"), "{unknown}");
        // A payload of the wrong shape, trailing text, a payload on a unit variant, bad JSON.
        assert!(Ev::decode_json("MoneyIn", r#""ten""#).is_err());
        assert!(Ev::decode_json("MoneyIn", "5 6").is_err());
        assert!(Ev::decode_json("Closed", r#"{"a":1}"#).is_err());
        assert!(Ev::decode_json("Opened", r#"{"owner": "#).is_err());
        assert!(Ev::decode("Opened", json!({"limit": 1})).is_err());
    }

    #[test]
    fn a_map_shaped_target_sees_one_entry() {
        #[derive(Debug, PartialEq, Deserialize, Serialize)]
        struct Wrapped {
            #[serde(rename = "Seen")]
            seen: u32,
        }
        impl DomainEvent for Wrapped {}
        assert_eq!(
            Wrapped::decode_json("Seen", "3").unwrap(),
            Wrapped { seen: 3 }
        );
    }
}
