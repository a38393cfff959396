//! Hostile and broken request bodies over HTTP against one real collector process.
//!
//! Each case is a body a buggy or malicious client might send. The collector must answer
//! with a 4xx naming the problem, store the valid messages next to a refused one when the
//! body can be read at all, store nothing from a body it cannot read, and keep serving.

mod common;

use std::io::Write as _;

use base64::Engine as _;
use common::{Collector, WRITE_KEY};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

/// One bad request and everything the collector must do with it.
struct Case {
    name: &'static str,
    body: Vec<u8>,
    gzip: bool,
    status: u16,
    /// The `error` code of the answer; `None` for `200 {"success": true}`.
    error: Option<&'static str>,
    /// The refused messages of a partly or wholly refused batch, by index and code.
    rejected: Vec<(usize, &'static str)>,
    /// The `Authorization` header.
    authorization: String,
    /// The user the case's valid messages name.
    user: String,
    /// The events that must be stored for `user`, with their properties when they matter;
    /// empty when nothing may be stored.
    stored: Vec<(&'static str, Option<Value>)>,
}

impl Case {
    fn new(name: &'static str, body: Vec<u8>, status: u16, error: Option<&'static str>) -> Self {
        Self {
            name,
            body,
            gzip: false,
            status,
            error,
            rejected: Vec::new(),
            authorization: basic_auth(WRITE_KEY),
            user: name.to_owned(),
            stored: Vec::new(),
        }
    }

    fn rejecting(mut self, rejected: &[(usize, &'static str)]) -> Self {
        self.rejected = rejected.to_vec();
        self
    }

    fn storing(mut self, event: &'static str, properties: Option<Value>) -> Self {
        self.stored.push((event, properties));
        self
    }

    fn for_user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    fn authorized_as(mut self, write_key: &str) -> Self {
        self.authorization = basic_auth(write_key);
        self
    }

    fn gzipped(mut self) -> Self {
        self.gzip = true;
        self
    }
}

/// A valid `track` for `user`: the sibling that must survive its neighbour's refusal.
fn sibling(user: &str) -> String {
    json!({"type": "track", "userId": user, "event": "Sibling"}).to_string()
}

/// A batch body from items written as raw JSON text, so that items may be invalid JSON.
fn batch(items: &[&str]) -> Vec<u8> {
    format!(r#"{{"batch":[{}]}}"#, items.join(",")).into_bytes()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(bytes).expect("writing to memory");
    encoder.finish().expect("writing to memory")
}

fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

fn cases() -> Vec<Case> {
    let deep = nested(10_000);
    let long_id = "i".repeat(1_001);
    let longest_id = "l".repeat(1_000);
    let huge_integer = "9".repeat(400);
    let ten_megabytes = "x".repeat(10 * 1024 * 1024);

    vec![
        Case::new(
            "malformed_json",
            format!(
                r#"{{"batch":[{},{{"type":"track",}}]}}"#,
                sibling("malformed_json")
            )
            .into_bytes(),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "truncated_gzip",
            {
                let whole = gzip(&batch(&[&sibling("truncated_gzip")]));
                whole[..whole.len() / 2].to_vec()
            },
            400,
            Some("unreadable_body"),
        )
        .gzipped(),
        Case::new(
            "gzip_bomb",
            {
                let padding = "a".repeat(5 * 1024 * 1024);
                let bomb = json!({"type": "track", "userId": "gzip_bomb", "event": padding});
                gzip(&batch(&[&sibling("gzip_bomb"), &bomb.to_string()]))
            },
            413,
            Some("payload_too_large"),
        )
        .gzipped(),
        Case::new(
            "deep_nesting_in_properties",
            batch(&[
                &format!(
                    r#"{{"type":"track","userId":"deep_nesting_in_properties","event":"Deep",
                        "properties":{{"a":{deep}}}}}"#
                ),
                &sibling("deep_nesting_in_properties"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[(0, "invalid_field")])
        .storing("Sibling", None),
        Case::new(
            "deep_nesting_as_body",
            deep.clone().into_bytes(),
            400,
            Some("invalid_body"),
        ),
        Case::new(
            "deep_nesting_in_batch_context",
            format!(
                r#"{{"batch":[{}],"context":{{"a":{deep}}}}}"#,
                sibling("deep_nesting_in_batch_context")
            )
            .into_bytes(),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "ten_megabytes",
            batch(&[
                &sibling("ten_megabytes"),
                &json!({"type": "track", "userId": "ten_megabytes", "event": ten_megabytes})
                    .to_string(),
            ]),
            413,
            Some("payload_too_large"),
        ),
        Case::new(
            "invalid_utf8",
            [
                &batch(&[&sibling("invalid_utf8")])[..10],
                b"{\"type\":\"track\",\"userId\":\"invalid_utf8\",\"event\":\"\xff\xfe\"},",
                &batch(&[&sibling("invalid_utf8")])[10..],
            ]
            .concat(),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "non_object_item",
            batch(&[
                r#""a string""#,
                "[1,2]",
                "null",
                &sibling("non_object_item"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "not_an_object"),
            (1, "not_an_object"),
            (2, "not_an_object"),
        ])
        .storing("Sibling", None),
        Case::new(
            "unknown_type",
            batch(&[
                r#"{"type":"shout","userId":"unknown_type","event":"E"}"#,
                r#"{"userId":"unknown_type","event":"E"}"#,
                &sibling("unknown_type"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[(0, "invalid_field"), (1, "invalid_field")])
        .storing("Sibling", None),
        Case::new(
            "no_identity",
            batch(&[
                r#"{"type":"track","event":"E"}"#,
                r#"{"type":"track","event":"E","userId":null,"anonymousId":""}"#,
                &sibling("no_identity"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[(0, "missing_identity"), (1, "missing_identity")])
        .storing("Sibling", None),
        Case::new(
            "object_ids",
            batch(&[
                r#"{"type":"track","event":"E","userId":{"id":"object_ids"}}"#,
                r#"{"type":"track","event":"E","userId":"object_ids","anonymousId":["a"]}"#,
                r#"{"type":"track","event":"E","userId":"object_ids","messageId":{"m":1}}"#,
                r#"{"type":"track","event":"E","userId":"object_ids","messageId":1.5}"#,
                &sibling("object_ids"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "invalid_field"),
            (1, "invalid_field"),
            (2, "invalid_field"),
            (3, "invalid_field"),
        ])
        .storing("Sibling", None),
        Case::new(
            "long_ids",
            batch(&[
                &json!({"type": "track", "event": "E", "userId": long_id}).to_string(),
                &json!({"type": "track", "event": "E", "anonymousId": long_id}).to_string(),
                &json!({"type": "track", "event": "E", "userId": longest_id, "messageId": long_id})
                    .to_string(),
                &sibling(&longest_id),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[(0, "id_too_long"), (1, "id_too_long"), (2, "id_too_long")])
        .for_user(longest_id)
        .storing("Sibling", None),
        Case::new(
            "nan_literal",
            batch(&[
                r#"{"type":"track","userId":"nan_literal","event":"E","properties":{"n":NaN}}"#,
                &sibling("nan_literal"),
            ]),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "infinity_literal",
            batch(&[
                r#"{"type":"track","userId":"infinity_literal","event":"E",
                    "properties":{"n":-Infinity}}"#,
                &sibling("infinity_literal"),
            ]),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "numbers_out_of_range",
            batch(&[
                r#"{"type":"track","userId":"numbers_out_of_range","event":"E",
                    "properties":{"n":1e400}}"#,
                r#"{"type":"track","userId":"numbers_out_of_range","event":"E",
                    "properties":{"n":-1e400}}"#,
                &format!(
                    r#"{{"type":"track","userId":"numbers_out_of_range","event":"E",
                        "properties":{{"n":{huge_integer}}}}}"#
                ),
                &sibling("numbers_out_of_range"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "invalid_field"),
            (1, "invalid_field"),
            (2, "invalid_field"),
        ])
        .storing("Sibling", None),
        // What serde_json reads without complaint is stored as the nearest double: digits
        // beyond a double's precision and magnitudes below its smallest are lost, as in
        // JavaScript; a 17-digit float comes back exactly.
        Case::new(
            "numbers_stored_as_doubles",
            batch(&[
                r#"{"type":"track","userId":"numbers_stored_as_doubles","event":"Numbers",
                "properties":{"tiny":1e-400,"long":123456789012345678901234567890,
                "precise":4.0563771394870654e-18,"largest":1.7976931348623157e308}}"#,
            ]),
            200,
            None,
        )
        .storing(
            "Numbers",
            Some(json!({
                "tiny": 0.0,
                "long": 1.2345678901234568e29,
                "precise": 4.0563771394870654e-18,
                "largest": f64::MAX,
            })),
        ),
        Case::new(
            "unparseable_timestamps",
            batch(&[
                r#"{"type":"track","userId":"unparseable_timestamps","event":"E",
                    "timestamp":"yesterday"}"#,
                r#"{"type":"track","userId":"unparseable_timestamps","event":"E",
                    "originalTimestamp":"2024-13-01T00:00:00Z"}"#,
                r#"{"type":"track","userId":"unparseable_timestamps","event":"E",
                    "sentAt":"1714564800"}"#,
                r#"{"type":"track","userId":"unparseable_timestamps","event":"E",
                    "timestamp":1714564800}"#,
                &sibling("unparseable_timestamps"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "invalid_timestamp"),
            (1, "invalid_timestamp"),
            (2, "invalid_timestamp"),
            (3, "invalid_field"),
        ])
        .storing("Sibling", None),
        Case::new(
            "unparseable_batch_sent_at",
            format!(
                r#"{{"batch":[{}],"sentAt":"tomorrow"}}"#,
                sibling("unparseable_batch_sent_at")
            )
            .into_bytes(),
            400,
            Some("all_messages_rejected"),
        )
        .rejecting(&[(0, "invalid_timestamp")]),
        Case::new(
            "duplicate_message_ids",
            batch(&[
                r#"{"type":"track","userId":"duplicate_message_ids","event":"First",
                    "messageId":"dup-1"}"#,
                r#"{"type":"track","userId":"duplicate_message_ids","event":"Second",
                    "messageId":"dup-1"}"#,
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[(1, "duplicate_message_id")])
        .storing("First", None),
        Case::new("empty_batch", batch(&[]), 400, Some("empty_batch")),
        Case::new(
            "batch_not_an_array",
            format!(r#"{{"batch":{}}}"#, sibling("batch_not_an_array")).into_bytes(),
            400,
            Some("invalid_json"),
        ),
        Case::new(
            "no_batch",
            format!(r#"{{"messages":[{}]}}"#, sibling("no_batch")).into_bytes(),
            400,
            Some("missing_batch"),
        ),
        Case::new(
            "wrong_types_for_maps",
            batch(&[
                r#"{"type":"identify","userId":"wrong_types_for_maps","traits":"vip"}"#,
                r#"{"type":"identify","userId":"wrong_types_for_maps","traits":[1]}"#,
                r#"{"type":"track","userId":"wrong_types_for_maps","event":"E",
                    "properties":[1,2]}"#,
                r#"{"type":"track","userId":"wrong_types_for_maps","event":"E",
                    "properties":7}"#,
                r#"{"type":"track","userId":"wrong_types_for_maps","event":"E",
                    "context":"web"}"#,
                &sibling("wrong_types_for_maps"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "invalid_field"),
            (1, "invalid_field"),
            (2, "invalid_field"),
            (3, "invalid_field"),
            (4, "invalid_field"),
        ])
        .storing("Sibling", None),
        // PostgreSQL stores no NUL character in text or JSONB: such a message is refused on
        // both backends, instead of failing its whole batch with a 500 on one.
        Case::new(
            "nul_characters",
            batch(&[
                r#"{"type":"track","userId":"nul\u0000characters","event":"E"}"#,
                r#"{"type":"track","userId":"nul_characters","event":"E\u0000"}"#,
                r#"{"type":"track","userId":"nul_characters","event":"E",
                    "properties":{"a\u0000":1}}"#,
                r#"{"type":"track","userId":"nul_characters","event":"E",
                    "properties":{"a":"x\u0000y"}}"#,
                r#"{"type":"track","userId":"nul_characters","event":"E",
                    "context":{"page":{"title":["\u0000"]}}}"#,
                &sibling("nul_characters"),
            ]),
            400,
            Some("messages_rejected"),
        )
        .rejecting(&[
            (0, "invalid_field"),
            (1, "invalid_field"),
            (2, "invalid_field"),
            (3, "invalid_field"),
            (4, "invalid_field"),
        ])
        .storing("Sibling", None),
        Case::new(
            "nul_in_write_key",
            batch(&[&sibling("nul_in_write_key")]),
            401,
            Some("invalid_write_key"),
        )
        .authorized_as("wk_test_key\0"),
        // Numeric ids are not bad input: Segment accepts them, and they name the same user as
        // their decimal text.
        Case::new(
            "numeric_user_id",
            batch(&[r#"{"type":"track","userId":42,"event":"Numbered"}"#]),
            200,
            None,
        )
        .for_user("42")
        .storing("Numbered", None),
    ]
}

fn basic_auth(write_key: &str) -> String {
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
    format!("Basic {credentials}")
}

#[tokio::test]
async fn bad_bodies_get_a_clear_4xx_and_valid_siblings_are_stored() {
    let collector = Collector::start();

    for case in cases() {
        let name = case.name;
        let mut headers = vec![
            ("authorization", case.authorization.as_str()),
            ("content-type", "application/json"),
        ];
        if case.gzip {
            headers.push(("content-encoding", "gzip"));
        }

        let (status, reply) = collector.post_raw("/v1/batch", case.body, &headers).await;
        let (user_status, user) = collector.user(&case.user).await;

        assert_eq!(status, case.status, "{name}: {reply}");
        match case.error {
            None => assert_eq!(reply, json!({"success": true}), "{name}"),
            Some(code) => {
                assert_eq!(reply["error"], code, "{name}: {reply}");
                let message = reply["message"].as_str().unwrap_or_default();
                assert!(!message.is_empty(), "{name}: {reply}");
            }
        }
        let rejected: Vec<(usize, &str)> = reply["rejected"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| {
                assert!(
                    r["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{name}: {r}"
                );
                (
                    r["index"].as_u64().unwrap() as usize,
                    r["error"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(rejected, case.rejected, "{name}: {reply}");
        if matches!(
            case.error,
            Some("messages_rejected" | "all_messages_rejected")
        ) {
            assert_eq!(reply["accepted"], case.stored.len(), "{name}: {reply}");
        }
        if case.stored.is_empty() {
            assert_eq!(user_status, 404, "{name}: stored {user}");
            continue;
        }
        assert_eq!(user_status, 200, "{name}: {user}");
        let events = user["events"].as_array().unwrap();
        let names: Vec<_> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        let expected: Vec<_> = case.stored.iter().map(|(event, _)| *event).collect();
        assert_eq!(names, expected, "{name}");
        for (event, (_, properties)) in events.iter().zip(&case.stored) {
            if let Some(properties) = properties {
                assert_eq!(&event["properties"], properties, "{name}");
            }
        }
    }
    let health = collector.http.get(collector.url("/healthz")).send().await;

    assert_eq!(health.unwrap().status().as_u16(), 200);
    assert!(!collector.log().contains("panicked"), "{}", collector.log());
}
