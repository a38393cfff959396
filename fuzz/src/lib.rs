//! Invariants shared by the fuzz targets.
//!
//! Each check panics with a message saying which promise broke, so that libFuzzer records
//! the input as a crash. A target that only calls the code under test finds panics; these
//! checks also find answers that are wrong without panicking: a message accepted without
//! an id, a limit not enforced, a decoded message that decodes differently once written
//! back.

use chrono::{DateTime, Datelike as _, TimeDelta, Utc};
use ebb_protocol::decode::{self, Envelope};
use ebb_protocol::{Message, MessageType, MAX_ID_CHARS, MAX_MESSAGE_BYTES};
use serde_json::Value;

/// The message types of the single-message routes, in the order the targets pick them.
pub const SINGLE_KINDS: [MessageType; 6] = [
    MessageType::Identify,
    MessageType::Track,
    MessageType::Page,
    MessageType::Screen,
    MessageType::Group,
    MessageType::Alias,
];

/// A fixed receipt time, so that a crash replays the same way on any day.
pub fn received_at() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

/// Decodes every item of an envelope and checks each answer, accepted or refused.
pub fn check_envelope(envelope: &Envelope, forced_kind: Option<MessageType>) {
    for index in 0..envelope.items.len() {
        match envelope.message(index) {
            Ok(message) => {
                let raw = envelope.items[index].get();
                assert!(
                    raw.len() <= MAX_MESSAGE_BYTES,
                    "an item of {} bytes was accepted",
                    raw.len()
                );
                if let Some(kind) = forced_kind {
                    assert_eq!(message.kind, kind, "the route's type was not applied");
                }
                for key in envelope.context.keys() {
                    assert!(
                        message.context.contains_key(key),
                        "the batch context key {key:?} was not merged"
                    );
                }
                if envelope.sent_at.is_some() {
                    assert!(message.sent_at.is_some(), "the batch sentAt was not merged");
                }
                check_message(&message);
            }
            Err(error) => check_code(error.code(), &error.to_string()),
        }
    }
}

/// What holds for every message the decoder accepts.
pub fn check_message(message: &Message) {
    let user_id = message.user_id.as_ref().map(|id| id.as_str());
    let anonymous_id = message.anonymous_id.as_ref().map(|id| id.as_str());
    assert!(
        user_id.is_some() || anonymous_id.is_some(),
        "a message was accepted without userId or anonymousId"
    );
    for (field, id) in [
        ("userId", user_id),
        ("anonymousId", anonymous_id),
        (
            "messageId",
            message.message_id.as_ref().map(|id| id.as_str()),
        ),
        ("previousId", message.previous_id.as_deref()),
        ("groupId", message.group_id.as_deref()),
    ] {
        if let Some(id) = id {
            assert!(
                id.chars().count() <= MAX_ID_CHARS,
                "{field} over {MAX_ID_CHARS} characters was accepted"
            );
        }
    }
    for (field, id) in [("userId", user_id), ("anonymousId", anonymous_id)] {
        assert!(
            id != Some(""),
            "an empty {field} was kept instead of dropped"
        );
    }

    let filled = |text: &Option<String>| text.as_deref().is_some_and(|text| !text.is_empty());
    match message.kind {
        MessageType::Track => assert!(filled(&message.event), "a track without event"),
        MessageType::Group => assert!(filled(&message.group_id), "a group without groupId"),
        MessageType::Alias => {
            assert!(filled(&message.previous_id), "an alias without previousId");
            assert!(user_id.is_some(), "an alias without userId");
        }
        MessageType::Response => {
            assert!(filled(&message.survey_id), "a response without surveyId");
            assert!(message.answers.is_some(), "a response without answers");
        }
        MessageType::Identify | MessageType::Page | MessageType::Screen => {}
    }

    for stamp in [
        &message.timestamp,
        &message.original_timestamp,
        &message.sent_at,
    ]
    .into_iter()
    .flatten()
    {
        let parsed = decode::parse_timestamp(stamp);
        assert!(parsed.is_some(), "an unreadable timestamp was accepted");
    }
    check_event_time(message);

    let json = serde_json::to_value(message).unwrap_or_else(|e| panic!("unserialisable: {e}"));
    assert!(!has_nul(&json), "a NUL character was accepted");

    check_round_trip(message);
}

/// The event time is one both backends can store and order: years 1 to 9999.
fn check_event_time(message: &Message) {
    let received = received_at();
    let time = decode::event_time(message, received);
    assert!(
        (1..=9999).contains(&time.year()),
        "event time {time:?} is outside the years 1 to 9999"
    );

    // The clock of the collector is not the fuzzer's to pick, but any sane one works too.
    for received in [
        received - TimeDelta::days(365 * 50),
        received + TimeDelta::days(365 * 50),
    ] {
        let time = decode::event_time(message, received);
        assert!(
            (1..=9999).contains(&time.year()),
            "event time {time:?} is outside the years 1 to 9999"
        );
    }
}

/// Writing an accepted message back to JSON and decoding that gives the same message, as
/// a batch item and through the single-message route of its type.
fn check_round_trip(message: &Message) {
    let text = serde_json::to_string(message).unwrap_or_else(|e| panic!("unserialisable: {e}"));
    if text.len() > MAX_MESSAGE_BYTES {
        // Written back it can be longer than it came (`1e5` becomes `100000.0`, batch
        // defaults are merged in), so it may no longer fit; that is not a decoding fault.
        return;
    }

    let body = format!("{{\"batch\":[{text}]}}");
    let envelope = decode::decode_batch(body.as_bytes())
        .unwrap_or_else(|e| panic!("a re-encoded message is not a batch: {e}"));
    let again = envelope
        .message(0)
        .unwrap_or_else(|e| panic!("a re-encoded message was refused: {e}"));
    assert_eq!(&again, message, "a re-encoded message decodes differently");

    if SINGLE_KINDS.contains(&message.kind) {
        let envelope = decode::decode_single(text.as_bytes(), message.kind)
            .unwrap_or_else(|e| panic!("a re-encoded message is not a body: {e}"));
        let again = envelope
            .message(0)
            .unwrap_or_else(|e| panic!("a re-encoded single message was refused: {e}"));
        assert_eq!(
            &again, message,
            "a re-encoded single message decodes differently"
        );
    }
}

/// Error codes are stable `snake_case` words, and every error says something.
pub fn check_code(code: &str, message: &str) {
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "error code {code:?} is not snake_case"
    );
    assert!(!message.is_empty(), "error {code} has no message");
}

/// Whether any string or key in the value holds a NUL character.
pub fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// The lenient timestamp parser: whatever it accepts survives RFC 3339 and back.
pub fn check_timestamp(text: &str) {
    let Some(time) = decode::parse_timestamp(text) else {
        return;
    };
    if !(0..=9999).contains(&time.year()) {
        // RFC 3339 has four-digit years only; such a time cannot be written as one.
        return;
    }
    let written = time.to_rfc3339();
    assert_eq!(
        decode::parse_timestamp(&written),
        Some(time),
        "{written} does not read back as the time it was written from"
    );
}
