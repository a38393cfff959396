//! Newtypes for the ids a message carries.
//!
//! Server libraries disagree on id types: most send strings, some send numbers (a database
//! key passed straight through). Ids deserialise from either and are always strings inside
//! Ebb, so `42` and `"42"` name the same user.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string as this id.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Gives back the inner string.
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(IdVisitor).map(Self)
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                id_schema()
            }
        }

        #[cfg(feature = "openapi")]
        impl utoipa::ToSchema for $name {}
    };
}

string_id!(
    /// The id a site gives a known user (`userId`).
    UserId
);
string_id!(
    /// The id an SDK mints for a visitor before, or instead of, a user id (`anonymousId`).
    AnonymousId
);
string_id!(
    /// The client-chosen id of one message, the key for deduplicating retries (`messageId`).
    MessageId
);

/// What an id accepts, as JSON Schema: text of at most [`MAX_ID_CHARS`] characters, or an
/// integer that fits 64 bits (`42.0` counts as `42`, as JSON Schema counts it too).
#[cfg(feature = "openapi")]
fn id_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};

    let text = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(crate::MAX_ID_CHARS));
    let number = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(utoipa::Number::Int(i64::MIN as isize)))
        .maximum(Some(utoipa::Number::UInt(u64::MAX as usize)));
    OneOfBuilder::new()
        .item(text)
        .item(number)
        .description(Some(
            "a string, or an integer that is read as its decimal text",
        ))
        .into()
}

/// Accepts a string or an integer; anything else is an error naming what was found.
struct IdVisitor;

impl Visitor<'_> for IdVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an integer")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    /// A number written with a zero fraction (`42.0`, as JSON libraries that only have
    /// floats write integers) is that integer; any other float is refused.
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        if v.fract() != 0.0 {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        } else if (i64::MIN as f64..0.0).contains(&v) {
            Ok((v as i64).to_string())
        } else if (0.0..u64::MAX as f64).contains(&v) {
            Ok((v as u64).to_string())
        } else {
            Err(E::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_strings_and_integers_alike() {
        let from_text: UserId = serde_json::from_str(r#""42""#).unwrap();
        let from_number: UserId = serde_json::from_str("42").unwrap();

        assert_eq!(from_text, from_number);
    }

    #[test]
    fn integers_written_as_floats_are_those_integers() {
        for (input, id) in [
            ("42.0", "42"),
            ("-7.0", "-7"),
            ("1e3", "1000"),
            ("-0.0", "0"),
        ] {
            let parsed: UserId = serde_json::from_str(input).unwrap();

            assert_eq!(parsed.as_str(), id, "{input}");
        }
    }

    #[test]
    fn ids_reject_objects_floats_and_booleans() {
        for input in [r#"{"id":1}"#, "1.5", "1e300", "true", "[1]"] {
            let parsed: Result<UserId, _> = serde_json::from_str(input);

            assert!(parsed.is_err(), "{input} should not be an id");
        }
    }
}
