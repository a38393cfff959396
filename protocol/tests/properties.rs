//! Invariants of lenient decoding that hold for every input, checked on generated ones.
//!
//! The table tests in `real_clients.rs` pin what known clients send; these properties cover
//! what nobody thought to write down: arbitrary bytes and JSON never panic the decoder, any
//! valid message survives the trip through the wire unchanged, a NUL character anywhere in
//! one refuses it, clock-skew correction is exact over years of dates, and every RFC 3339
//! spelling of an instant parses back to it.

use chrono::{DateTime, Datelike as _, FixedOffset, SecondsFormat, TimeDelta, TimeZone, Utc};
use ebb_protocol::decode::{decode_batch, decode_single, event_time, parse_timestamp};
use ebb_protocol::{AnonymousId, Message, MessageId, MessageType, UserId};
use ebb_protocol::{MAX_ID_CHARS, MAX_MESSAGE_BYTES};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

const KINDS: [MessageType; 7] = [
    MessageType::Identify,
    MessageType::Track,
    MessageType::Page,
    MessageType::Screen,
    MessageType::Group,
    MessageType::Alias,
    MessageType::Response,
];

/// The field names of a message, so that generated objects often look like messages.
const FIELDS: [&str; 18] = [
    "type",
    "messageId",
    "userId",
    "anonymousId",
    "timestamp",
    "originalTimestamp",
    "sentAt",
    "context",
    "integrations",
    "traits",
    "event",
    "properties",
    "name",
    "category",
    "groupId",
    "previousId",
    "surveyId",
    "answers",
];

/// Seconds from 0001-01-01T00:00:00Z and to 9999-12-31T23:59:59Z.
const YEAR_1: i64 = -62_135_596_800;
const YEAR_9999_END: i64 = 253_402_300_799;

const DAY_NANOS: i64 = 86_400 * 1_000_000_000;
const HOUR_NANOS: i64 = 3_600 * 1_000_000_000;
const TEN_YEARS_NANOS: i64 = 3_653 * DAY_NANOS;

fn kind() -> impl Strategy<Value = MessageType> {
    prop::sample::select(KINDS.to_vec())
}

fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        any::<i64>().prop_map(Number::from),
        any::<u64>().prop_map(Number::from),
        (prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO)
            .prop_map(|float| Number::from_f64(float).expect("generated floats are finite")),
    ]
}

/// Any JSON value: unicode and control characters in strings and keys, integers at both
/// ends of 64 bits, floats from subnormal to near the largest, nested arrays and objects.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number().prop_map(Value::Number),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(text(), inner, 0..5).prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn json_map() -> impl Strategy<Value = Map<String, Value>> {
    btree_map(text(), json_value(), 0..5).prop_map(|map| map.into_iter().collect())
}

/// Short text of any characters but NUL (which no backend may store), control characters
/// and quotes included.
fn text() -> impl Strategy<Value = String> {
    "[^\\x00]{0,16}"
}

/// An object whose keys are mostly message fields, with values of any type.
fn message_like_object() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        4 => prop::sample::select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => text(),
    ];
    let value = prop_oneof![
        2 => json_value(),
        1 => prop::sample::select(KINDS.to_vec()).prop_map(|kind| json!(kind.as_str())),
        1 => "\\PC{0,12}".prop_map(Value::String),
    ];
    btree_map(key, value, 0..10).prop_map(|map| Value::Object(map.into_iter().collect()))
}

/// An id of printable characters, possibly empty, never over the length limit.
fn id() -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("\\PC{{0,{MAX_ID_CHARS}}}"))
        .expect("the id pattern is a valid regex")
}

fn non_empty_id() -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("\\PC{{1,{MAX_ID_CHARS}}}"))
        .expect("the id pattern is a valid regex")
}

/// An instant anywhere in years 1 to 9999, to the nanosecond.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (YEAR_1..=YEAR_9999_END, 0..1_000_000_000u32).prop_map(|(seconds, nanos)| {
        DateTime::from_timestamp(seconds, nanos).expect("years 1 to 9999 are in range")
    })
}

/// An instant within ten years of 2024, to the nanosecond.
fn recent_instant() -> impl Strategy<Value = DateTime<Utc>> {
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .single()
        .expect("2024-01-01 is a valid date");
    (-TEN_YEARS_NANOS..=TEN_YEARS_NANOS).prop_map(move |nanos| base + TimeDelta::nanoseconds(nanos))
}

fn rfc3339(instant: DateTime<Utc>) -> String {
    instant.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The ids and timestamps of a message: each may be absent, ids may be empty.
#[derive(Debug, Clone)]
struct Header {
    message_id: Option<String>,
    user_id: Option<String>,
    anonymous_id: Option<String>,
    fallback_id: String,
    timestamps: [Option<DateTime<Utc>>; 3],
}

fn header() -> impl Strategy<Value = Header> {
    (
        option::of(id()),
        option::of(id()),
        option::of(id()),
        non_empty_id(),
        [
            option::of(any_instant()),
            option::of(any_instant()),
            option::of(any_instant()),
        ],
    )
        .prop_map(
            |(message_id, user_id, anonymous_id, fallback_id, timestamps)| Header {
                message_id,
                user_id,
                anonymous_id,
                fallback_id,
                timestamps,
            },
        )
}

/// The payload of a message: maps of any JSON, and the type-specific fields.
#[derive(Debug, Clone)]
struct Body {
    context: Map<String, Value>,
    integrations: Option<Map<String, Value>>,
    traits: Option<Map<String, Value>>,
    properties: Option<Map<String, Value>>,
    event: String,
    name: Option<String>,
    category: Option<String>,
    answers: Value,
}

fn body() -> impl Strategy<Value = Body> {
    (
        json_map(),
        option::of(json_map()),
        option::of(json_map()),
        option::of(json_map()),
        "[^\\x00]{1,100}",
        option::of(text()),
        option::of(text()),
        json_value().prop_filter("null answers are absent", |answers| !answers.is_null()),
    )
        .prop_map(
            |(context, integrations, traits, properties, event, name, category, answers)| Body {
                context,
                integrations,
                traits,
                properties,
                event,
                name,
                category,
                answers,
            },
        )
}

/// Builds a message that the decoder must accept, and the message it must decode to: the
/// same, with empty ids turned into absent ones.
fn valid_message(kind: MessageType, header: Header, body: Body) -> (Message, Message) {
    let mut sent = Message::new(kind);
    sent.message_id = header.message_id.map(MessageId::new);
    sent.user_id = header.user_id.map(UserId::new);
    sent.anonymous_id = header.anonymous_id.map(AnonymousId::new);
    let no_user = sent
        .user_id
        .as_ref()
        .is_none_or(|id| id.as_str().is_empty());
    let no_visitor = sent
        .anonymous_id
        .as_ref()
        .is_none_or(|id| id.as_str().is_empty());
    // Every message needs an identity, and an alias needs the user id it aliases to.
    if no_user && (no_visitor || kind == MessageType::Alias) {
        sent.user_id = Some(UserId::new(header.fallback_id.clone()));
    }
    let [timestamp, original, sent_at] = header.timestamps.map(|t| t.map(rfc3339));
    sent.timestamp = timestamp;
    sent.original_timestamp = original;
    sent.sent_at = sent_at;
    sent.context = body.context;
    sent.integrations = body.integrations;
    sent.name = body.name;
    sent.category = body.category;
    match kind {
        MessageType::Identify => sent.traits = body.traits,
        MessageType::Track => {
            sent.event = Some(body.event);
            sent.properties = body.properties;
        }
        MessageType::Page | MessageType::Screen => sent.properties = body.properties,
        MessageType::Group => {
            sent.group_id = Some(header.fallback_id);
            sent.traits = body.traits;
        }
        MessageType::Alias => sent.previous_id = Some(header.fallback_id),
        MessageType::Response => {
            sent.survey_id = Some(header.fallback_id);
            sent.answers = Some(body.answers);
        }
    }

    // Only user and anonymous ids are normalised; an empty message id stays as sent.
    let mut expected = sent.clone();
    if expected
        .user_id
        .as_ref()
        .is_some_and(|id| id.as_str().is_empty())
    {
        expected.user_id = None;
    }
    if expected
        .anonymous_id
        .as_ref()
        .is_some_and(|id| id.as_str().is_empty())
    {
        expected.anonymous_id = None;
    }
    (sent, expected)
}

/// Either arbitrary bytes, or JSON text of a batch that is cut short or has a byte changed.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    let batch = vec(prop_oneof![json_value(), message_like_object()], 0..4)
        .prop_map(|items| json!({"batch": items, "sentAt": "2024-05-01T12:00:00Z"}).to_string());
    prop_oneof![
        any::<Vec<u8>>(),
        batch.clone().prop_map(String::into_bytes),
        (batch.clone(), any::<prop::sample::Index>()).prop_map(|(text, cut)| {
            let bytes = text.into_bytes();
            bytes[..cut.index(bytes.len() + 1)].to_vec()
        }),
        (batch, any::<prop::sample::Index>(), any::<u8>()).prop_map(|(text, at, byte)| {
            let mut bytes = text.into_bytes();
            let at = at.index(bytes.len());
            bytes[at] = byte;
            bytes
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_any_bytes_returns_a_result_with_a_code(bytes in body_bytes(), kind in kind()) {
        let batch = decode_batch(&bytes);
        let single = decode_single(&bytes, kind);

        for error in [batch.err(), single.err()].into_iter().flatten() {
            prop_assert!(!error.code().is_empty());
        }
    }

    #[test]
    fn any_batch_item_is_accepted_with_an_identity_or_refused_with_a_code(
        item in prop_oneof![json_value(), message_like_object()],
    ) {
        let body = json!({"batch": [item]}).to_string();
        let envelope = decode_batch(body.as_bytes()).expect("the envelope is well formed");

        let decoded = envelope.message(0);

        match decoded {
            Ok(message) => {
                let ids = [
                    message.user_id.as_ref().map(UserId::as_str),
                    message.anonymous_id.as_ref().map(AnonymousId::as_str),
                ];
                prop_assert!(ids.iter().flatten().any(|id| !id.is_empty()));
                prop_assert!(ids.iter().flatten().all(|id| id.chars().count() <= MAX_ID_CHARS));
            }
            Err(error) => prop_assert!(!error.code().is_empty(), "{error}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_valid_message_survives_the_wire_unchanged_but_for_empty_ids(
        kind in kind(),
        header in header(),
        body in body(),
    ) {
        let (sent, expected) = valid_message(kind, header, body);
        let item = serde_json::to_string(&sent).unwrap();
        let batch = format!(r#"{{"batch":[{item}]}}"#);

        let decoded = decode_batch(batch.as_bytes()).unwrap().message(0);

        if item.len() > MAX_MESSAGE_BYTES {
            prop_assert_eq!(decoded.unwrap_err().code(), "message_too_large");
        } else {
            prop_assert_eq!(decoded.unwrap(), expected);
        }
    }
}

/// Where a generated message gets a NUL character.
#[derive(Debug, Clone, Copy)]
enum NulSpot {
    UserId,
    AnonymousId,
    MessageId,
    Event,
    PropertyKey,
    PropertyValue,
    DeepInContext,
    Answers,
}

fn nul_spot() -> impl Strategy<Value = NulSpot> {
    prop::sample::select(vec![
        NulSpot::UserId,
        NulSpot::AnonymousId,
        NulSpot::MessageId,
        NulSpot::Event,
        NulSpot::PropertyKey,
        NulSpot::PropertyValue,
        NulSpot::DeepInContext,
        NulSpot::Answers,
    ])
}

/// Puts `text` at `spot` in `message`; gives the field the refusal must name.
fn put_nul_text(message: &mut Message, spot: NulSpot, text: String) -> &'static str {
    match spot {
        NulSpot::UserId => {
            message.user_id = Some(UserId::new(text));
            "userId"
        }
        NulSpot::AnonymousId => {
            message.anonymous_id = Some(AnonymousId::new(text));
            "anonymousId"
        }
        NulSpot::MessageId => {
            message.message_id = Some(MessageId::new(text));
            "messageId"
        }
        NulSpot::Event => {
            message.event = Some(text);
            "event"
        }
        NulSpot::PropertyKey => {
            let properties = message.properties.get_or_insert_with(Map::new);
            properties.insert(text, json!(1));
            "properties"
        }
        NulSpot::PropertyValue => {
            let properties = message.properties.get_or_insert_with(Map::new);
            properties.insert("with nul".into(), json!(text));
            "properties"
        }
        NulSpot::DeepInContext => {
            let deep = json!({"a": [{"b": [[text]]}]});
            message.context.insert("deep".into(), deep);
            "context"
        }
        NulSpot::Answers => {
            message.answers = Some(json!({"q1": text}));
            "answers"
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_nul_character_anywhere_refuses_the_message_naming_the_field(
        kind in kind(),
        header in header(),
        body in body(),
        spot in nul_spot(),
        (before, after) in (text(), text()),
    ) {
        let (mut message, _) = valid_message(kind, header, body);
        let field = put_nul_text(&mut message, spot, format!("{before}\0{after}"));
        let item = serde_json::to_string(&message).unwrap();
        prop_assume!(item.len() <= MAX_MESSAGE_BYTES);
        let batch = format!(r#"{{"batch":[{item}]}}"#);

        let error = decode_batch(batch.as_bytes()).unwrap().message(0).unwrap_err();

        prop_assert_eq!(error.code(), "invalid_field");
        prop_assert!(error.to_string().starts_with(&format!("`{field}`")), "{}", error);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn clock_skew_is_removed_and_the_true_time_recovered(
        happened in recent_instant(),
        skew in -DAY_NANOS..=DAY_NANOS,
        transit in 0..=HOUR_NANOS,
    ) {
        let skew = TimeDelta::nanoseconds(skew);
        let received_at = happened + TimeDelta::nanoseconds(transit);
        let original = happened + skew;
        let sent_at = received_at + skew;
        let mut message = Message::new(MessageType::Track);
        message.timestamp = Some(rfc3339(original));
        message.sent_at = Some(rfc3339(sent_at));

        let time = event_time(&message, received_at);

        prop_assert_eq!(time, received_at - (sent_at - original));
        prop_assert_eq!(time, happened);
    }

    #[test]
    fn a_message_sent_when_it_happened_takes_the_receive_time(
        client_time in recent_instant(),
        received_at in recent_instant(),
    ) {
        let mut message = Message::new(MessageType::Track);
        message.timestamp = Some(rfc3339(client_time));
        message.sent_at = message.timestamp.clone();

        let time = event_time(&message, received_at);

        prop_assert_eq!(time, received_at);
    }

    #[test]
    fn without_sent_at_the_client_time_is_kept(
        client_time in any_instant(),
        received_at in any_instant(),
    ) {
        let mut message = Message::new(MessageType::Track);
        message.timestamp = Some(rfc3339(client_time));

        let time = event_time(&message, received_at);

        prop_assert_eq!(time, client_time);
    }

    #[test]
    fn skew_correction_of_extreme_dates_never_panics(
        original in any_instant(),
        sent_at in any_instant(),
        received_at in any_instant(),
        field in prop::sample::select(vec!["timestamp", "originalTimestamp"]),
    ) {
        let mut message = Message::new(MessageType::Track);
        if field == "timestamp" {
            message.timestamp = Some(rfc3339(original));
        } else {
            message.original_timestamp = Some(rfc3339(original));
        }
        message.sent_at = Some(rfc3339(sent_at));

        let time = event_time(&message, received_at);

        // Years 1 to 9999 are far inside chrono's range, so the correction is exact; a
        // corrected time outside those years, which the backends cannot store alike, falls
        // back to the receive time.
        let corrected = received_at - (sent_at - original);
        let storable = (1..=9999).contains(&corrected.year());
        prop_assert_eq!(time, if storable { corrected } else { received_at });
    }
}

/// How a generated timestamp spells its offset.
#[derive(Debug, Clone, Copy)]
enum Offset {
    Z,
    Zero,
    Minutes(i32),
}

fn offset() -> impl Strategy<Value = Offset> {
    prop_oneof![
        Just(Offset::Z),
        Just(Offset::Zero),
        (-(24 * 60 - 1)..24 * 60).prop_map(Offset::Minutes),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_rfc3339_timestamp_parses_back_to_its_instant(
        // A day inside each end of years 1 to 9999, so every offset keeps a 4-digit year.
        seconds in YEAR_1 + 86_400..=YEAR_9999_END - 86_400,
        nanos in 0..1_000_000_000u32,
        digits in prop::sample::select(vec![0u32, 3, 6, 9]),
        offset in offset(),
        space in any::<bool>(),
    ) {
        let instant = DateTime::from_timestamp(seconds, nanos).unwrap();
        let format = match digits {
            0 => SecondsFormat::Secs,
            3 => SecondsFormat::Millis,
            6 => SecondsFormat::Micros,
            _ => SecondsFormat::Nanos,
        };
        let mut text = match offset {
            Offset::Z => instant.to_rfc3339_opts(format, true),
            Offset::Zero => instant.to_rfc3339_opts(format, false),
            Offset::Minutes(minutes) => {
                let zone = FixedOffset::east_opt(minutes * 60).unwrap();
                instant.with_timezone(&zone).to_rfc3339_opts(format, false)
            }
        };
        if space {
            text.replace_range(10..11, " ");
        }
        let unit = 10u32.pow(9 - digits);
        let expected = DateTime::from_timestamp(seconds, nanos - nanos % unit).unwrap();

        let parsed = parse_timestamp(&text);

        prop_assert_eq!(parsed, Some(expected), "{}", text);
    }
}
