//! The domain event trait: an enum's variants as stable type names and JSON payloads.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::tagged;

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
