//! The externally tagged form `{"<type>": <payload>}` presented to serde without building it.

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, IntoDeserializer, MapAccess, VariantAccess,
    Visitor,
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
