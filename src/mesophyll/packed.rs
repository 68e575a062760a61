//! [`Packed`]: a payload value (event data, a handler's result) kept as its
//! MessagePack encoding while it travels.
//!
//! The master only moves payloads from one side to the other: from a REST
//! body to a frame, from a frame to a REST answer. Building a tree of
//! [`serde_json::Value`]s for each of them cost an allocation per string,
//! map and array, twice per request, and the profile showed it. A `Packed`
//! is one buffer instead: deserializing one (from JSON, from MessagePack,
//! from anything serde reads) re-encodes the value into it token by token
//! (`serde_transcode`), and serializing one replays those tokens into the
//! serializer at hand, so on the wire, and in JSON, a `Packed` looks exactly
//! like the value it holds. Peers that still decode a payload into a
//! `Value` read the same frames.
//!
//! The worker reads and writes the bytes straight from and to Luau values
//! (`worker::luau_values`), never through a `Value` either.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// The MessagePack encoding of nil, the payload of an event without data.
const NIL: u8 = 0xc0;

/// Room a payload's buffer starts with, so that a small one is written
/// without the buffer growing under it.
const START: usize = 256;

/// A value kept as its MessagePack encoding. Always one complete value:
/// every way to build one (deserializing, [`Packed::encode`],
/// [`Packed::from_value`], [`Packed::from_msgpack`]) checks or writes it
/// whole.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Packed(Vec<u8>);

/// Why a value could not become a [`Packed`], or a [`Packed`] a typed value.
#[derive(Debug, thiserror::Error)]
pub enum PackedError {
    /// The value cannot be written as MessagePack.
    #[error("cannot encode the value: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// The bytes are not one MessagePack value, or not of the type asked.
    #[error("cannot decode the value: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

impl Packed {
    /// Nil (JSON's `null`).
    pub fn nil() -> Packed {
        Packed(vec![NIL])
    }

    /// The encoding of any serializable value (structs as maps, as in
    /// every frame).
    ///
    /// Fails as [`PackedError::Encode`] for what MessagePack cannot hold
    /// (a map whose keys are not all serializable, a failing `Serialize`).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Packed, PackedError> {
        let mut bytes = Vec::with_capacity(START);
        value.serialize(&mut rmp_serde::Serializer::new(&mut bytes).with_struct_map())?;
        Ok(Packed(bytes))
    }

    /// The encoding of a JSON value; never fails (every JSON value has one).
    pub fn from_value(value: &Value) -> Packed {
        Packed::encode(value).expect("a JSON value always encodes as MessagePack")
    }

    /// Takes `bytes` as the encoding of one value, after checking that they
    /// are exactly that.
    ///
    /// Fails as [`PackedError::Decode`] for bytes that are not one
    /// MessagePack value, or that hold more after it.
    pub fn from_msgpack(bytes: Vec<u8>) -> Result<Packed, PackedError> {
        let mut rest = &bytes[..];
        serde::de::IgnoredAny::deserialize(&mut rmp_serde::Deserializer::new(&mut rest))?;
        if !rest.is_empty() {
            return Err(PackedError::Decode(rmp_serde::decode::Error::Syntax(
                "bytes left after the value".into(),
            )));
        }
        Ok(Packed(bytes))
    }

    /// Wraps bytes this crate wrote itself as one complete value (the
    /// worker's encoder); nothing is checked.
    pub(crate) fn from_trusted(bytes: Vec<u8>) -> Packed {
        Packed(bytes)
    }

    /// The encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// True for nil (an event sent without data).
    pub fn is_nil(&self) -> bool {
        self.0 == [NIL]
    }

    /// Decodes the value as a `T`.
    ///
    /// Fails as [`PackedError::Decode`] when the value does not have `T`'s
    /// shape.
    pub fn decode<'a, T: Deserialize<'a>>(&'a self) -> Result<T, PackedError> {
        Ok(rmp_serde::from_slice(&self.0)?)
    }

    /// The value as JSON. Byte strings become arrays of numbers, integer
    /// map keys become strings, NaN and the infinities become `null`, as
    /// `serde_json` writes them.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl Default for Packed {
    fn default() -> Self {
        Packed::nil()
    }
}

impl From<Value> for Packed {
    fn from(value: Value) -> Self {
        Packed::from_value(&value)
    }
}

impl From<&Value> for Packed {
    fn from(value: &Value) -> Self {
        Packed::from_value(value)
    }
}

impl From<Packed> for Value {
    fn from(packed: Packed) -> Self {
        packed.to_value()
    }
}

impl PartialEq<Value> for Packed {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Debug for Packed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Packed({})", self.to_value())
    }
}

impl fmt::Display for Packed {
    /// The value as JSON text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => f.write_str("null"),
        }
    }
}

impl Serialize for Packed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut de = rmp_serde::Deserializer::from_read_ref(&self.0[..]);
        serde_transcode::transcode(&mut de, serializer)
    }
}

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut bytes = Vec::with_capacity(START);
        serde_transcode::transcode(
            deserializer,
            &mut rmp_serde::Serializer::new(&mut bytes).with_struct_map(),
        )
        .map_err(serde::de::Error::custom)?;
        Ok(Packed(bytes))
    }
}

/// In the API's contract a packed value is what it stands for: any JSON
/// value.
#[cfg(feature = "server")]
impl utoipa::PartialSchema for Packed {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <Value as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "server")]
impl utoipa::ToSchema for Packed {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_msgpack_see_the_value_not_the_bytes() {
        let v = json!({"a": [1, -2, 2.5, "x", null, {"b": true}], "big": u64::MAX});
        let from_json: Packed = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(from_json, Packed::from_value(&v));
        assert_eq!(serde_json::to_value(&from_json).unwrap(), v);
        // Inside a MessagePack frame it is the value itself, as a `Value`
        // field would have written it.
        let framed = rmp_serde::to_vec_named(&json!({"data": from_json.to_value()})).unwrap();
        let ours =
            rmp_serde::to_vec_named(&std::collections::BTreeMap::from([("data", &from_json)]))
                .unwrap();
        assert_eq!(framed, ours);
        let back: std::collections::BTreeMap<String, Packed> =
            rmp_serde::from_slice(&framed).unwrap();
        assert_eq!(back["data"], v);
    }

    #[test]
    fn only_one_whole_value_is_taken() {
        let one = Packed::from_value(&json!([1, 2]));
        assert!(Packed::from_msgpack(one.as_bytes().to_vec()).is_ok());
        let mut two = one.as_bytes().to_vec();
        two.push(NIL);
        assert!(Packed::from_msgpack(two).is_err());
        assert!(Packed::from_msgpack(vec![0x92, 0x01]).is_err());
        assert!(Packed::from_msgpack(Vec::new()).is_err());
    }

    #[test]
    fn nil_is_the_default_and_json_null() {
        assert!(Packed::default().is_nil());
        assert_eq!(serde_json::to_string(&Packed::nil()).unwrap(), "null");
        let absent: Packed = serde_json::from_str("null").unwrap();
        assert!(absent.is_nil());
    }
}
