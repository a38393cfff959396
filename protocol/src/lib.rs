//! The wire contract between Ebb's browser SDK and its collector.
//!
//! Ebb speaks the Segment HTTP Tracking API so that existing server libraries can send to it
//! unchanged. This crate owns the Rust shape of that format: the [`Message`] a client sends,
//! the ids inside it, and the bodies the collector answers with. Both sides build on these
//! types, so they agree by construction.
//!
//! With the default `server` feature the crate also decodes what real clients send, leniently
//! (see [`decode`]): traits that only arrive in `context.traits`, `anonymousId: null`, numeric
//! ids, offsets like `+00:00` with microseconds, and batch-level `context` and `sentAt`. The
//! SDK turns the feature off; it only serialises messages. The `openapi` feature adds the
//! JSON Schemas of these types for the collector's OpenAPI description (see [`openapi`]).
//!
//! ```
//! use ebb_protocol::{Message, MessageType};
//!
//! let json = r#"{"type":"track","event":"Signed Up","userId":"u1","messageId":"m1"}"#;
//! let message: Message = serde_json::from_str(json).unwrap();
//! assert_eq!(message.kind, MessageType::Track);
//! assert_eq!(message.event.as_deref(), Some("Signed Up"));
//! ```

#![forbid(unsafe_code)]

#[cfg(feature = "server")]
pub mod decode;
mod ids;
mod message;
#[cfg(feature = "openapi")]
pub mod openapi;
mod response;

pub use ids::{AnonymousId, MessageId, UserId};
pub use message::{Message, MessageType};
pub use response::{ErrorBody, Rejection, SuccessBody};

/// The largest accepted message, serialised, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The largest accepted request body (a batch), in bytes, after decompression.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The longest accepted id (user id, anonymous id, message id), in characters.
pub const MAX_ID_CHARS: usize = 1000;
