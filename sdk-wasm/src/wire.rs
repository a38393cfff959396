//! The collector's limits and message type names, as the SDK needs them.
//!
//! `ebb-protocol` owns these, but it links the standard library (serde), and the wasm module
//! is built without it so that panics carry no formatting code. So the few values the SDK
//! checks against are repeated here, and a native test holds them equal to the protocol's.

/// The largest accepted message, in bytes (`ebb_protocol::MAX_MESSAGE_BYTES`).
pub(crate) const MAX_MESSAGE_BYTES: usize = 32 * 1024;

/// The largest accepted batch body, in bytes (`ebb_protocol::MAX_BATCH_BYTES`).
pub(crate) const MAX_BATCH_BYTES: usize = 500 * 1024;

/// The longest accepted id, in characters (`ebb_protocol::MAX_ID_CHARS`).
pub(crate) const MAX_ID_CHARS: usize = 1000;

/// The `type` of each kind of message (`ebb_protocol::MessageType::as_str`).
pub(crate) const IDENTIFY: &str = "identify";
pub(crate) const TRACK: &str = "track";
pub(crate) const PAGE: &str = "page";
pub(crate) const GROUP: &str = "group";
pub(crate) const ALIAS: &str = "alias";
pub(crate) const RESPONSE: &str = "response";

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use ebb_protocol::MessageType;

    use super::*;

    #[test]
    fn limits_and_names_match_the_protocol() {
        assert_eq!(MAX_MESSAGE_BYTES, ebb_protocol::MAX_MESSAGE_BYTES);
        assert_eq!(MAX_BATCH_BYTES, ebb_protocol::MAX_BATCH_BYTES);
        assert_eq!(MAX_ID_CHARS, ebb_protocol::MAX_ID_CHARS);
        for (name, kind) in [
            (IDENTIFY, MessageType::Identify),
            (TRACK, MessageType::Track),
            (PAGE, MessageType::Page),
            (GROUP, MessageType::Group),
            (ALIAS, MessageType::Alias),
            (RESPONSE, MessageType::Response),
        ] {
            assert_eq!(name, kind.as_str());
        }
    }
}
