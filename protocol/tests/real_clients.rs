//! Payloads shaped like those the mainstream server libraries send, decoded end to end.
//!
//! Each body below is written after the documented format of one library: Segment's
//! analytics-python, analytics-node, analytics-go and analytics-ruby, and RudderStack's
//! server SDKs, which share the format but add fields of their own.

use chrono::{TimeZone, Utc};
use ebb_protocol::decode::{decode_batch, decode_single, event_time, parse_timestamp};
use ebb_protocol::decode::{DecodeError, MessageError};
use ebb_protocol::MessageType;
use rstest::rstest;

const PYTHON_BATCH: &str = r#"{
  "batch": [
    {
      "type": "identify",
      "userId": "user-17",
      "anonymousId": null,
      "traits": {"email": "ada@example.com", "plan": "pro", "logins": 3},
      "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
      "timestamp": "2024-05-01T12:00:00.123456+00:00",
      "integrations": {},
      "messageId": "4e8c59fd-6c5f-4f5e-9d4f-5d1c1e1d8a01"
    },
    {
      "type": "track",
      "userId": "user-17",
      "anonymousId": null,
      "event": "Order Completed",
      "properties": {"revenue": 42.5, "currency": "EUR"},
      "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
      "timestamp": "2024-05-01T12:00:02.000001+00:00",
      "integrations": {},
      "messageId": "4e8c59fd-6c5f-4f5e-9d4f-5d1c1e1d8a02"
    }
  ],
  "sentAt": "2024-05-01T12:00:05.5+00:00"
}"#;

const NODE_BATCH: &str = r#"{
  "batch": [
    {
      "type": "page",
      "anonymousId": "0d8a6d3a-4e8b-4d8f-b1b0-1c2c3d4e5f60",
      "name": "Pricing",
      "properties": {"path": "/pricing", "url": "https://shop.example/pricing"},
      "context": {"library": {"name": "@segment/analytics-node", "version": "2.1.0"}},
      "_metadata": {"nodeVersion": "20.11.0", "jsRuntime": "node"},
      "timestamp": "2024-05-01T12:00:00.000Z",
      "messageId": "node-next-1714564800000-a1b2c3",
      "integrations": {}
    }
  ],
  "writeKey": "wk_node",
  "sentAt": "2024-05-01T12:00:00.250Z"
}"#;

const RUDDERSTACK_BATCH: &str = r#"{
  "batch": [
    {
      "type": "identify",
      "anonymousId": "anon-9",
      "channel": "server",
      "rudderId": "a7b3c2d1-0000-4000-8000-000000000000",
      "context": {
        "library": {"name": "analytics-go", "version": "4.1.0"},
        "traits": {"name": "Grace", "company": "Navy"}
      },
      "originalTimestamp": "2024-05-01T11:59:58.123456789Z",
      "sentAt": "2024-05-01T12:00:00.123456789Z",
      "messageId": "rs-1"
    }
  ],
  "context": {"ip": "203.0.113.9"}
}"#;

#[test]
fn python_batch_decodes_with_null_anonymous_id_and_microseconds() {
    let envelope = decode_batch(PYTHON_BATCH.as_bytes()).unwrap();

    let identify = envelope.message(0).unwrap();
    let track = envelope.message(1).unwrap();

    assert_eq!(envelope.items.len(), 2);
    assert_eq!(identify.kind, MessageType::Identify);
    assert_eq!(identify.anonymous_id, None);
    assert_eq!(identify.user_id.as_ref().unwrap().as_str(), "user-17");
    assert_eq!(identify.effective_traits().unwrap()["logins"], 3);
    assert_eq!(track.event.as_deref(), Some("Order Completed"));
    assert_eq!(track.properties.as_ref().unwrap()["revenue"], 42.5);
    assert_eq!(
        track.sent_at.as_deref(),
        Some("2024-05-01T12:00:05.5+00:00")
    );
}

#[test]
fn node_batch_carries_its_write_key_and_ignores_unknown_fields() {
    let envelope = decode_batch(NODE_BATCH.as_bytes()).unwrap();

    let page = envelope.message(0).unwrap();

    assert_eq!(envelope.write_key.as_deref(), Some("wk_node"));
    assert_eq!(page.kind, MessageType::Page);
    assert_eq!(page.name.as_deref(), Some("Pricing"));
    assert_eq!(
        page.message_id.unwrap().as_str(),
        "node-next-1714564800000-a1b2c3"
    );
}

#[test]
fn rudderstack_traits_in_context_and_batch_context_are_merged() {
    let envelope = decode_batch(RUDDERSTACK_BATCH.as_bytes()).unwrap();

    let identify = envelope.message(0).unwrap();

    assert_eq!(identify.effective_traits().unwrap()["company"], "Navy");
    assert_eq!(identify.context["ip"], "203.0.113.9");
    assert_eq!(identify.context["library"]["name"], "analytics-go");
}

#[test]
fn message_context_wins_over_batch_context() {
    let body = r#"{"batch":[{"type":"track","event":"e","userId":"u",
                   "context":{"locale":"de-DE"}}],"context":{"locale":"en-US","ip":"x"}}"#;

    let message = decode_batch(body.as_bytes()).unwrap().message(0).unwrap();

    assert_eq!(message.context["locale"], "de-DE");
    assert_eq!(message.context["ip"], "x");
}

#[test]
fn single_endpoint_takes_its_type_from_the_route_and_its_key_from_the_body() {
    let body = br#"{"writeKey":"wk","userId":42,"event":"Played","type":"identify"}"#;

    let envelope = decode_single(body, MessageType::Track).unwrap();
    let message = envelope.message(0).unwrap();

    assert_eq!(envelope.write_key.as_deref(), Some("wk"));
    assert_eq!(message.kind, MessageType::Track);
    assert_eq!(message.user_id.unwrap().as_str(), "42");
}

#[rstest]
#[case::not_json(b"{\"batch\": [", "invalid_json")]
#[case::array_body(b"[1,2]", "invalid_body")]
#[case::no_batch(b"{\"sentAt\": \"2024-01-01T00:00:00Z\"}", "missing_batch")]
#[case::batch_not_array(b"{\"batch\": 5}", "invalid_json")]
#[case::invalid_utf8(b"{\"batch\": [\"\xff\"]}", "invalid_json")]
fn unreadable_bodies_are_refused_with_a_code(#[case] body: &[u8], #[case] code: &str) {
    let error: DecodeError = decode_batch(body).unwrap_err();

    assert_eq!(error.code(), code);
}

#[test]
fn deeply_nested_json_in_a_message_is_refused_not_overflowed() {
    let depth = 10_000;
    let nested = "[".repeat(depth) + &"]".repeat(depth);
    let body = format!(
        r#"{{"batch":[{{"type":"track","event":"e","userId":"u","properties":{{"a":{nested}}}}},
                      {{"type":"track","event":"e","userId":"u"}}]}}"#
    );
    let envelope = decode_batch(body.as_bytes()).expect("the envelope itself is shallow");

    let error = envelope
        .message(0)
        .expect_err("nesting past the limit is refused");

    assert_eq!(error.code(), "invalid_field");
    assert!(envelope.message(1).is_ok());
}

#[rstest]
#[case::not_an_object(r#"7"#, "not_an_object")]
#[case::unknown_type(r#"{"type":"shout","userId":"u"}"#, "invalid_field")]
#[case::no_identity(r#"{"type":"track","event":"e"}"#, "missing_identity")]
#[case::empty_ids(
    r#"{"type":"track","event":"e","userId":"","anonymousId":""}"#,
    "missing_identity"
)]
#[case::object_id(r#"{"type":"track","event":"e","userId":{"id":1}}"#, "invalid_field")]
#[case::track_without_event(r#"{"type":"track","userId":"u"}"#, "missing_field")]
#[case::alias_without_previous(r#"{"type":"alias","userId":"u"}"#, "missing_field")]
#[case::bad_timestamp(
    r#"{"type":"page","userId":"u","timestamp":"yesterday"}"#,
    "invalid_timestamp"
)]
#[case::traits_not_object(r#"{"type":"identify","userId":"u","traits":"vip"}"#, "invalid_field")]
fn invalid_messages_are_refused_with_a_reason(#[case] item: &str, #[case] code: &str) {
    let body = format!(r#"{{"batch":[{item}]}}"#);
    let envelope = decode_batch(body.as_bytes()).unwrap();

    let error: MessageError = envelope.message(0).unwrap_err();

    assert_eq!(error.code(), code, "{error}");
}

#[test]
fn invalid_field_names_the_field() {
    let body = r#"{"batch":[{"type":"identify","userId":"u","traits":"vip"}]}"#;

    let error = decode_batch(body.as_bytes())
        .unwrap()
        .message(0)
        .unwrap_err();

    assert!(error.to_string().contains("traits"), "{error}");
}

#[test]
fn ids_longer_than_the_limit_are_refused() {
    let long = "x".repeat(1001);
    let body = format!(r#"{{"batch":[{{"type":"track","event":"e","userId":"{long}"}}]}}"#);

    let error = decode_batch(body.as_bytes())
        .unwrap()
        .message(0)
        .unwrap_err();

    assert_eq!(error.code(), "id_too_long");
}

#[test]
fn oversized_messages_are_refused_and_siblings_survive() {
    let big = "x".repeat(40 * 1024);
    let body = format!(
        r#"{{"batch":[{{"type":"track","event":"e","userId":"u","properties":{{"b":"{big}"}}}},
                      {{"type":"track","event":"e","userId":"u"}}]}}"#
    );
    let envelope = decode_batch(body.as_bytes()).unwrap();

    assert_eq!(envelope.message(0).unwrap_err().code(), "message_too_large");
    assert!(envelope.message(1).is_ok());
}

#[rstest]
#[case::utc_z("2024-05-01T12:00:00Z", (12, 0, 0, 0))]
#[case::offset_micros("2024-05-01T12:00:00.123456+00:00", (12, 0, 0, 123_456_000))]
#[case::nanos("2024-05-01T12:00:00.123456789Z", (12, 0, 0, 123_456_789))]
#[case::other_offset("2024-05-01T14:00:00+02:00", (12, 0, 0, 0))]
#[case::offset_without_colon("2024-05-01T12:00:00.000+0000", (12, 0, 0, 0))]
#[case::space_separator("2024-05-01 12:00:00Z", (12, 0, 0, 0))]
#[case::no_offset("2024-05-01T12:00:00.5", (12, 0, 0, 500_000_000))]
#[case::minutes_only("2024-05-01T12:00", (12, 0, 0, 0))]
#[case::date_only("2024-05-01", (0, 0, 0, 0))]
fn timestamps_parse_leniently(#[case] text: &str, #[case] hmsn: (u32, u32, u32, u32)) {
    let (h, m, s, nanos) = hmsn;
    let day = Utc.with_ymd_and_hms(2024, 5, 1, h, m, s).unwrap();
    let expected = day + chrono::Duration::nanoseconds(i64::from(nanos));

    assert_eq!(parse_timestamp(text), Some(expected));
}

#[rstest]
#[case("")]
#[case("yesterday")]
#[case("2024-13-01T00:00:00Z")]
#[case("1714564800")]
fn nonsense_timestamps_do_not_parse(#[case] text: &str) {
    assert_eq!(parse_timestamp(text), None);
}

#[test]
fn clock_skew_is_corrected_from_sent_at() {
    // The client's clock runs 1 hour fast: it says the event happened at 13:00:00 and was
    // sent 5 s later, while the collector received it at 12:00:10 by its own clock.
    let body = r#"{"batch":[{"type":"track","event":"e","userId":"u",
                   "timestamp":"2024-05-01T13:00:00Z"}],"sentAt":"2024-05-01T13:00:05Z"}"#;
    let message = decode_batch(body.as_bytes()).unwrap().message(0).unwrap();
    let received = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 10).unwrap();

    let time = event_time(&message, received);

    assert_eq!(time, Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 5).unwrap());
}

#[test]
fn without_sent_at_the_client_time_is_kept_and_without_any_the_receive_time() {
    let received = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    let stamped = r#"{"batch":[{"type":"track","event":"e","userId":"u",
                      "timestamp":"2020-01-01T00:00:00Z"}]}"#;
    let bare = r#"{"batch":[{"type":"track","event":"e","userId":"u"}]}"#;

    let stamped = decode_batch(stamped.as_bytes())
        .unwrap()
        .message(0)
        .unwrap();
    let bare = decode_batch(bare.as_bytes()).unwrap().message(0).unwrap();

    assert_eq!(
        event_time(&stamped, received),
        Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap()
    );
    assert_eq!(event_time(&bare, received), received);
}
