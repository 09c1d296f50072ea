//! An event ready to append: serialized, not yet positioned.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{DomainEvent, Metadata};
use crate::error::{Error, Result};

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
