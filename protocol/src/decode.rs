//! Lenient decoding of request bodies into validated messages.
//!
//! Decoding happens in two steps so that one bad message never costs its siblings: the
//! envelope is parsed first ([`decode_batch`], [`decode_single`]), keeping each item as raw
//! JSON; then each item is decoded and validated on its own ([`Envelope::message`]).
//! Limits on the body as a whole (size, compression) belong to the HTTP layer.

use chrono::{DateTime, Datelike as _, NaiveDate, NaiveDateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Message, MessageType, MAX_ID_CHARS, MAX_MESSAGE_BYTES};

/// Why a request body could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but not an object.
    #[error("the body must be a JSON object")]
    NotAnObject,
    /// A batch body without its `batch` array.
    #[error("the body needs a `batch` array of messages")]
    MissingBatch,
}

impl DecodeError {
    /// A stable `snake_case` code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::NotAnObject => "invalid_body",
            Self::MissingBatch => "missing_batch",
        }
    }
}

/// Why one message of a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The item is not a JSON object.
    #[error("a message must be a JSON object")]
    NotAnObject,
    /// The item is larger than [`MAX_MESSAGE_BYTES`].
    #[error("the message is {bytes} bytes; the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge {
        /// The item's size.
        bytes: usize,
    },
    /// A field has the wrong JSON type or an unknown value (`type`, for example).
    #[error("`{field}`: {reason}")]
    InvalidField {
        /// The path to the field, such as `traits` or `type`.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A field the message's type needs is absent or empty.
    #[error("a `{kind}` message needs `{field}`")]
    MissingField {
        /// The message type.
        kind: &'static str,
        /// The field it needs.
        field: &'static str,
    },
    /// Neither `userId` nor `anonymousId` is present.
    #[error("a message needs a `userId` or an `anonymousId`")]
    MissingIdentity,
    /// An id is longer than [`MAX_ID_CHARS`].
    #[error("`{field}` is longer than {MAX_ID_CHARS} characters")]
    IdTooLong {
        /// Which id.
        field: &'static str,
    },
    /// A timestamp is not ISO-8601.
    #[error("`{field}` is not an ISO-8601 timestamp")]
    InvalidTimestamp {
        /// Which timestamp.
        field: &'static str,
    },
}

impl MessageError {
    /// A stable `snake_case` code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::TooLarge { .. } => "message_too_large",
            Self::InvalidField { .. } => "invalid_field",
            Self::MissingField { .. } => "missing_field",
            Self::MissingIdentity => "missing_identity",
            Self::IdTooLong { .. } => "id_too_long",
            Self::InvalidTimestamp { .. } => "invalid_timestamp",
        }
    }
}

/// A parsed request body: what applies to every message, and the messages still raw.
#[derive(Debug)]
pub struct Envelope {
    /// The write key, when the body carries it (`writeKey`).
    pub write_key: Option<String>,
    /// The batch's `sentAt`, applied to messages without their own.
    pub sent_at: Option<String>,
    /// The batch's `context`, merged under each message's own.
    pub context: Map<String, Value>,
    /// The batch's `integrations`, merged under each message's own.
    pub integrations: Map<String, Value>,
    /// The messages, each still raw JSON.
    pub items: Vec<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBatch {
    batch: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    write_key: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
    #[serde(default)]
    context: Option<Map<String, Value>>,
    #[serde(default)]
    integrations: Option<Map<String, Value>>,
}

/// Parses the body of `/v1/batch` (and its aliases).
///
/// # Errors
///
/// [`DecodeError`] when the body is not a JSON object with a `batch` array.
pub fn decode_batch(body: &[u8]) -> Result<Envelope, DecodeError> {
    let value: Box<RawValue> = parse_json(body)?;
    if !value.get().starts_with('{') {
        return Err(DecodeError::NotAnObject);
    }

    let raw: RawBatch =
        serde_json::from_str(value.get()).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;

    Ok(Envelope {
        write_key: raw.write_key,
        sent_at: raw.sent_at,
        context: raw.context.unwrap_or_default(),
        integrations: raw.integrations.unwrap_or_default(),
        items: raw.batch.ok_or(DecodeError::MissingBatch)?,
    })
}

/// Parses the body of a single-message endpoint such as `/v1/track`.
///
/// The endpoint names the type; a `type` in the body is overridden by it.
///
/// # Errors
///
/// [`DecodeError`] when the body is not a JSON object.
pub fn decode_single(body: &[u8], kind: MessageType) -> Result<Envelope, DecodeError> {
    let Value::Object(mut object) = parse_json::<Value>(body)? else {
        return Err(DecodeError::NotAnObject);
    };

    let write_key = match object.remove("writeKey") {
        Some(Value::String(key)) => Some(key),
        _ => None,
    };
    object.insert("type".into(), Value::String(kind.as_str().into()));
    let item = serde_json::value::to_raw_value(&object)
        .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;

    Ok(Envelope {
        write_key,
        sent_at: None,
        context: Map::new(),
        integrations: Map::new(),
        items: vec![item],
    })
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, DecodeError> {
    serde_json::from_slice(body).map_err(|e| DecodeError::InvalidJson(e.to_string()))
}

impl Envelope {
    /// Decodes and validates the item at `index`, with the batch's defaults merged in.
    ///
    /// # Panics
    ///
    /// When `index` is out of bounds.
    ///
    /// # Errors
    ///
    /// [`MessageError`] saying why the message cannot be stored.
    pub fn message(&self, index: usize) -> Result<Message, MessageError> {
        let raw = self.items[index].get();
        if raw.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLarge { bytes: raw.len() });
        }
        if !raw.starts_with('{') {
            return Err(MessageError::NotAnObject);
        }

        let deserializer = &mut serde_json::Deserializer::from_str(raw);
        let mut message: Message = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            // The root path "." means the message itself (a missing `type`, say).
            let field = match e.path().to_string() {
                root if root == "." => "message".to_owned(),
                path => path,
            };
            MessageError::InvalidField {
                field,
                reason: e.into_inner().to_string(),
            }
        })?;

        self.merge_defaults(&mut message);
        validate(&mut message)?;
        Ok(message)
    }

    fn merge_defaults(&self, message: &mut Message) {
        for (key, value) in &self.context {
            message
                .context
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        if !self.integrations.is_empty() {
            let integrations = message.integrations.get_or_insert_with(Map::new);
            for (key, value) in &self.integrations {
                integrations
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        if message.sent_at.is_none() {
            message.sent_at.clone_from(&self.sent_at);
        }
    }
}

/// Normalises empty ids to absent and checks what each type needs.
fn validate(message: &mut Message) -> Result<(), MessageError> {
    if message
        .user_id
        .as_ref()
        .is_some_and(|id| id.as_str().is_empty())
    {
        message.user_id = None;
    }
    if message
        .anonymous_id
        .as_ref()
        .is_some_and(|id| id.as_str().is_empty())
    {
        message.anonymous_id = None;
    }

    let ids = [
        ("userId", message.user_id.as_ref().map(|id| id.as_str())),
        (
            "anonymousId",
            message.anonymous_id.as_ref().map(|id| id.as_str()),
        ),
        (
            "messageId",
            message.message_id.as_ref().map(|id| id.as_str()),
        ),
        ("previousId", message.previous_id.as_deref()),
        ("groupId", message.group_id.as_deref()),
    ];
    for (field, id) in ids {
        if id.is_some_and(|id| id.chars().count() > MAX_ID_CHARS) {
            return Err(MessageError::IdTooLong { field });
        }
    }

    let kind = message.kind.as_str();
    let missing = |field| Err(MessageError::MissingField { kind, field });
    match message.kind {
        MessageType::Alias if message.previous_id.as_deref().unwrap_or("").is_empty() => {
            return missing("previousId");
        }
        MessageType::Alias if message.user_id.is_none() => return missing("userId"),
        MessageType::Track if message.event.as_deref().unwrap_or("").is_empty() => {
            return missing("event");
        }
        MessageType::Group if message.group_id.as_deref().unwrap_or("").is_empty() => {
            return missing("groupId");
        }
        MessageType::Response if message.survey_id.as_deref().unwrap_or("").is_empty() => {
            return missing("surveyId");
        }
        MessageType::Response if message.answers.is_none() => return missing("answers"),
        _ => {}
    }
    if message.user_id.is_none() && message.anonymous_id.is_none() {
        return Err(MessageError::MissingIdentity);
    }

    let stamps = [
        ("timestamp", &message.timestamp),
        ("originalTimestamp", &message.original_timestamp),
        ("sentAt", &message.sent_at),
    ];
    for (field, stamp) in stamps {
        if stamp
            .as_deref()
            .is_some_and(|s| parse_timestamp(s).is_none())
        {
            return Err(MessageError::InvalidTimestamp { field });
        }
    }

    if let Some(field) = field_with_nul(message) {
        return Err(MessageError::InvalidField {
            field: field.into(),
            reason: "text must not contain the NUL character (\\u0000)".into(),
        });
    }
    Ok(())
}

/// The first field holding a NUL character in its text, keys included. PostgreSQL can store
/// none in text or JSONB, so such a message is refused on every backend alike rather than
/// failing the whole batch's transaction on one.
fn field_with_nul(message: &Message) -> Option<&'static str> {
    let texts = [
        (
            "messageId",
            message.message_id.as_ref().map(|id| id.as_str()),
        ),
        ("userId", message.user_id.as_ref().map(|id| id.as_str())),
        (
            "anonymousId",
            message.anonymous_id.as_ref().map(|id| id.as_str()),
        ),
        ("event", message.event.as_deref()),
        ("name", message.name.as_deref()),
        ("category", message.category.as_deref()),
        ("groupId", message.group_id.as_deref()),
        ("previousId", message.previous_id.as_deref()),
        ("surveyId", message.survey_id.as_deref()),
    ];
    let maps = [
        ("context", Some(&message.context)),
        ("integrations", message.integrations.as_ref()),
        ("traits", message.traits.as_ref()),
        ("properties", message.properties.as_ref()),
    ];

    if let Some((field, _)) = texts
        .into_iter()
        .find(|(_, text)| text.is_some_and(|text| text.contains('\0')))
    {
        return Some(field);
    }
    if let Some((field, _)) = maps
        .into_iter()
        .find(|(_, map)| map.is_some_and(map_has_nul))
    {
        return Some(field);
    }
    message
        .answers
        .as_ref()
        .is_some_and(has_nul)
        .then_some("answers")
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map_has_nul(map),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// Recursion is bounded: serde_json refuses JSON nested deeper than 128 levels.
fn map_has_nul(map: &Map<String, Value>) -> bool {
    map.iter()
        .any(|(key, value)| key.contains('\0') || has_nul(value))
}

/// Parses an ISO-8601 timestamp as real clients write them.
///
/// Accepts RFC 3339 (`Z` or `±hh:mm`, any fraction of a second, `T` or a space), offsets
/// without a colon (`+0000`), and times without an offset, which are taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return Some(parsed.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(parsed) = DateTime::parse_from_str(text, format) {
            return Some(parsed.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(parsed) = NaiveDateTime::parse_from_str(text, format) {
            return Some(parsed.and_utc());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}

/// When a message happened, corrected for the client's clock skew.
///
/// The client's time of the event is `originalTimestamp`, or failing that `timestamp`. When
/// the client also says when it sent the message (`sentAt`, by the same clock), the
/// difference between the two is taken from `received_at`, the collector's clock:
/// `received_at − (sentAt − original)`. Without a client time, `received_at` is used.
///
/// A time outside the years 1 to 9999 also falls back to `received_at`, whether the client
/// sent it or the correction produced it (a `sentAt` in the year 7000 moves an event of
/// today back before the year 1): SQLite compares stored times as text, which orders
/// correctly only with four-digit years, and PostgreSQL refuses years before 4713 BC,
/// which would fail the whole batch's transaction.
pub fn event_time(message: &Message, received_at: DateTime<Utc>) -> DateTime<Utc> {
    let stamp = |text: &Option<String>| text.as_deref().and_then(parse_timestamp);
    let original = stamp(&message.original_timestamp).or_else(|| stamp(&message.timestamp));

    let time = match (original, stamp(&message.sent_at)) {
        // An absurd skew (a client clock off by millennia) falls back to the collector's time
        // rather than overflowing.
        (Some(original), Some(sent_at)) => received_at.checked_sub_signed(sent_at - original),
        (Some(original), None) => Some(original),
        (None, _) => None,
    };
    time.filter(|time| (1..=9999).contains(&time.year()))
        .unwrap_or(received_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(timestamp: &str, sent_at: Option<&str>) -> Message {
        let mut message = Message::new(MessageType::Track);
        message.timestamp = Some(timestamp.into());
        message.sent_at = sent_at.map(Into::into);
        message
    }

    fn utc(text: &str) -> DateTime<Utc> {
        parse_timestamp(text).unwrap()
    }

    #[test]
    fn batch_integrations_merge_into_each_message_and_the_message_keys_win() {
        let body = br#"{"batch": [
            {"type": "track", "event": "e", "userId": "u",
             "integrations": {"All": false, "Mixpanel": true}},
            {"type": "track", "event": "e", "userId": "u"}
        ], "integrations": {"All": true, "Amplitude": false}}"#;
        let envelope = decode_batch(body).unwrap();

        let with_own = envelope.message(0).unwrap().integrations;
        let without_own = envelope.message(1).unwrap().integrations;

        let expected_with_own =
            serde_json::json!({"All": false, "Mixpanel": true, "Amplitude": false});
        let expected_without_own = serde_json::json!({"All": true, "Amplitude": false});
        assert_eq!(with_own.map(Value::Object), Some(expected_with_own));
        assert_eq!(without_own.map(Value::Object), Some(expected_without_own));
    }

    #[test]
    fn a_sent_at_millennia_ahead_cannot_move_an_event_before_the_year_one() {
        let received_at = utc("2026-03-01T12:00:00Z");
        let message = track("2026-03-01T11:59:00Z", Some("7385-12-02T00:30:13Z"));

        let time = event_time(&message, received_at);

        assert_eq!(time, received_at);
    }

    #[test]
    fn a_client_time_with_more_than_four_year_digits_takes_the_receive_time() {
        let received_at = utc("2026-03-01T12:00:00Z");
        let message = track("+20000-01-01T00:00:00+0000", None);

        let time = event_time(&message, received_at);

        assert_eq!(time, received_at);
    }

    #[test]
    fn times_in_the_years_one_and_9999_are_kept() {
        let received_at = utc("2026-03-01T12:00:00Z");

        for stamp in ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
            assert_eq!(event_time(&track(stamp, None), received_at), utc(stamp));
        }
    }
}
