//! Arguments from JavaScript, checked and turned into Rust values.
//!
//! Every export takes plain `JsValue`s and converts them here, so that a wrong type becomes
//! a rejected promise instead of an exception thrown by generated glue code.
//!
//! Traits, properties and answers cross as text written by the engine's `JSON.stringify`,
//! and stay text: they are spliced into the message unparsed (see [`Fields`]). That keeps
//! JavaScript's own rules (`toJSON`, dates as ISO strings, `undefined` members dropped) and
//! leaves a JSON parser out of the module.

use crate::prelude::*;
use js_sys::{Array, Number, Reflect, JSON};
use wasm_bindgen::{JsCast, JsValue};

use crate::{Error, Fields, Page, Result};

/// A property of an options object; `undefined` when absent or unreadable.
pub(super) fn field(object: &JsValue, name: &str) -> JsValue {
    if !object.is_object() {
        return JsValue::UNDEFINED;
    }
    Reflect::get(object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

fn absent(value: &JsValue) -> bool {
    value.is_undefined() || value.is_null()
}

/// A string, or `None` for `undefined` and `null`.
pub(super) fn optional_string(value: &JsValue, what: &'static str) -> Result<Option<String>> {
    if absent(value) {
        return Ok(None);
    }

    value.as_string().map(Some).ok_or(Error::InvalidArgument {
        what,
        why: "must be a string",
    })
}

/// An id: a string, or a finite number written as JavaScript writes it (`String(42)`).
///
/// The engine formats the number: Rust's float formatting would add kilobytes to the module.
pub(super) fn id(value: &JsValue, what: &'static str) -> Result<Option<String>> {
    match value.as_f64() {
        Some(number) if number.is_finite() => Ok(value
            .unchecked_ref::<Number>()
            .to_string_with_radix(10)
            .ok()
            .map(String::from)),
        Some(_) => Err(Error::InvalidArgument {
            what,
            why: "must be a string or a finite number",
        }),
        None => optional_string(value, what),
    }
}

/// An id that must be given.
pub(super) fn required_id(value: &JsValue, what: &'static str) -> Result<String> {
    id(value, what)?.ok_or(Error::InvalidArgument {
        what,
        why: "is required",
    })
}

/// A positive whole number, or `None` for `undefined` and `null`.
pub(super) fn count(value: &JsValue, what: &'static str) -> Result<Option<u32>> {
    if absent(value) {
        return Ok(None);
    }

    match value.as_f64() {
        // Within u32's range, the cast is exact exactly when `n` is whole (`fract` is
        // `std`'s).
        Some(n) if n >= 1.0 && n <= f64::from(u32::MAX) && f64::from(n as u32) == n => {
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

    if absent(value) {
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

/// Consent categories: one name or an array of names; `None` for `undefined` and `null`.
pub(super) fn categories(value: &JsValue) -> Result<Option<Vec<String>>> {
    const WHY: &str = "must be a category name or an array of names";
    if absent(value) {
        return Ok(None);
    }
    if let Some(name) = value.as_string() {
        return Ok(Some(vec![name]));
    }
    if !Array::is_array(value) {
        return Err(Error::InvalidArgument {
            what: "categories",
            why: WHY,
        });
    }

    let mut names = Vec::new();
    for item in value.unchecked_ref::<Array>().iter() {
        match item.as_string() {
            Some(name) if !name.is_empty() => names.push(name),
            _ => {
                return Err(Error::InvalidArgument {
                    what: "categories",
                    why: WHY,
                })
            }
        }
    }
    Ok(Some(names))
}

/// The page of a call made before the module loaded, as the snippet captured it.
pub(super) fn page(value: &JsValue) -> Option<Page> {
    if !value.is_object() {
        return None;
    }
    let text = |name| field(value, name).as_string().unwrap_or_default();

    Some(Page {
        path: text("path"),
        url: text("url"),
        search: text("search"),
        title: text("title"),
        referrer: text("referrer"),
    })
}
