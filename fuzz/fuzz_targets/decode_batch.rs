//! Batch and message parsing: `decode_batch`, `decode_single` and each message.
//!
//! The input is a request body as a client would send it. Beyond not panicking, every
//! accepted message must have a type and an id, stay within the limits, carry the batch's
//! defaults, give an event time both backends can store, and decode to itself again once
//! written back to JSON (see `ebb_fuzz::check_message`).

#![no_main]

use ebb_fuzz::{check_code, check_envelope, check_timestamp, SINGLE_KINDS};
use ebb_protocol::decode::{decode_batch, decode_single};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    match decode_batch(body) {
        Ok(envelope) => check_envelope(&envelope, None),
        Err(error) => check_code(error.code(), &error.to_string()),
    }

    // The same body on a single-message route, its type picked by the length so that the
    // corpus stays plain request bodies.
    let kind = SINGLE_KINDS[body.len() % SINGLE_KINDS.len()];
    match decode_single(body, kind) {
        Ok(envelope) => {
            assert_eq!(envelope.items.len(), 1, "a single body made several items");
            check_envelope(&envelope, Some(kind));
        }
        Err(error) => check_code(error.code(), &error.to_string()),
    }

    // Short inputs double as timestamps, the lenient parser's own corner.
    if let Ok(text) = std::str::from_utf8(body) {
        if text.len() <= 64 {
            check_timestamp(text);
        }
    }
});
