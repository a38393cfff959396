//! The ingest API over HTTP against a real collector process and a fresh database.

mod common;

use std::io::Write as _;

use common::{Collector, ADMIN_TOKEN, TRAIT_MARKER, WRITE_KEY};
use serde_json::json;

#[tokio::test]
async fn a_batch_stores_the_user_traits_and_events() {
    let collector = Collector::start();

    let (status, body) = collector
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "userId": "ada",
                 "traits": {"email": "ada@example.com", "note": TRAIT_MARKER}, "messageId": "m-1"},
                {"type": "track", "userId": "ada", "event": "Signed Up",
                 "properties": {"plan": "pro"}, "messageId": "m-2"},
                {"type": "page", "userId": "ada", "name": "Pricing", "messageId": "m-3"}
            ]}),
        )
        .await;
    let (user_status, user) = collector.user("ada").await;

    assert_eq!((status, body), (200, json!({"success": true})));
    assert_eq!(user_status, 200);
    assert_eq!(user["userId"], "ada");
    assert_eq!(
        user["traits"],
        json!({"email": "ada@example.com", "note": TRAIT_MARKER})
    );
    let events = user["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["event"], "Signed Up");
    assert_eq!(events[0]["properties"], json!({"plan": "pro"}));
    assert_eq!(events[1]["type"], "page");
    assert_eq!(events[1]["name"], "Pricing");
}

#[tokio::test]
async fn traits_merge_across_identifies() {
    let collector = Collector::start();

    for traits in [
        json!({"plan": "free", "name": "Ada"}),
        json!({"plan": "pro", "note": TRAIT_MARKER}),
    ] {
        let message = json!({"userId": "ada", "traits": traits});
        assert_eq!(collector.post("/v1/identify", &message).await.0, 200);
    }
    let (_, user) = collector.user("ada").await;

    assert_eq!(
        user["traits"],
        json!({"plan": "pro", "name": "Ada", "note": TRAIT_MARKER})
    );
}

#[tokio::test]
async fn the_write_key_may_travel_in_the_body() {
    let collector = Collector::start();
    let body = json!({"writeKey": WRITE_KEY, "userId": "ada", "event": "Clicked"});

    let (status, _) = collector
        .post_raw(
            "/v1/track",
            body.to_string().into_bytes(),
            &[("content-type", "text/plain")],
        )
        .await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(status, 200);
    assert_eq!(user["events"][0]["event"], "Clicked");
}

#[tokio::test]
async fn a_retried_batch_stores_each_event_once() {
    let collector = Collector::start();
    let batch = json!({"batch": [
        {"type": "track", "userId": "ada", "event": "Paid", "messageId": "pay-1"}
    ]});

    for _ in 0..3 {
        assert_eq!(collector.post("/v1/batch", &batch).await.0, 200);
    }
    let (_, user) = collector.user("ada").await;

    assert_eq!(user["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_messages_are_listed_and_their_siblings_stored() {
    let collector = Collector::start();

    let (status, body) = collector
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "ada", "event": "Kept"},
                {"type": "track", "userId": "ada"},
                "not a message",
                {"type": "track", "event": "Nobody"}
            ]}),
        )
        .await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(status, 400);
    assert_eq!(body["error"], "messages_rejected");
    assert_eq!(body["accepted"], 1);
    let codes: Vec<_> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            (1, "missing_field".into()),
            (2, "not_an_object".into()),
            (3, "missing_identity".into())
        ]
    );
    assert_eq!(user["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_anonymous_visitor_who_identifies_becomes_that_user() {
    let collector = Collector::start();

    collector
        .post(
            "/v1/track",
            &json!({"anonymousId": "visitor-1", "event": "Browsed"}),
        )
        .await;
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "anonymousId": "visitor-1"}),
        )
        .await;
    collector
        .post("/v1/track", &json!({"userId": "ada", "event": "Bought"}))
        .await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(user["anonymousIds"], json!(["visitor-1"]));
    let names: Vec<_> = user["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["event"])
        .collect();
    assert_eq!(names, [&json!("Browsed"), &json!("Bought")]);
}

#[tokio::test]
async fn gzip_bodies_are_accepted() {
    let collector = Collector::start();
    let body = json!({"batch": [{"type": "track", "userId": "ada", "event": "Zipped"}]});
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(body.to_string().as_bytes()).unwrap();
    let auth = format!("Basic {}", base64_key());

    let (status, _) = collector
        .post_raw(
            "/v1/batch",
            encoder.finish().unwrap(),
            &[("content-encoding", "gzip"), ("authorization", &auth)],
        )
        .await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(status, 200);
    assert_eq!(user["events"][0]["event"], "Zipped");
}

fn base64_key() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
}

#[tokio::test]
async fn a_missing_or_wrong_write_key_is_401_with_a_json_reason() {
    let collector = Collector::start();
    let batch = json!({"batch": [{"type": "track", "userId": "ada", "event": "E"}]});

    let (missing, missing_body) = collector
        .post_raw("/v1/batch", batch.to_string().into_bytes(), &[])
        .await;
    let wrong = collector
        .http
        .post(collector.url("/v1/batch"))
        .basic_auth("wk_wrong", Some(""))
        .json(&batch)
        .send()
        .await
        .unwrap();
    let wrong_status = wrong.status().as_u16();
    let wrong_body: serde_json::Value = wrong.json().await.unwrap();

    assert_eq!(missing, 401);
    assert_eq!(missing_body["error"], "missing_write_key");
    assert!(missing_body["message"]
        .as_str()
        .unwrap()
        .contains("write key"));
    assert_eq!(wrong_status, 401);
    assert_eq!(wrong_body["error"], "invalid_write_key");
    assert_eq!(collector.user("ada").await.0, 404);
}

#[tokio::test]
async fn malformed_json_is_400_naming_the_problem_and_the_collector_keeps_serving() {
    let collector = Collector::start();
    let auth = format!("Basic {}", base64_key());

    let (status, body) = collector
        .post_raw(
            "/v1/batch",
            br#"{"batch": [{"type": "track",}"#.to_vec(),
            &[("authorization", &auth)],
        )
        .await;
    let (after, _) = collector
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "userId": "ada", "event": "E"}]}),
        )
        .await;

    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_json");
    assert!(
        body["message"].as_str().unwrap().contains("line 1"),
        "{body}"
    );
    assert_eq!(after, 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let collector = Collector::start();
    let padding = "x".repeat(600 * 1024);
    let body = json!({"batch": [{"type": "track", "userId": "ada", "event": padding}]});

    let (status, reply) = collector.post("/v1/batch", &body).await;

    assert_eq!(status, 413);
    assert_eq!(reply["error"], "payload_too_large");
}

/// A message of about 40 KB, over the 32 KB limit per message; `marker` is in its
/// padding, so that a search of the database shows whether any of it was stored.
fn oversized_track(user: &str, marker: &str) -> serde_json::Value {
    let padding = format!("{marker}{}", "x".repeat(40 * 1024));
    json!({"type": "track", "userId": user, "event": "Huge", "properties": {"blob": padding}})
}

#[tokio::test]
async fn a_message_over_32_kb_is_413_naming_it_and_its_valid_sibling_is_stored() {
    let collector = Collector::start();
    let batch = json!({"batch": [
        {"type": "track", "userId": "ada", "event": "Kept", "messageId": "kept-1"},
        oversized_track("ada", "oversized-marker")
    ]});

    let (status, body) = collector.post("/v1/batch", &batch).await;
    let (_, user) = collector.user("ada").await;
    let stored = common::every_stored_value(&collector.database_url).await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "message_too_large");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["rejected"].as_array().unwrap().len(), 1);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert_eq!(body["rejected"][0]["error"], "message_too_large");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("32768 bytes"), "{message}");
    let events: Vec<_> = user["events"].as_array().unwrap().iter().collect();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "Kept");
    assert!(
        stored
            .iter()
            .all(|(_, _, v)| !v.contains("oversized-marker")),
        "part of the oversized message was stored"
    );
}

#[tokio::test]
async fn a_single_message_over_32_kb_is_413_and_nothing_is_stored() {
    let collector = Collector::start();
    let mut message = oversized_track("bea", "single-marker");
    message.as_object_mut().unwrap().remove("type");

    let (status, body) = collector.post("/v1/track", &message).await;
    let (user_status, _) = collector.user("bea").await;
    let stored = common::every_stored_value(&collector.database_url).await;

    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "message_too_large");
    assert_eq!(body["accepted"], 0);
    assert_eq!(body["rejected"][0]["index"], 0);
    assert_eq!(body["rejected"][0]["error"], "message_too_large");
    assert_eq!(user_status, 404);
    assert!(stored.iter().all(|(_, _, v)| !v.contains("single-marker")));
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_at_the_decompressed_limit() {
    let collector = Collector::start();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(br#"{"batch": [""#).unwrap();
    encoder.write_all(&vec![b'a'; 50 * 1024 * 1024]).unwrap();
    let compressed = encoder.finish().unwrap();
    let auth = format!("Basic {}", base64_key());

    let (status, reply) = collector
        .post_raw(
            "/v1/batch",
            compressed,
            &[("content-encoding", "gzip"), ("authorization", &auth)],
        )
        .await;

    assert_eq!(status, 413);
    assert_eq!(reply["error"], "payload_too_large");
}

#[tokio::test]
async fn an_empty_batch_is_400() {
    let collector = Collector::start();

    let (status, body) = collector.post("/v1/batch", &json!({"batch": []})).await;

    assert_eq!(status, 400);
    assert_eq!(body["error"], "empty_batch");
}

#[tokio::test]
async fn admin_reads_need_a_known_token() {
    let collector = Collector::start();
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "traits": {"a": 1}}),
        )
        .await;

    let (unknown, unknown_body) = collector
        .admin_get("/admin/v1/users/ada", "not-a-token")
        .await;
    let missing = collector
        .http
        .get(collector.url("/admin/v1/users/ada"))
        .send()
        .await
        .unwrap();
    let (known, _) = collector
        .admin_get("/admin/v1/users/ada", ADMIN_TOKEN)
        .await;

    assert_eq!(unknown, 401);
    assert_eq!(unknown_body["error"], "invalid_admin_token");
    assert_eq!(missing.status().as_u16(), 401);
    assert_eq!(known, 200);
}

#[tokio::test]
async fn an_unknown_user_is_404() {
    let collector = Collector::start();

    let (status, body) = collector.user("nobody").await;

    assert_eq!(status, 404);
    assert_eq!(body["error"], "user_not_found");
}

#[tokio::test]
async fn a_profile_counts_the_users_events_responses_and_consent_records() {
    let collector = Collector::start();
    let consent =
        |analytics: bool| json!({"consent": {"categoryPreferences": {"analytics": analytics}}});
    let batch = json!({"batch": [
        {"type": "track", "userId": "ada", "event": "One", "context": consent(true)},
        {"type": "page", "userId": "ada", "name": "Two"},
        {"type": "track", "userId": "ada", "event": "Three", "context": consent(false)},
        {"type": "response", "userId": "ada", "surveyId": "nps", "answers": {"score": 9}},
        {"type": "response", "userId": "ada", "surveyId": "csat", "answers": {"score": 4}},
        {"type": "track", "userId": "bob", "event": "Someone else's"}
    ]});
    collector.post("/v1/batch", &batch).await;

    let (status, ada) = collector.user("ada").await;

    assert_eq!(status, 200, "{ada}");
    assert_eq!(
        ada["counts"],
        json!({"events": 3, "responses": 2, "consentRecords": 2})
    );
    assert_eq!(ada["events"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn past_the_events_a_profile_lists_its_count_still_covers_every_event() {
    const EVENTS: usize = 1_001;
    let collector = Collector::start();
    let events: Vec<_> = (0..EVENTS)
        .map(|n| json!({"type": "track", "userId": "busy", "event": "Tick", "messageId": format!("tick-{n}")}))
        .collect();
    for chunk in events.chunks(500) {
        let (status, reply) = collector.post("/v1/batch", &json!({"batch": chunk})).await;
        assert_eq!(status, 200, "{reply}");
    }

    let (_, profile) = collector.user("busy").await;

    assert_eq!(profile["events"].as_array().unwrap().len(), 1_000);
    assert_eq!(profile["counts"]["events"], EVENTS);
}
