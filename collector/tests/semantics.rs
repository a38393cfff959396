//! What the collector makes of what clients send: routes, content types, deduplication,
//! identities, activity, responses, consent, privacy signals and identity verification.

mod common;

use chrono::{DateTime, Utc};
use common::{Collector, TestDb, WRITE_KEY};
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .expect("a timestamp")
        .parse()
        .expect("an RFC 3339 timestamp")
}

#[tokio::test]
async fn every_route_and_alias_stores_its_message() {
    let collector = Collector::start();
    let cases = [
        (
            "/v1/batch",
            json!({"batch": [{"type": "track", "userId": "u1", "event": "Batch"}]}),
        ),
        (
            "/v1/import",
            json!({"batch": [{"type": "track", "userId": "u1", "event": "Import"}]}),
        ),
        (
            "/v1/b",
            json!({"batch": [{"type": "track", "userId": "u1", "event": "B"}]}),
        ),
        ("/v1/track", json!({"userId": "u1", "event": "Track"})),
        ("/v1/page", json!({"userId": "u1", "name": "Home"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Settings"})),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "acme", "traits": {"plan": "team"}}),
        ),
        ("/v1/alias", json!({"userId": "u1", "previousId": "old-id"})),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": {"name": "Ada"}}),
        ),
    ];

    for (path, body) in &cases {
        let (status, reply) = collector.post(path, body).await;
        assert_eq!(status, 200, "{path}: {reply}");
    }
    let (_, user) = collector.user("u1").await;

    let stored: Vec<(String, String)> = user["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let label = e["event"]
                .as_str()
                .or(e["name"].as_str())
                .unwrap_or_default();
            (e["type"].as_str().unwrap().to_owned(), label.to_owned())
        })
        .collect();
    let expected = [
        ("track", "Batch"),
        ("track", "Import"),
        ("track", "B"),
        ("track", "Track"),
        ("page", "Home"),
        ("screen", "Settings"),
        ("group", "acme"),
        ("alias", "old-id"),
    ];
    for (kind, label) in expected {
        assert!(
            stored.contains(&(kind.into(), label.into())),
            "{kind} {label} in {stored:?}"
        );
    }
    assert_eq!(user["traits"]["name"], "Ada");
    assert!(user["anonymousIds"]
        .as_array()
        .unwrap()
        .contains(&json!("old-id")));
    let group = user["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "group")
        .unwrap();
    assert_eq!(group["properties"], json!({"plan": "team"}));
}

#[tokio::test]
async fn json_bodies_are_read_whatever_content_type_is_declared() {
    let collector = Collector::start();
    let auth = format!("Basic {}", base64_key(WRITE_KEY));

    for (index, content_type) in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-8",
    ]
    .iter()
    .enumerate()
    {
        let body =
            json!({"batch": [{"type": "track", "userId": "ada", "event": format!("E{index}")}]});
        let headers = [
            ("content-type", *content_type),
            ("authorization", auth.as_str()),
        ];
        let (status, reply) = collector
            .post_raw("/v1/batch", body.to_string().into_bytes(), &headers)
            .await;
        assert_eq!(status, 200, "{content_type}: {reply}");
    }
    let (_, user) = collector.user("ada").await;

    assert_eq!(user["events"].as_array().unwrap().len(), 3);
}

fn base64_key(key: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
}

#[tokio::test]
async fn a_batch_retried_after_a_restart_changes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", common::ADMIN_TOKEN),
    ];
    let first_batch = json!({"batch": [
        {"type": "identify", "userId": "ada", "traits": {"plan": "free"}, "messageId": "m-1"},
        {"type": "track", "userId": "ada", "event": "Paid", "messageId": "m-2"}
    ]});

    let mut first = Collector::start_in(temp.path(), &db, &env);
    assert_eq!(first.post("/v1/batch", &first_batch).await.0, 200);
    first.kill();
    let second = Collector::start_in(temp.path(), &db, &env);
    let upgrade = json!({"userId": "ada", "traits": {"plan": "pro"}, "messageId": "m-3"});
    assert_eq!(second.post("/v1/identify", &upgrade).await.0, 200);
    let (status, _) = second.post("/v1/batch", &first_batch).await;
    let (_, user) = second.user("ada").await;

    assert_eq!(status, 200);
    assert_eq!(
        user["traits"]["plan"], "pro",
        "the late retry must not undo the upgrade"
    );
    assert_eq!(user["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn clock_skew_is_corrected_from_sent_at() {
    let collector = Collector::start();
    // The client's clock is a year fast; it sent the event 5 s after it happened.
    let client_now = Utc::now() + chrono::Duration::days(365);
    let happened = client_now - chrono::Duration::seconds(5);
    let body = json!({
        "batch": [{"type": "track", "userId": "ada", "event": "E", "timestamp": happened.to_rfc3339()}],
        "sentAt": client_now.to_rfc3339()
    });

    collector.post("/v1/batch", &body).await;
    let (_, user) = collector.user("ada").await;

    let event = &user["events"][0];
    let offset = time(&event["receivedAt"]) - time(&event["timestamp"]);
    assert!(
        (4_900..=5_100).contains(&offset.num_milliseconds()),
        "offset {offset}"
    );
}

#[tokio::test]
async fn alias_joins_the_previous_identity_to_the_user() {
    let collector = Collector::start();

    collector
        .post(
            "/v1/track",
            &json!({"anonymousId": "visitor-7", "event": "Browsed"}),
        )
        .await;
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "traits": {"a": 1}}),
        )
        .await;
    collector
        .post(
            "/v1/alias",
            &json!({"userId": "ada", "previousId": "visitor-7"}),
        )
        .await;
    let (_, user) = collector.user("ada").await;
    let (_, by_visitor_id) = collector.user("visitor-7").await;

    assert_eq!(user["anonymousIds"], json!(["visitor-7"]));
    assert!(user["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["event"] == "Browsed"));
    assert_eq!(by_visitor_id["userId"], "ada");
}

#[tokio::test]
async fn inactive_messages_do_not_move_last_seen() {
    let collector = Collector::start();
    let active = json!({"userId": "ada", "event": "Login", "timestamp": "2024-01-01T00:00:00Z"});
    let inactive = json!({"userId": "ada", "event": "Billing Run",
                          "timestamp": "2024-06-01T00:00:00Z", "context": {"active": false}});
    let later = json!({"userId": "ada", "event": "Login", "timestamp": "2024-02-01T00:00:00Z"});

    collector.post("/v1/track", &active).await;
    collector.post("/v1/track", &inactive).await;
    let (_, before) = collector.user("ada").await;
    collector.post("/v1/track", &later).await;
    let (_, after) = collector.user("ada").await;

    assert_eq!(
        time(&before["lastSeen"]),
        time(&json!("2024-01-01T00:00:00Z"))
    );
    assert_eq!(
        time(&after["lastSeen"]),
        time(&json!("2024-02-01T00:00:00Z"))
    );
    assert_eq!(
        before["events"].as_array().unwrap().len(),
        2,
        "the inactive event is stored"
    );
}

#[tokio::test]
async fn survey_responses_are_stored_as_responses() {
    let collector = Collector::start();
    let answers = json!({"nps": 9, "why": "fast checkout"});
    let body = json!({"batch": [{"type": "response", "userId": "ada", "surveyId": "nps-2026",
                                  "answers": answers, "messageId": "r-1"}]});

    let (status, _) = collector.post("/v1/batch", &body).await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(status, 200);
    assert_eq!(user["responses"][0]["surveyId"], "nps-2026");
    assert_eq!(user["responses"][0]["answers"], answers);
    assert_eq!(user["events"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn consent_is_kept_on_the_user_and_recorded_on_each_change() {
    let collector = Collector::start();
    let with_consent = |event: &str, analytics: bool, minute: u32| {
        json!({"userId": "ada", "event": event,
               "timestamp": format!("2024-01-01T00:{minute:02}:00Z"),
               "context": {"consent": {"categoryPreferences": {"analytics": analytics, "ads": false}}}})
    };

    collector
        .post(
            "/v1/track",
            &with_consent("Segment Consent Preference Updated", true, 1),
        )
        .await;
    collector
        .post("/v1/track", &with_consent("Viewed", true, 2))
        .await;
    collector
        .post(
            "/v1/track",
            &with_consent("Segment Consent Preference Updated", false, 3),
        )
        .await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(user["consent"], json!({"analytics": false, "ads": false}));
    let history = user["consentHistory"].as_array().unwrap();
    assert_eq!(
        history.len(),
        2,
        "an unchanged state is not recorded again: {history:?}"
    );
    assert_eq!(history[0]["preferences"]["analytics"], true);
    assert_eq!(history[1]["preferences"]["analytics"], false);
    assert_eq!(history[1]["source"], "Segment Consent Preference Updated");
}

#[tokio::test]
async fn global_privacy_control_is_stored_from_the_header_or_the_context() {
    let collector = Collector::start();
    let auth = format!("Basic {}", base64_key(WRITE_KEY));
    let body = json!({"batch": [{"type": "track", "userId": "ada", "event": "E"}]});

    collector
        .post_raw(
            "/v1/batch",
            body.to_string().into_bytes(),
            &[("authorization", &auth), ("sec-gpc", "1")],
        )
        .await;
    collector
        .post(
            "/v1/track",
            &json!({"userId": "eve", "event": "E", "context": {"gpc": true}}),
        )
        .await;
    collector
        .post("/v1/track", &json!({"userId": "bob", "event": "E"}))
        .await;
    let (_, ada) = collector.user("ada").await;
    let (_, eve) = collector.user("eve").await;
    let (_, bob) = collector.user("bob").await;

    assert_eq!(ada["gpc"], true);
    assert_eq!(eve["gpc"], true);
    assert_eq!(bob["gpc"], Value::Null);
}

#[tokio::test]
async fn ip_addresses_are_dropped_unless_the_environment_keeps_them() {
    let collector = Collector::start();
    let with_ip =
        |user: &str| json!({"userId": user, "event": "E", "context": {"ip": "203.0.113.7"}});

    collector.post("/v1/track", &with_ip("ada")).await;
    let (status, _) = collector
        .admin(
            "PATCH",
            "/admin/v1/environments/default",
            Some(json!({"storeIp": true})),
        )
        .await;
    collector.post("/v1/track", &with_ip("bob")).await;
    collector
        .post("/v1/track", &json!({"userId": "cy", "event": "E"}))
        .await;
    let (_, ada) = collector.user("ada").await;
    let (_, bob) = collector.user("bob").await;
    let (_, cy) = collector.user("cy").await;

    assert_eq!(status, 200);
    assert_eq!(ada["events"][0]["context"].get("ip"), None);
    assert_eq!(bob["events"][0]["context"]["ip"], "203.0.113.7");
    assert_eq!(
        cy["events"][0]["context"]["ip"], "127.0.0.1",
        "the peer address is used"
    );
}

#[tokio::test]
async fn identity_verification_requires_the_hmac_of_the_user_id() {
    let collector = Collector::start();
    let (status, reply) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/identity-secret",
            None,
        )
        .await;
    let secret = reply["identitySecret"].as_str().unwrap().to_owned();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(b"ada");
    let good = hex::encode(mac.finalize().into_bytes());

    let (batch_status, body) = collector
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "ada", "event": "Proven", "context": {"userHash": good}},
                {"type": "track", "userId": "ada", "event": "Unproven"},
                {"type": "track", "userId": "eve", "event": "Forged", "context": {"userHash": good}},
                {"type": "track", "anonymousId": "visitor", "event": "Anonymous"}
            ]}),
        )
        .await;
    let (_, ada) = collector.user("ada").await;

    assert_eq!(status, 200);
    assert_eq!(batch_status, 400);
    let codes: Vec<_> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["error"].clone())
        .collect();
    assert_eq!(
        codes,
        [json!("missing_user_hash"), json!("invalid_user_hash")]
    );
    assert_eq!(body["accepted"], 2);
    let events: Vec<_> = ada["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].clone())
        .collect();
    assert_eq!(events, [json!("Proven")]);
    assert_eq!(
        ada["events"][0]["context"].get("userHash"),
        None,
        "the hash is not stored"
    );
    assert_eq!(collector.user("visitor").await.0, 200);
}

#[tokio::test]
async fn a_batch_context_is_stored_under_each_message_context() {
    let collector = Collector::start();
    let batch = json!({
        "batch": [
            {"type": "track", "userId": "ada", "event": "Own", "messageId": "own",
             "context": {"locale": "de-DE", "page": {"path": "/cart"}}},
            {"type": "track", "userId": "ada", "event": "Plain", "messageId": "plain"}
        ],
        "context": {"locale": "en-US", "library": {"name": "analytics-node"}}
    });

    let (status, _) = collector.post("/v1/batch", &batch).await;
    let (_, user) = collector.user("ada").await;

    assert_eq!(status, 200);
    let context_of = |id: &str| {
        user["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|event| event["messageId"] == id)
            .map(|event| event["context"].clone())
            .unwrap()
    };
    assert_eq!(
        context_of("own"),
        json!({"locale": "de-DE", "page": {"path": "/cart"},
               "library": {"name": "analytics-node"}}),
        "the message's own keys win"
    );
    assert_eq!(
        context_of("plain"),
        json!({"locale": "en-US", "library": {"name": "analytics-node"}})
    );
}

#[tokio::test]
async fn an_identify_naming_two_stored_users_merges_them_into_one() {
    let collector = Collector::start();
    let everyone = || {
        collector.admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
    };
    collector
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "identify", "anonymousId": "visitor-3",
                 "traits": {"plan": "free", "referrer": "newsletter"}},
                {"type": "track", "anonymousId": "visitor-3", "event": "Browsed"},
                {"type": "identify", "userId": "ada", "traits": {"plan": "pro", "name": "Ada"}},
                {"type": "track", "userId": "ada", "event": "Signed In"}
            ]}),
        )
        .await;
    let (_, before) = everyone().await;

    let (status, _) = collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "anonymousId": "visitor-3"}),
        )
        .await;
    let (_, after) = everyone().await;
    let (_, user) = collector.user("ada").await;
    let (_, by_anonymous_id) = collector.user("visitor-3").await;

    assert_eq!(before["count"], 2, "two users before: {before}");
    assert_eq!(status, 200);
    assert_eq!(after["count"], 1, "one user after: {after}");
    assert_eq!(user["anonymousIds"], json!(["visitor-3"]));
    assert_eq!(
        user["traits"],
        json!({"plan": "pro", "name": "Ada", "referrer": "newsletter"}),
        "traits of both, the identified user's winning"
    );
    let mut events: Vec<_> = user["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    events.sort();
    assert_eq!(events, ["Browsed", "Signed In"]);
    assert_eq!(by_anonymous_id["userId"], "ada");
}

#[tokio::test]
async fn the_same_message_id_is_stored_in_each_environment_it_is_sent_to() {
    let collector = Collector::start();
    let (created, staging) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let staging_key = staging["writeKeys"][0].as_str().unwrap().to_owned();
    let batch = json!({"batch": [
        {"type": "track", "userId": "ada", "event": "Paid", "messageId": "shared-id"}
    ]});

    let (to_default, _) = collector.post("/v1/batch", &batch).await;
    let (to_staging, _) = collector.post_as(&staging_key, "/v1/batch", &batch).await;
    let (again_to_staging, _) = collector.post_as(&staging_key, "/v1/batch", &batch).await;
    let (_, in_default) = collector.user("ada").await;
    let (_, in_staging) = collector
        .admin_get(
            "/admin/v1/users/ada?environment=staging",
            common::ADMIN_TOKEN,
        )
        .await;

    assert_eq!(created, 201, "{staging}");
    assert_eq!((to_default, to_staging, again_to_staging), (200, 200, 200));
    for user in [&in_default, &in_staging] {
        let events = user["events"].as_array().unwrap();
        assert_eq!(events.len(), 1, "{user}");
        assert_eq!(events[0]["messageId"], "shared-id");
    }
}
