//! Everything that can go wrong in the SDK, as one error type.
//!
//! The browser bindings never throw: each error becomes the rejection of the promise that the
//! call returned, as a JavaScript `Error` whose message is [`Error::describe`] behind
//! `ebb: `. The text is assembled by hand rather than with `format!`, which would bring the
//! formatting machinery into the wasm module.

use crate::prelude::*;
use core::fmt;

use crate::json::push_number;

/// What went wrong, worded for the developer of the host page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// `load` was called without a write key.
    MissingWriteKey,
    /// `load` was called without a collector host, outside a page that could supply one.
    MissingHost,
    /// An argument or option has the wrong type or range.
    InvalidArgument {
        /// The argument, by its JavaScript name.
        what: &'static str,
        /// What it must be instead.
        why: &'static str,
    },
    /// A call came before `load`, or after a failed one.
    NotLoaded,
    /// A call was made from inside another one, e.g. by a `toJSON` method of some traits.
    Busy,
    /// `load` was called a second time.
    AlreadyLoaded,
    /// The page offers no `crypto.getRandomValues`, so no id can be minted safely.
    NoRandomSource,
    /// One message is over the collector's per-message limit; it was not queued.
    MessageTooLarge {
        /// The serialised size of the message.
        bytes: usize,
    },
    /// The request did not get an answer (offline, DNS, CORS, a blocked request).
    Unreachable(String),
    /// The collector answered with a status outside 2xx.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The collector's own explanation, or the status text.
        reason: String,
    },
}

impl Error {
    /// The message, e.g. `invalid event: must be a non-empty string`.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        match self {
            Self::MissingWriteKey => {
                text.push_str("missing write key: load needs the write key of an environment");
            }
            Self::MissingHost => text.push_str(
                "missing collector host: pass options.host, e.g. \"https://collector.example\"",
            ),
            Self::InvalidArgument { what, why } => {
                text.push_str("invalid ");
                text.push_str(what);
                text.push_str(": ");
                text.push_str(why);
            }
            Self::NotLoaded => text.push_str("not loaded: call load(writeKey, options) first"),
            Self::Busy => {
                text.push_str("busy: called from inside another ebb call; call again afterwards");
            }
            Self::AlreadyLoaded => {
                text.push_str("already loaded: load may be called once per page");
            }
            Self::NoRandomSource => {
                text.push_str("no secure random source: crypto.getRandomValues is unavailable")
            }
            Self::MessageTooLarge { bytes } => {
                text.push_str("message too large: ");
                push_number(&mut text, *bytes as u64);
                text.push_str(" bytes, the collector accepts at most 32768");
            }
            Self::Unreachable(detail) => {
                text.push_str("could not reach the collector: ");
                text.push_str(detail);
            }
            Self::Rejected { status, reason } => {
                text.push_str("the collector answered ");
                push_number(&mut text, u64::from(*status));
                text.push_str(": ");
                text.push_str(reason);
            }
        }
        text
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl core::error::Error for Error {}

/// The SDK's result type.
pub type Result<T, E = Error> = core::result::Result<T, E>;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_wrong() {
        let invalid = Error::InvalidArgument {
            what: "event",
            why: "must be a string",
        };
        let rejected = Error::Rejected {
            status: 413,
            reason: "too big".into(),
        };

        assert_eq!(invalid.to_string(), "invalid event: must be a string");
        assert_eq!(rejected.to_string(), "the collector answered 413: too big");
        assert_eq!(
            Error::MessageTooLarge { bytes: 40000 }.to_string(),
            "message too large: 40000 bytes, the collector accepts at most 32768"
        );
    }
}
