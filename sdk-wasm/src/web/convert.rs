//! Arguments from JavaScript, checked and turned into Rust values.
//!
//! Every export takes plain `JsValue`s and converts them here, so that a wrong type becomes
//! a rejected promise instead of an exception thrown by generated glue code.
//!
//! Traits and properties cross as text written by the engine's `JSON.stringify`, and stay
//! text: they are spliced into the message unparsed (see [`Fields`]). That keeps
//! JavaScript's own rules (`toJSON`, dates as ISO strings, `undefined` members dropped), and
//! leaves serde_json's parser out of the module: parsing them cost 50 KB of wasm (22 KB
//! gzipped), more than a third of the whole. Walking the object by reflection
//! (serde-wasm-bindgen) would bring the same deserialising code and its error formatting.

use js_sys::{Array, Number, JSON};
use wasm_bindgen::{JsCast, JsValue};

use crate::{Error, Fields, Result};

/// A string, or `None` for `undefined` and `null`.
pub(super) fn optional_string(value: &JsValue, what: &'static str) -> Result<Option<String>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }

    value.as_string().map(Some).ok_or(Error::InvalidArgument {
        what,
        why: "must be a string",
    })
}

/// A user id: a string, or a finite number written as JavaScript writes it (`String(42)`).
///
/// The engine formats the number: Rust's float formatting would add kilobytes to the module.
pub(super) fn user_id(value: &JsValue) -> Result<Option<String>> {
    match value.as_f64() {
        Some(number) if number.is_finite() => Ok(value
            .unchecked_ref::<Number>()
            .to_string_with_radix(10)
            .ok()
            .map(String::from)),
        Some(_) => Err(Error::InvalidArgument {
            what: "userId",
            why: "must be a finite number",
        }),
        None => optional_string(value, "userId"),
    }
}

/// A positive whole number, or `None` for `undefined` and `null`.
pub(super) fn count(value: &JsValue, what: &'static str) -> Result<Option<u32>> {
    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }

    match value.as_f64() {
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
            // Exact: `n` is a whole number within u32's range.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Some(n as u32))
        }
        _ => Err(Error::InvalidArgument {
            what,
            why: "must be a whole number of at least 1",
        }),
    }
}

/// A plain object as JSON text, or `None` for `undefined` and `null`.
pub(super) fn fields(value: &JsValue, what: &'static str) -> Result<Option<Fields>> {
    const NOT_AN_OBJECT: &str = "must be a plain object";

    if value.is_undefined() || value.is_null() {
        return Ok(None);
    }
    if !value.is_object() || Array::is_array(value) {
        return Err(Error::InvalidArgument {
            what,
            why: NOT_AN_OBJECT,
        });
    }

    let text = JSON::stringify(value).map_err(|_| Error::InvalidArgument {
        what,
        why: "cannot be written as JSON (a cycle, or a BigInt?)",
    })?;
    // A `toJSON` method may still have turned the object into something else.
    Fields::from_stringified(String::from(text))
        .map(Some)
        .ok_or(Error::InvalidArgument {
            what,
            why: NOT_AN_OBJECT,
        })
}
