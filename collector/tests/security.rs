//! Who may do what, and what a request may carry: a write key writes only to its own
//! environment; an admin token scoped to one environment is refused on every route of
//! another (the routes come from the collector's own OpenAPI description, so a route added
//! later is covered too); every route with a body refuses one over its limit; and the log
//! check that every test's collector runs when it is dropped does catch what it looks for.
//! The pages' Content-Security-Policy and frame protection are checked in `operations.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{execute, log_leaks, Collector, ADMIN_TOKEN, TRAIT_MARKER, WRITE_KEY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Creates the environment `name`; returns its write key.
async fn environment(collector: &Collector, name: &str) -> String {
    let (status, created) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({ "name": name })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["writeKey"]
        .as_str()
        .or_else(|| created["writeKeys"][0].as_str())
        .unwrap_or_else(|| panic!("no write key in {created}"))
        .to_owned()
}

/// Every operation of the collector's OpenAPI description: (method, path, operation).
async fn operations(collector: &Collector) -> Vec<(String, String, Value)> {
    let (status, description) = collector.admin_get("/openapi.json", "").await;
    assert_eq!(status, 200);
    let mut found = Vec::new();
    for (path, item) in description["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            found.push((method.to_uppercase(), path.clone(), operation.clone()));
        }
    }
    assert!(found.len() > 30, "the description lists the routes");
    found
}

fn parameter<'a>(operation: &'a Value, name: &str) -> Option<&'a Value> {
    operation["parameters"]
        .as_array()?
        .iter()
        .find(|parameter| parameter["name"] == name)
}

#[tokio::test]
async fn a_write_key_writes_only_to_its_own_environment() {
    let collector = Collector::start();
    let staging_key = environment(&collector, "staging").await;

    let (to_staging, _) = collector
        .post_as(
            &staging_key,
            "/v1/identify",
            &json!({"userId": "sam", "traits": {"plan": "staging-only"}}),
        )
        .await;
    // The Basic user name wins over a `writeKey` in the body naming another environment.
    let (mixed, _) = collector
        .post(
            "/v1/identify",
            &json!({"userId": "dee", "writeKey": staging_key, "traits": {"plan": "default"}}),
        )
        .await;
    let (sam_in_default, _) = collector.user("sam").await;
    let (sam_in_staging, sam) = collector
        .admin_get("/admin/v1/users/sam?environment=staging", ADMIN_TOKEN)
        .await;
    let (dee_in_staging, _) = collector
        .admin_get("/admin/v1/users/dee?environment=staging", ADMIN_TOKEN)
        .await;
    let (dee_in_default, _) = collector.user("dee").await;

    assert_eq!((to_staging, mixed), (200, 200));
    assert_eq!(sam_in_default, 404);
    assert_eq!(sam_in_staging, 200);
    assert_eq!(sam["traits"]["plan"], "staging-only");
    assert_eq!(
        dee_in_staging, 404,
        "a key in the body does not override the header's"
    );
    assert_eq!(dee_in_default, 200);
}

/// Ingest finds a write key's environment through the key's SHA-256, never by comparing
/// the presented key with stored ones: with the stored key text changed and its hash kept,
/// the key still works; with the hash changed and the text kept, it no longer does.
#[tokio::test]
async fn a_write_key_is_looked_up_by_its_hash_alone() {
    let collector = Collector::start();
    let staging_key = environment(&collector, "staging").await;
    let hash = hex::encode(Sha256::digest(WRITE_KEY.as_bytes()));
    let identify = |user: &str| json!({"userId": user, "traits": {"n": 1}});

    let (stored_before, _) = collector.post("/v1/identify", &identify("before")).await;
    execute(
        &collector.database_url,
        &format!("UPDATE write_keys SET write_key = 'wk_replaced' WHERE key_hash = '{hash}'"),
    )
    .await;
    let (text_changed, _) = collector.post("/v1/identify", &identify("by-hash")).await;
    let (old_text, _) = collector
        .post_as("wk_replaced", "/v1/identify", &identify("by-text"))
        .await;
    execute(
        &collector.database_url,
        &format!(
            "UPDATE write_keys SET write_key = '{WRITE_KEY}', key_hash = 'not-the-hash' \
             WHERE key_hash = '{hash}'"
        ),
    )
    .await;
    let (hash_changed, refused) = collector.post("/v1/identify", &identify("after")).await;
    let (other_key, _) = collector
        .post_as(&staging_key, "/v1/identify", &identify("staging"))
        .await;

    assert_eq!(stored_before, 200);
    assert_eq!(text_changed, 200, "the key is found by its hash");
    assert_eq!(old_text, 401, "the stored text is not what is compared");
    assert_eq!(hash_changed, 401, "without its hash the key is unknown");
    assert_eq!(refused["error"], "invalid_write_key");
    assert_eq!(other_key, 200, "another environment's key is untouched");
    assert_eq!(collector.user("by-hash").await.0, 200);
    assert_eq!(collector.user("after").await.0, 404);
}

/// Admin tokens, the one from `EBB_ADMIN_TOKEN` and one made through the API, are stored
/// only as their SHA-256: no column of any table holds either token. (Write keys are kept
/// as they are on purpose, to be shown to operators again; see the schema.)
#[tokio::test]
async fn admin_tokens_are_stored_only_as_hashes() {
    let collector = Collector::start();
    let (status, created) = collector
        .admin("POST", "/admin/v1/tokens", Some(json!({"label": "ops"})))
        .await;
    let made = created["token"].as_str().unwrap().to_owned();
    let (works, _) = collector.admin_get("/admin/v1/tokens", &made).await;

    let stored = common::every_stored_value(&collector.database_url).await;

    assert_eq!((status, works), (201, 200), "{created}");
    for token in [ADMIN_TOKEN, made.as_str()] {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let found: Vec<_> = stored
            .iter()
            .filter(|(_, _, value)| value.contains(token))
            .collect();
        assert!(found.is_empty(), "a token is stored as it is: {found:#?}");
        assert!(
            stored
                .iter()
                .any(|(table, _, value)| table == "admin_tokens" && *value == hash),
            "the token's hash is stored"
        );
    }
}

#[tokio::test]
async fn a_scoped_token_is_refused_on_every_route_of_another_environment() {
    let collector = Collector::start();
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "traits": {"a": 1}}),
        )
        .await;
    environment(&collector, "staging").await;
    let (_, token) = collector
        .admin(
            "POST",
            "/admin/v1/tokens",
            Some(json!({"label": "staging only", "environment": "staging"})),
        )
        .await;
    let scoped = token["token"].as_str().unwrap().to_owned();
    let (_, before) = collector
        .admin_get("/admin/v1/environments/default", ADMIN_TOKEN)
        .await;
    let bodies = json!({
        "confirm": {"confirm": "default"},
        "rename": {"name": "taken-over"},
        "retention": {"days": 1},
        "segments": {"filter": {}},
    });

    let mut checked = Vec::new();
    let mut wrong = Vec::new();
    for (method, path, operation) in operations(&collector).await {
        let in_path = parameter(&operation, "environment").is_some_and(|p| p["in"] == "path");
        let in_query = parameter(&operation, "environment").is_some_and(|p| p["in"] == "query");
        if !path.starts_with("/admin/") || !(in_path || in_query) {
            continue;
        }
        let mut url = path
            .replace("{environment}", "default")
            .replace("{id}", "ada");
        if in_query {
            url.push_str("?environment=default");
        }
        // A valid body for each, so that only the authorization can refuse it.
        let body = match (method.as_str(), path.rsplit('/').next().unwrap()) {
            (_, "retention") => bodies["retention"].clone(),
            (_, "preview" | "users" | "delete") if path.contains("segments") => {
                bodies["segments"].clone()
            }
            ("PATCH", _) => bodies["rename"].clone(),
            _ => bodies["confirm"].clone(),
        };
        let request = collector
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                collector.url(&url),
            )
            .bearer_auth(&scoped);
        let request = if operation.get("requestBody").is_some() {
            request.json(&body)
        } else {
            request
        };
        let status = request.send().await.unwrap().status().as_u16();
        checked.push(format!("{method} {url}"));
        if status != 403 {
            wrong.push(format!("{method} {url}: {status}"));
        }
    }
    let global = [
        ("GET", "/admin/v1/tokens", json!(null)),
        ("POST", "/admin/v1/tokens", json!({"label": "more"})),
        (
            "POST",
            "/admin/v1/environments",
            json!({"name": "elsewhere"}),
        ),
    ];
    for (method, path, body) in global {
        let status = collector
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                collector.url(path),
            )
            .bearer_auth(&scoped)
            .json(&body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status != 403 {
            wrong.push(format!("{method} {path}: {status}"));
        }
    }
    let (_, after) = collector
        .admin_get("/admin/v1/environments/default", ADMIN_TOKEN)
        .await;
    let (ada, _) = collector.user("ada").await;
    let (_, audit) = collector
        .admin_get("/admin/v1/audit?environment=default", ADMIN_TOKEN)
        .await;

    assert!(checked.len() >= 20, "only {checked:?} were checked");
    assert!(wrong.is_empty(), "not refused: {wrong:#?}");
    assert_eq!(before, after, "the other environment is unchanged");
    assert_eq!(ada, 200, "its user is still there");
    assert!(
        !audit.to_string().contains("staging only"),
        "the scoped token did nothing there: {audit}"
    );
}

/// Makes an admin token for `environment`, or for all without one: (token, id).
async fn token(collector: &Collector, label: &str, environment: Option<&str>) -> (String, String) {
    let body = json!({"label": label, "environment": environment});
    let (status, made) = collector
        .admin("POST", "/admin/v1/tokens", Some(body))
        .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().unwrap().to_owned();
    (secret, made["details"]["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_scoped_token_can_neither_revoke_tokens_nor_create_global_ones() {
    let collector = Collector::start();
    environment(&collector, "staging").await;
    let (scoped, scoped_id) = token(&collector, "staging only", Some("staging")).await;
    let (global, global_id) = token(&collector, "ops", None).await;
    let (_, before) = collector.admin("GET", "/admin/v1/tokens", None).await;

    let mut refused = Vec::new();
    for id in [&global_id, &scoped_id] {
        let path = format!("/admin/v1/tokens/{id}");
        refused.push(collector.admin_as(&scoped, "DELETE", &path, None).await);
    }
    let escalation = json!({"label": "escalated"});
    refused.push(
        collector
            .admin_as(&scoped, "POST", "/admin/v1/tokens", Some(escalation))
            .await,
    );
    let (_, after) = collector.admin("GET", "/admin/v1/tokens", None).await;
    let (global_works, _) = collector.admin_get("/admin/v1/tokens", &global).await;
    let (scoped_works, _) = collector
        .admin_get("/admin/v1/environments/staging", &scoped)
        .await;
    let (_, audit) = collector.admin("GET", "/admin/v1/audit", None).await;

    for (status, reply) in &refused {
        assert_eq!(*status, 403, "{reply}");
        assert_eq!(reply["error"], "forbidden", "{reply}");
    }
    assert_eq!(before, after, "no token was revoked or added");
    assert_eq!((global_works, scoped_works), (200, 200));
    let actions: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert!(
        !actions.contains(&"revoke_token") && !audit.to_string().contains("escalated"),
        "{audit}"
    );
}

#[tokio::test]
async fn a_job_of_one_environment_is_not_found_through_another_and_runs_on() {
    let collector = Collector::start();
    let messages: Vec<Value> = (0..2000)
        .map(|n| json!({"type": "identify", "userId": format!("free-{n}"), "traits": {"plan": "free"}}))
        .collect();
    for chunk in messages.chunks(250) {
        let (status, reply) = collector.post("/v1/batch", &json!({"batch": chunk})).await;
        assert_eq!(status, 200, "{reply}");
    }
    environment(&collector, "staging").await;
    let (scoped, _) = token(&collector, "staging only", Some("staging")).await;
    let (_, job) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "plan", "equals": "free"}})),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let elsewhere = format!("/admin/v1/environments/staging/jobs/{id}");

    let mut answers = Vec::new();
    for token in [ADMIN_TOKEN, scoped.as_str()] {
        answers.push(collector.admin_as(token, "GET", &elsewhere, None).await);
        let cancel = format!("{elsewhere}/cancel");
        answers.push(collector.admin_as(token, "POST", &cancel, None).await);
    }
    let (_, right_after) = collector
        .admin(
            "GET",
            &format!("/admin/v1/environments/default/jobs/{id}"),
            None,
        )
        .await;
    let finished = loop {
        let (_, current) = collector
            .admin(
                "GET",
                &format!("/admin/v1/environments/default/jobs/{id}"),
                None,
            )
            .await;
        if ["done", "cancelled", "failed"].contains(&current["status"].as_str().unwrap()) {
            break current;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };

    for (status, reply) in &answers {
        assert_eq!(*status, 404, "{reply}");
        assert_eq!(reply["error"], "not_found", "{reply}");
    }
    assert!(
        ["pending", "running"].contains(&right_after["status"].as_str().unwrap()),
        "the job was still to be stopped, and was not: {right_after}"
    );
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(finished["done"], 2000);
}

#[tokio::test]
async fn every_route_with_a_body_refuses_one_over_its_limit() {
    let collector = Collector::start();
    // Valid JSON all through, so that only its size can be refused.
    let huge = json!({ "batch": [], "name": "x".repeat(3 * 1024 * 1024) }).to_string();

    let mut wrong = Vec::new();
    let mut checked = 0;
    for (method, path, operation) in operations(&collector).await {
        if operation.get("requestBody").is_none() {
            continue;
        }
        let url = path
            .replace("{environment}", "default")
            .replace("{id}", "ada");
        let request = collector
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                collector.url(&url),
            )
            .header("content-type", "application/json")
            .body(huge.clone());
        let request = if path.starts_with("/admin/") {
            request.bearer_auth(ADMIN_TOKEN)
        } else {
            request.basic_auth(WRITE_KEY, Some(""))
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        checked += 1;
        if status != 413 || body["error"] != "payload_too_large" {
            wrong.push(format!("{method} {url}: {status} {body}"));
        }
    }
    let (ready, _) = collector.admin_get("/readyz", "").await;

    assert!(checked >= 15, "only {checked} routes take a body");
    assert!(wrong.is_empty(), "not refused as too large: {wrong:#?}");
    assert_eq!(ready, 200, "the collector kept serving");
}

#[test]
fn the_log_check_finds_secrets_addresses_payloads_and_trait_values() {
    let clean = "2026-12-04T01:00:00Z INFO ebb_collector: user deleted env.id=3f2c audit.seq=4";
    let leaks = [
        "INFO starting write_key=wk_0123456789abcdef0123456789abcdef",
        "WARN token ebb_admin_0123456789abcdef0123456789abcdef",
        "INFO secret ebb_ivs_0123456789abcdef0123456789abcdef",
        "DEBUG unreadable body: ada.lovelace@example.com",
        r#"DEBUG body {"traits":{"plan":"pro"}}"#,
        "DEBUG key wk_test_key",
    ];
    let trait_value = format!("DEBUG merged value {TRAIT_MARKER} into the user");

    assert!(log_leaks(clean).is_empty());
    for line in leaks.into_iter().chain([trait_value.as_str()]) {
        assert_eq!(log_leaks(line), vec![line.to_owned()], "{line}");
    }
}
