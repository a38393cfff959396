//! Traits, properties and answers: one JSON object each, carried as text.
//!
//! In the browser they arrive as `JSON.stringify`'s output and are spliced into the message
//! unparsed. Parsing them only to write them out again would double the work and pull a JSON
//! parser into the wasm module.

use crate::prelude::*;

/// A JSON object, as text, to be sent as `traits`, `properties` or `answers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields(String);

impl Fields {
    /// Takes text that `JSON.stringify` wrote for a value, if it is an object.
    ///
    /// The text is not parsed again: it must be well-formed JSON, which the engine
    /// guarantees. Only its outer shape is checked, because a `toJSON` method can turn an
    /// object into a string, a number or an array. Returns `None` for those.
    pub fn from_stringified(text: String) -> Option<Self> {
        (text.starts_with('{') && text.ends_with('}')).then_some(Self(text))
    }

    /// The fields as JSON text, always an object.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Fields {
    /// No fields: `{}`.
    fn default() -> Self {
        Self("{}".to_owned())
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn only_objects_are_taken() {
        for text in [r#""2026-01-01""#, "[1]", "12", "null"] {
            assert_eq!(Fields::from_stringified(text.to_owned()), None, "{text}");
        }
        assert!(Fields::from_stringified(r#"{"a":1}"#.to_owned()).is_some());
    }
}
