//! Everything that can go wrong in the SDK, as one error type.
//!
//! The browser bindings never throw: each error becomes the rejection of the promise that the
//! call returned, as a JavaScript `Error` whose message is this type's text behind `ebb: `.

/// What went wrong, worded for the developer of the host page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `load` was called without a write key.
    #[error("missing write key: load needs the write key of an environment")]
    MissingWriteKey,

    /// `load` was called without a collector host, outside a page that could supply one.
    #[error("missing collector host: pass options.host, e.g. \"https://collector.example\"")]
    MissingHost,

    /// An argument or option has the wrong type or range.
    #[error("invalid {what}: {why}")]
    InvalidArgument {
        /// The argument, by its JavaScript name.
        what: &'static str,
        /// What it must be instead.
        why: &'static str,
    },

    /// A call came before `load`, or after a failed one.
    #[error("not loaded: call load(writeKey, options) first")]
    NotLoaded,

    /// A call was made from inside another one, e.g. by a `toJSON` method of some traits.
    #[error("busy: called from inside another ebb call; call again afterwards")]
    Busy,

    /// `load` was called a second time.
    #[error("already loaded: load may be called once per page")]
    AlreadyLoaded,

    /// The page offers no `crypto.getRandomValues`, so no id can be minted safely.
    #[error("no secure random source: crypto.getRandomValues is unavailable")]
    NoRandomSource,

    /// One message is over the collector's per-message limit; it was not queued.
    #[error("message too large: {bytes} bytes, the collector accepts at most {limit}")]
    MessageTooLarge {
        /// The serialised size of the message.
        bytes: usize,
        /// The collector's limit.
        limit: usize,
    },

    /// The request did not get an answer (offline, DNS, CORS, a blocked request).
    #[error("could not reach the collector: {0}")]
    Unreachable(String),

    /// The collector answered with a status outside 2xx.
    #[error("the collector answered {status}: {reason}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The collector's own explanation, or the status text.
        reason: String,
    },
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
