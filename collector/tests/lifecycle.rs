//! Letting data go: deleting a user, purging and deleting environments, tombstones,
//! export, the audit chain and scoped tokens. After each deletion a walk over every table
//! of the database, taken from its own catalog, shows that nothing of the deleted user
//! is left but keyed hashes and counts.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_forgotten, assert_stored, Collector, ADMIN_TOKEN, TRAIT_MARKER};
use serde_json::{json, Value};

/// A user with a distinctive id, anonymous id and traits, and records of every kind.
async fn populate(collector: &Collector, user: &str) -> [String; 4] {
    let visitor = format!("{user}-visitor");
    let email = format!("{user}@deleted.example");
    let company = format!("{user}-company");
    let batch = json!({"batch": [
        {"type": "track", "anonymousId": visitor, "event": "Browsed", "messageId": format!("{user}-m1"),
         "context": {"consent": {"categoryPreferences": {"analytics": true}}}},
        {"type": "identify", "userId": user, "anonymousId": visitor,
         "traits": {"email": email, "company": company, "note": TRAIT_MARKER},
         "messageId": format!("{user}-m2")},
        {"type": "page", "userId": user, "name": "Pricing", "properties": {"ref": company},
         "messageId": format!("{user}-m3")},
        {"type": "response", "userId": user, "surveyId": "nps", "answers": {"why": email},
         "messageId": format!("{user}-m4")},
        {"type": "group", "userId": user, "groupId": company, "messageId": format!("{user}-m5")}
    ]});
    let (status, reply) = collector.post("/v1/batch", &batch).await;
    assert_eq!(status, 200, "{reply}");
    [user.to_owned(), visitor, email, company]
}

fn needles(values: &[String; 4]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn deleting_a_user_removes_every_record_and_returns_a_receipt() {
    let collector = Collector::start();
    let ada = populate(&collector, "ada-7f3e").await;
    let bob = populate(&collector, "bob-91c2").await;
    assert_stored(&collector.database_url, &needles(&ada)).await;

    let (status, receipt) = collector
        .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
        .await;
    let (after, _) = collector.user("ada-7f3e").await;
    let (by_visitor, _) = collector.user("ada-7f3e-visitor").await;
    let (bob_status, _) = collector.user("bob-91c2").await;

    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["removed"]["users"], 1);
    assert_eq!(receipt["removed"]["events"], 3);
    assert_eq!(receipt["removed"]["responses"], 1);
    assert_eq!(receipt["removed"]["identities"], 2);
    assert_eq!(receipt["removed"]["consentRecords"], 1);
    assert_eq!(receipt["idHashes"].as_array().unwrap().len(), 2);
    assert!(receipt["auditEntry"].as_i64().unwrap() >= 1);
    assert_eq!((after, by_visitor), (404, 404));
    assert_eq!(bob_status, 200, "other users stay");
    assert_forgotten(&collector.database_url, &needles(&ada)).await;
    assert_stored(&collector.database_url, &needles(&bob)).await;
}

#[tokio::test]
async fn a_deleted_user_is_not_recreated_by_a_late_batch() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    collector
        .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
        .await;

    let retried = json!({"batch": [
        {"type": "page", "userId": "ada-7f3e", "name": "Pricing", "messageId": "ada-7f3e-m3"},
        {"type": "track", "userId": "ada-7f3e", "event": "New", "messageId": "fresh-1"},
        {"type": "track", "anonymousId": "ada-7f3e-visitor", "event": "Anon", "messageId": "fresh-2"},
        {"type": "track", "userId": "carol", "event": "Unrelated", "messageId": "fresh-3"}
    ]});
    let (status, _) = collector.post("/v1/batch", &retried).await;
    let metrics = collector
        .http
        .get(collector.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();

    assert_eq!(status, 200);
    assert_eq!(collector.user("ada-7f3e").await.0, 404);
    assert_eq!(collector.user("ada-7f3e-visitor").await.0, 404);
    assert_eq!(collector.user("carol").await.0, 200);
    assert!(
        metrics.contains("ebb_messages_suppressed_total 3"),
        "{metrics}"
    );
    assert_forgotten(&collector.database_url, &["ada-7f3e"]).await;
}

/// How long each stored tombstone lasts, in whole days (expiry minus creation).
async fn tombstone_days(database_url: &str) -> Vec<i64> {
    let query = if database_url.starts_with("postgres") {
        "SELECT ROUND(EXTRACT(EPOCH FROM expires_at - created_at) / 86400)::bigint \
         FROM suppressions"
    } else {
        "SELECT CAST(ROUND(julianday(expires_at) - julianday(created_at)) AS INTEGER) \
         FROM suppressions"
    };
    common::fetch_integers(database_url, query).await
}

#[tokio::test]
async fn tombstones_last_the_configured_days_thirty_by_default() {
    let default = Collector::start();
    let configured = Collector::start_with(&[("EBB_SUPPRESSION_DAYS", "7")]);
    for collector in [&default, &configured] {
        populate(collector, "ada-7f3e").await;
        let (status, _) = collector
            .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
            .await;
        assert_eq!(status, 200);
    }

    let by_default = tombstone_days(&default.database_url).await;
    let as_configured = tombstone_days(&configured.database_url).await;

    assert_eq!(by_default, [30, 30], "one tombstone per id");
    assert_eq!(as_configured, [7, 7]);
}

#[tokio::test]
async fn a_late_batch_is_stored_again_once_the_tombstone_expired() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    collector
        .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
        .await;
    // The batch a browser kept queued, with its original message id.
    let late = json!({"batch": [{"type": "page", "userId": "ada-7f3e", "name": "Pricing",
                                 "messageId": "ada-7f3e-m3"}]});

    collector.post("/v1/batch", &late).await;
    let (while_suppressed, _) = collector.user("ada-7f3e").await;
    common::execute(
        &collector.database_url,
        "UPDATE suppressions SET expires_at = created_at",
    )
    .await;
    let (status, _) = collector.post("/v1/batch", &late).await;
    let (after_expiry, user) = collector.user("ada-7f3e").await;

    assert_eq!(while_suppressed, 404, "the tombstone held while it lasted");
    assert_eq!(status, 200);
    assert_eq!(
        after_expiry, 200,
        "the expired tombstone no longer suppresses"
    );
    assert_eq!(user["events"][0]["messageId"], "ada-7f3e-m3");
}

#[tokio::test]
async fn a_lifted_suppression_lets_the_id_be_stored_again() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    collector
        .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
        .await;

    let (lifted, _) = collector
        .admin("DELETE", "/admin/v1/suppressions/ada-7f3e", None)
        .await;
    let (again, _) = collector
        .admin("DELETE", "/admin/v1/suppressions/ada-7f3e", None)
        .await;
    collector
        .post("/v1/track", &json!({"userId": "ada-7f3e", "event": "Back"}))
        .await;
    let (status, user) = collector.user("ada-7f3e").await;

    assert_eq!((lifted, again), (204, 404));
    assert_eq!(status, 200);
    assert_eq!(user["events"][0]["event"], "Back");
}

#[tokio::test]
async fn purging_asks_for_the_name_and_wipes_all_user_data_but_keeps_the_environment() {
    let collector = Collector::start();
    let ada = populate(&collector, "ada-7f3e").await;
    let bob = populate(&collector, "bob-91c2").await;

    let (unconfirmed, refusal) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/purge",
            Some(json!({"confirm": "prod"})),
        )
        .await;
    let (still_there, _) = collector.user("ada-7f3e").await;
    let (status, receipt) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/purge",
            Some(json!({"confirm": "default"})),
        )
        .await;
    let (ingest_after, _) = collector
        .post("/v1/track", &json!({"userId": "new-user", "event": "E"}))
        .await;

    assert_eq!(unconfirmed, 400);
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("\"confirm\": \"default\""),
        "{refusal}"
    );
    assert_eq!(still_there, 200);
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["removed"]["users"], 2);
    assert_eq!(ingest_after, 200, "keys and settings remain");
    let mut all = needles(&ada);
    all.extend(needles(&bob));
    assert_forgotten(&collector.database_url, &all).await;
}

/// The HMAC-SHA256 of `user_id` under `secret`, as `context.userHash` carries it.
fn user_hash(secret: &str, user_id: &str) -> String {
    use hmac::{Hmac, Mac as _};

    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(user_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn purging_keeps_the_retention_rule_origins_ip_setting_and_identity_secret() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    let default = "/admin/v1/environments/default";
    let rule = json!({"days": 400, "daysWithoutResponse": 90});
    collector
        .admin("PUT", &format!("{default}/retention"), Some(rule.clone()))
        .await;
    let settings = json!({"allowedOrigins": ["https://shop.example"], "storeIp": true});
    collector.admin("PATCH", default, Some(settings)).await;
    let (_, secret) = collector
        .admin("POST", &format!("{default}/identity-secret"), None)
        .await;
    let secret = secret["identitySecret"].as_str().unwrap().to_owned();
    let (_, before) = collector.admin("GET", default, None).await;

    let (status, receipt) = collector
        .admin(
            "POST",
            &format!("{default}/purge"),
            Some(json!({"confirm": "default"})),
        )
        .await;
    let (_, after) = collector.admin("GET", default, None).await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    let (unproven, refusal) = collector
        .post("/v1/track", &json!({"userId": "new-user", "event": "E"}))
        .await;
    let proof = json!({"userHash": user_hash(&secret, "new-user")});
    let (proven, _) = collector
        .post(
            "/v1/track",
            &json!({"userId": "new-user", "event": "E", "context": proof}),
        )
        .await;
    let foreign = collector
        .http
        .post(collector.url("/v1/track"))
        .basic_auth(common::WRITE_KEY, Some(""))
        .header("origin", "https://elsewhere.example")
        .json(&json!({"anonymousId": "visitor", "event": "E"}))
        .send()
        .await
        .unwrap();

    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["removed"]["users"], 1);
    assert_eq!(after, before, "settings and keys are as they were");
    assert_eq!(after["retention"], rule);
    assert_eq!(after["allowedOrigins"], json!(["https://shop.example"]));
    assert_eq!(after["storeIp"], true);
    assert_eq!(after["identityVerification"], true);
    assert_eq!(unproven, 400, "a userHash is still demanded");
    assert_eq!(refusal["rejected"][0]["error"], "missing_user_hash");
    assert_eq!(proven, 200, "the same secret still proves the user");
    assert_eq!(foreign.status().as_u16(), 403, "the origins still hold");
    assert_eq!(entries[0]["action"], "purge_environment");
    assert_eq!(entries[0]["seq"], receipt["auditEntry"]);
    assert_eq!(entries[0]["counts"]["users"], 1);
    assert!(entries[0]["actor"].as_str().unwrap().starts_with("token:"));
}

#[tokio::test]
async fn deleting_an_environment_without_its_name_is_refused_and_deletes_nothing() {
    let collector = Collector::start();
    let (_, staging) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let key = staging["writeKeys"][0].as_str().unwrap().to_owned();
    let identify = json!({"userId": "stan-55aa", "traits": {"plan": "pro"}});
    collector.post_as(&key, "/v1/identify", &identify).await;
    let path = "/admin/v1/environments/staging";
    let (_, before) = collector.admin("GET", path, None).await;
    let confirmations = [
        Some(json!({"confirm": "prod"})),
        Some(json!({"confirm": "Staging"})),
        Some(json!({"confirm": staging["id"]})),
        Some(json!({})),
        None,
    ];

    let mut refusals = Vec::new();
    for confirmation in confirmations {
        refusals.push(collector.admin("DELETE", path, confirmation).await);
    }
    let (_, after) = collector.admin("GET", path, None).await;
    let (user, _) = collector
        .admin("GET", "/admin/v1/users/stan-55aa?environment=staging", None)
        .await;
    let (ingest, _) = collector.post_as(&key, "/v1/identify", &identify).await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;

    for (status, reply) in &refusals {
        assert_eq!(*status, 400, "{reply}");
        assert_eq!(reply["error"], "invalid_request", "{reply}");
    }
    assert!(
        refusals[0].1["message"]
            .as_str()
            .unwrap()
            .contains("\"confirm\": \"staging\""),
        "the refusal says what to send: {}",
        refusals[0].1
    );
    assert_eq!(after, before, "the environment and its keys are there");
    assert_eq!(user, 200, "its users are there");
    assert_eq!(ingest, 200, "its write key still works");
    let actions: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(
        actions,
        [json!("create_environment")],
        "nothing was deleted"
    );
}

#[tokio::test]
async fn deleting_an_environment_removes_it_and_its_keys_but_not_the_audit() {
    let collector = Collector::start();
    let (_, staging) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let key = staging["writeKeys"][0].as_str().unwrap().to_owned();
    let batch = json!({"batch": [{"type": "identify", "userId": "stan-55aa",
                                  "traits": {"email": "stan-55aa@deleted.example"}}]});
    collector.post_as(&key, "/v1/batch", &batch).await;

    let (default_refused, _) = collector
        .admin(
            "DELETE",
            "/admin/v1/environments/default",
            Some(json!({"confirm": "default"})),
        )
        .await;
    let (status, receipt) = collector
        .admin(
            "DELETE",
            "/admin/v1/environments/staging",
            Some(json!({"confirm": "staging"})),
        )
        .await;
    let (key_after, _) = collector.post_as(&key, "/v1/batch", &batch).await;
    let (lookup, _) = collector
        .admin("GET", "/admin/v1/environments/staging", None)
        .await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;

    assert_eq!(default_refused, 409);
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["removed"]["environments"], 1);
    assert_eq!(receipt["removed"]["users"], 1);
    assert_eq!(key_after, 401);
    assert_eq!(lookup, 404);
    assert_eq!(entries[0]["action"], "delete_environment");
    assert_forgotten(&collector.database_url, &["stan-55aa", &key]).await;
}

#[tokio::test]
async fn the_audit_log_records_actions_without_personal_data_and_detects_tampering() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    collector
        .admin("DELETE", "/admin/v1/users/ada-7f3e", None)
        .await;
    collector
        .admin(
            "PATCH",
            "/admin/v1/environments/default",
            Some(json!({"storeIp": true})),
        )
        .await;
    collector
        .admin("GET", "/admin/v1/users/nobody/export", None)
        .await;

    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    let (_, intact) = collector.admin("GET", "/admin/v1/audit/verify", None).await;
    common::execute(
        &collector.database_url,
        "UPDATE audit_entries SET counts = '{\"users\": 0}' WHERE seq = 1",
    )
    .await;
    let (_, tampered) = collector.admin("GET", "/admin/v1/audit/verify", None).await;

    let actions: Vec<_> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].clone())
        .collect();
    assert_eq!(actions, [json!("update_environment"), json!("delete_user")]);
    let deletion = &entries[1];
    assert_eq!(deletion["counts"]["users"], 1);
    assert!(deletion["actor"].as_str().unwrap().starts_with("token:"));
    assert!(
        !deletion.to_string().contains("ada-7f3e"),
        "no personal data: {deletion}"
    );
    assert_eq!(entries[0]["prevHash"], deletion["hash"]);
    assert_eq!(
        intact,
        json!({"valid": true, "entries": 2, "firstBroken": null})
    );
    assert_eq!(tampered["valid"], false);
    assert_eq!(tampered["firstBroken"], 1);
}

#[tokio::test]
async fn creating_an_environment_and_rotating_its_key_and_secret_are_audited_without_them() {
    let collector = Collector::start();
    let (_, made) = collector
        .admin(
            "POST",
            "/admin/v1/tokens",
            Some(json!({"label": "key-ops"})),
        )
        .await;
    let token = made["token"].as_str().unwrap().to_owned();
    let actor = format!(
        "token:{} (key-ops)",
        made["details"]["id"].as_str().unwrap()
    );
    let secret_path = "/admin/v1/environments/staging/identity-secret";

    let (created, staging) = collector
        .admin_as(
            &token,
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let (rotated, key) = collector
        .admin_as(
            &token,
            "POST",
            "/admin/v1/environments/staging/write-key",
            None,
        )
        .await;
    let (set, first) = collector.admin_as(&token, "POST", secret_path, None).await;
    let (replaced, second) = collector.admin_as(&token, "POST", secret_path, None).await;
    let (removed, _) = collector
        .admin_as(&token, "DELETE", secret_path, None)
        .await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    let (_, check) = collector.admin("GET", "/admin/v1/audit/verify", None).await;

    assert_eq!(
        (created, rotated, set, replaced, removed),
        (201, 200, 200, 200, 204)
    );
    let staging_entries: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["environmentId"] == staging["id"])
        .collect();
    let actions: Vec<_> = staging_entries
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "remove_identity_secret",
            "set_identity_secret",
            "set_identity_secret",
            "rotate_write_key",
            "create_environment",
        ]
    );
    for entry in &staging_entries {
        assert_eq!(entry["actor"], actor.as_str(), "{entry}");
    }
    assert_eq!(staging_entries[4]["request"], json!({"name": "staging"}));
    assert_eq!(staging_entries[2]["request"]["rotated"], false);
    assert_eq!(staging_entries[1]["request"]["rotated"], true);
    assert_eq!(
        staging_entries[0]["request"],
        json!({"identityVerification": false})
    );
    let secrets = [
        staging["writeKeys"][0].as_str().unwrap(),
        key["writeKey"].as_str().unwrap(),
        first["identitySecret"].as_str().unwrap(),
        second["identitySecret"].as_str().unwrap(),
    ];
    let log = entries.to_string();
    for secret in secrets {
        assert!(!log.contains(secret), "the audit log holds {secret}: {log}");
    }
    assert_eq!(
        check,
        json!({"valid": true, "entries": 6, "firstBroken": null}),
        "the token's creation and the five actions, chained"
    );
}

#[tokio::test]
async fn a_token_scoped_to_one_environment_acts_only_there() {
    let collector = Collector::start();
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "traits": {"a": 1}}),
        )
        .await;
    collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let (created, token) = collector
        .admin(
            "POST",
            "/admin/v1/tokens",
            Some(json!({"label": "staging ops", "environment": "staging"})),
        )
        .await;
    let scoped = token["token"].as_str().unwrap().to_owned();
    let id = token["details"]["id"].as_str().unwrap().to_owned();
    let as_scoped = |method: &str, path: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        collector
            .http
            .request(method, collector.url(path))
            .bearer_auth(&scoped)
            .send()
    };

    let default_read = as_scoped("GET", "/admin/v1/users/ada?environment=default")
        .await
        .unwrap();
    let default_delete = as_scoped("DELETE", "/admin/v1/users/ada?environment=default")
        .await
        .unwrap();
    let own_read = as_scoped("GET", "/admin/v1/users/ada").await.unwrap();
    let listed: Value = as_scoped("GET", "/admin/v1/environments")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = as_scoped("GET", "/admin/v1/tokens").await.unwrap();
    let (revoked, _) = collector
        .admin("DELETE", &format!("/admin/v1/tokens/{id}"), None)
        .await;
    let after_revoke = as_scoped("GET", "/admin/v1/environments").await.unwrap();

    assert_eq!(created, 201);
    assert!(scoped.starts_with("ebb_admin_"));
    assert_eq!(default_read.status().as_u16(), 403);
    assert_eq!(default_delete.status().as_u16(), 403);
    assert_eq!(
        own_read.status().as_u16(),
        404,
        "its own environment has no user ada"
    );
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "staging");
    assert_eq!(tokens.status().as_u16(), 403);
    assert_eq!(revoked, 204);
    assert_eq!(after_revoke.status().as_u16(), 401);
    assert_eq!(
        collector.user("ada").await.0,
        200,
        "the user was not deleted"
    );
}

#[tokio::test]
async fn an_export_imported_into_a_fresh_environment_gives_the_same_user() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    collector
        .post(
            "/v1/track",
            &json!({"userId": "ada-7f3e", "event": "Bought",
        "properties": {"sku": "A-1", "price": 12.5, "tags": ["x", "y"]}, "messageId": "buy-1",
        "timestamp": "2024-03-01T10:00:00.123456Z"}),
        )
        .await;
    // The latest activity, consent and privacy signal come from an identify, which the
    // export carries as no event.
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada-7f3e", "context": {"gpc": true,
                    "consent": {"categoryPreferences": {"analytics": false}}}}),
        )
        .await;
    let (_, staging) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "import"})),
        )
        .await;
    let import_key = staging["writeKeys"][0].as_str().unwrap().to_owned();

    let (_, original) = collector
        .admin("GET", "/admin/v1/users/ada-7f3e/export", None)
        .await;
    let ndjson = collector
        .http
        .get(collector.url("/admin/v1/users/ada-7f3e/export?format=ndjson"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let content_type = ndjson.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let lines = ndjson.text().await.unwrap();
    for line in lines.lines() {
        let batch: Value = serde_json::from_str(line).unwrap();
        let (status, reply) = collector.post_as(&import_key, "/v1/batch", &batch).await;
        assert_eq!(status, 200, "{reply}");
    }
    let (_, imported) = collector
        .admin_get("/admin/v1/users/ada-7f3e?environment=import", ADMIN_TOKEN)
        .await;

    assert_eq!(content_type, "application/x-ndjson");
    assert_eq!(imported["userId"], original["userId"]);
    assert_eq!(imported["anonymousIds"], original["anonymousIds"]);
    assert_eq!(imported["traits"], original["traits"]);
    assert_eq!(original["consent"], json!({"analytics": false}));
    assert_eq!(imported["consent"], original["consent"]);
    assert_eq!(original["gpc"], true);
    assert_eq!(imported["gpc"], original["gpc"]);
    assert_eq!(imported["firstSeen"], original["firstSeen"]);
    assert_eq!(imported["lastSeen"], original["lastSeen"]);
    assert_eq!(imported["counts"]["events"], original["counts"]["events"]);
    assert_eq!(
        imported["counts"]["responses"],
        original["counts"]["responses"]
    );
    let latest = |profile: &Value| {
        profile["consentHistory"]
            .as_array()
            .unwrap()
            .last()
            .cloned()
    };
    assert_eq!(
        latest(&imported).map(|record| record["preferences"].clone()),
        latest(&original).map(|record| record["preferences"].clone()),
        "the history ends in the same state (the changes before it need not survive)"
    );
    assert_eq!(
        comparable(&imported["events"]),
        comparable(&original["events"])
    );
    assert_eq!(imported["responses"], original["responses"]);
    assert_eq!(original["events"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn the_json_export_holds_every_message_id_stored_for_the_user() {
    let collector = Collector::start();
    populate(&collector, "ada-7f3e").await;
    populate(&collector, "bob-91c2").await;
    // A second change of consent, by an identify sent without a message id: the
    // collector stores the one it gives it.
    let withdrawal = json!({"userId": "ada-7f3e",
                            "context": {"consent": {"categoryPreferences": {"analytics": false}}}});
    collector.post("/v1/identify", &withdrawal).await;
    let stored = common::fetch_texts(
        &collector.database_url,
        "SELECT m.message_id FROM message_ids m JOIN identities i \
           ON i.environment_id = m.environment_id AND i.user_key = m.user_key \
         WHERE i.kind = 'user' AND i.value = 'ada-7f3e' ORDER BY m.message_id",
    )
    .await;

    let (status, export) = collector
        .admin("GET", "/admin/v1/users/ada-7f3e/export?format=json", None)
        .await;

    assert_eq!(status, 200, "{export}");
    let listed = export["messageIds"].as_array().unwrap();
    let mut exported: Vec<String> = listed
        .iter()
        .map(|entry| entry["messageId"].as_str().unwrap().to_owned())
        .collect();
    exported.sort_unstable();
    assert_eq!(exported, stored);
    assert_eq!(
        stored.len(),
        6,
        "populate's five and the identify: {stored:?}"
    );
    for own in ["ada-7f3e-m1", "ada-7f3e-m2", "ada-7f3e-m4"] {
        assert!(stored.iter().any(|id| id == own), "{own} in {stored:?}");
    }
    assert!(
        listed.iter().all(|entry| entry["receivedAt"].is_string()),
        "{export}"
    );
    assert_eq!(export["consentHistory"].as_array().unwrap().len(), 2);
}

/// Events without the receive time, which an import necessarily changes.
fn comparable(events: &Value) -> Vec<Value> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|event| {
            let mut event = event.clone();
            event.as_object_mut().unwrap().remove("receivedAt");
            event
        })
        .collect()
}

#[tokio::test]
async fn deleting_a_user_while_their_batches_arrive_leaves_no_orphan_rows() {
    let collector = Collector::start();
    populate(&collector, "busy-3c9d").await;

    let senders = (0..4).map(|sender| {
        let collector = &collector;
        async move {
            for round in 0..15 {
                let batch: Vec<Value> = (0..10)
                    .map(|n| json!({"type": "track", "userId": "busy-3c9d", "anonymousId": "busy-3c9d-visitor",
                                    "event": "Tick", "messageId": format!("tick-{sender}-{round}-{n}"),
                                    "context": {"consent": {"categoryPreferences": {"analytics": round % 2 == 0}}}}))
                    .collect();
                collector.post("/v1/batch", &json!({"batch": batch})).await;
            }
        }
    });
    let deletion = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        collector
            .admin("DELETE", "/admin/v1/users/busy-3c9d", None)
            .await
    };
    let (_, (deleted, receipt)) = tokio::join!(futures_util::future::join_all(senders), deletion);

    assert_eq!(deleted, 200, "{receipt}");
    assert_eq!(collector.user("busy-3c9d").await.0, 404);
    assert_eq!(collector.user("busy-3c9d-visitor").await.0, 404);
    assert_forgotten(&collector.database_url, &["busy-3c9d"]).await;
    assert_no_orphans(&collector.database_url).await;
}

/// Every row that names a user key names a user that exists.
async fn assert_no_orphans(database_url: &str) {
    let values = common::every_stored_value(database_url).await;
    let users: std::collections::HashSet<&str> = values
        .iter()
        .filter(|(table, column, _)| table == "users" && column == "id")
        .map(|(_, _, value)| value.as_str())
        .collect();
    let orphans: Vec<_> = values
        .iter()
        .filter(|(_, column, value)| column == "user_key" && !users.contains(value.as_str()))
        .collect();
    assert!(
        orphans.is_empty(),
        "rows name users that do not exist: {orphans:#?}"
    );
}
