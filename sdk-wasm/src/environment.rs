//! What the core needs from its host: randomness, the clock and the page.
//!
//! The browser bindings implement [`Environment`] with `crypto.getRandomValues`, `Date` and
//! `window.location`/`document`; tests implement it with counters and fixed values, which
//! keeps every message the core builds reproducible.

use serde_json::{Map, Value};

use crate::Result;

/// The host the SDK runs in.
pub trait Environment {
    /// Sixteen bytes from a cryptographically secure source.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`](crate::Error::NoRandomSource) when the host has none.
    fn random_bytes(&mut self) -> Result<[u8; 16]>;

    /// The current time as ISO-8601 in UTC, e.g. `2026-05-01T12:00:00.000Z`.
    fn now(&self) -> String;

    /// The page the visitor is on, when the SDK runs in a window.
    fn page(&self) -> Option<Page>;
}

/// The page a message was recorded on, sent as `context.page`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// `location.pathname`.
    pub path: String,
    /// `location.href`.
    pub url: String,
    /// `location.search`, with its leading `?` when not empty.
    pub search: String,
    /// `document.title`.
    pub title: String,
    /// `document.referrer`; empty when the visitor came directly.
    pub referrer: String,
}

impl Page {
    /// The page as the JSON object of `context.page`.
    pub fn to_json(&self) -> Value {
        text_object(&[
            ("path", &self.path),
            ("url", &self.url),
            ("search", &self.search),
            ("title", &self.title),
            ("referrer", &self.referrer),
        ])
    }
}

/// A JSON object of string members.
///
/// Built by inserting, not with `json!` (whose expansion unwraps a `Result` and so brings
/// panic formatting into the wasm module) nor by collecting (which brings a sort).
pub(crate) fn text_object(members: &[(&str, &str)]) -> Value {
    let mut object = Map::new();
    for (name, value) in members {
        object.insert((*name).to_owned(), Value::from(*value));
    }
    Value::Object(object)
}
