//! Operating the collector: the environments API, browser origins and their preflights,
//! the rate limit, health, readiness and metrics, JSON logs, concurrent load and a
//! graceful shutdown.

mod common;

use std::time::Duration;

use common::{Collector, TestDb, ADMIN_TOKEN, WRITE_KEY};
use serde_json::json;

fn track(user: &str, event: &str) -> serde_json::Value {
    json!({"batch": [{"type": "track", "userId": user, "event": event}]})
}

#[tokio::test]
async fn environments_are_created_listed_renamed_and_their_keys_rotated() {
    let collector = Collector::start();

    let (created, staging) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let old_key = staging["writeKeys"][0].as_str().unwrap().to_owned();
    let (duplicate, duplicate_body) = collector
        .admin(
            "POST",
            "/admin/v1/environments",
            Some(json!({"name": "staging"})),
        )
        .await;
    let (stored_before, _) = collector
        .post_as(&old_key, "/v1/batch", &track("ada", "E"))
        .await;
    let (renamed, renamed_body) = collector
        .admin(
            "PATCH",
            "/admin/v1/environments/staging",
            Some(json!({"name": "preview"})),
        )
        .await;
    let (rotated, rotation) = collector
        .admin("POST", "/admin/v1/environments/preview/write-key", None)
        .await;
    let new_key = rotation["writeKey"].as_str().unwrap().to_owned();
    let (old_after, _) = collector
        .post_as(&old_key, "/v1/batch", &track("ada", "E"))
        .await;
    let (new_after, _) = collector
        .post_as(&new_key, "/v1/batch", &track("ada", "E"))
        .await;
    let (_, list) = collector.admin("GET", "/admin/v1/environments", None).await;
    let (_, in_default) = collector.user("ada").await;
    let (_, in_preview) = collector
        .admin_get("/admin/v1/users/ada?environment=preview", ADMIN_TOKEN)
        .await;

    assert_eq!(created, 201);
    assert_eq!(staging["name"], "staging");
    assert_eq!(duplicate, 409, "{duplicate_body}");
    assert_eq!(stored_before, 200);
    assert_eq!(
        (renamed, renamed_body["name"].clone()),
        (200, json!("preview"))
    );
    assert_eq!(rotated, 200);
    assert_ne!(new_key, old_key);
    assert_eq!(old_after, 401, "a rotated-out key stops working at once");
    assert_eq!(new_after, 200);
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert_eq!(names, [json!("default"), json!("preview")]);
    assert_eq!(
        in_default["error"], "user_not_found",
        "environments are separate"
    );
    assert_eq!(in_preview["events"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn environment_settings_are_validated() {
    let collector = Collector::start();

    let cases = [
        ("POST", "/admin/v1/environments", json!({"name": "  "}), 400),
        (
            "POST",
            "/admin/v1/environments",
            json!({"name": "x".repeat(101)}),
            400,
        ),
        (
            "POST",
            "/admin/v1/environments",
            json!({"nme": "typo"}),
            400,
        ),
        (
            "PATCH",
            "/admin/v1/environments/default",
            json!({"allowedOrigins": ["shop.example"]}),
            400,
        ),
        (
            "PATCH",
            "/admin/v1/environments/default",
            json!({"allowedOrigins": ["https://a/x"]}),
            400,
        ),
        (
            "PATCH",
            "/admin/v1/environments/default",
            json!({"allowedOrigins": ["https://shop\u{0}.example"]}),
            400,
        ),
        (
            "PATCH",
            "/admin/v1/environments/nowhere",
            json!({"storeIp": true}),
            404,
        ),
    ];

    for (method, path, body, expected) in cases {
        let (status, reply) = collector.admin(method, path, Some(body.clone())).await;
        assert_eq!(status, expected, "{method} {path} {body}: {reply}");
        assert!(
            reply["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn browsers_may_send_from_allowed_origins_only() {
    let collector = Collector::start();
    let send_from = |origin: &'static str| {
        collector
            .http
            .post(collector.url("/v1/batch"))
            .header("origin", origin)
            .header("content-type", "text/plain")
            .body(json!({"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "ada", "event": origin}]}).to_string())
            .send()
    };

    let preflight = collector
        .http
        .request(reqwest::Method::OPTIONS, collector.url("/v1/batch"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    let open = send_from("https://anywhere.example").await.unwrap();
    let (patched, _) = collector
        .admin(
            "PATCH",
            "/admin/v1/environments/default",
            Some(json!({"allowedOrigins": ["https://shop.example"]})),
        )
        .await;
    let allowed = send_from("https://shop.example").await.unwrap();
    let refused = send_from("https://evil.example").await.unwrap();

    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed_headers.contains("Authorization"));
    assert_eq!(
        open.status().as_u16(),
        200,
        "any origin while the list is empty"
    );
    assert_eq!(
        open.headers()["access-control-allow-origin"],
        "https://anywhere.example"
    );
    assert_eq!(patched, 200);
    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert_eq!(refused.status().as_u16(), 403);
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "origin_not_allowed");
}

/// A preflight carries no write key, so it cannot know the environment and admits every
/// origin; the request that follows it is where an origin outside the list is refused.
#[tokio::test]
async fn a_preflight_admits_any_origin_and_the_request_from_one_outside_the_list_is_refused() {
    let collector = Collector::start();
    let (patched, _) = collector
        .admin(
            "PATCH",
            "/admin/v1/environments/default",
            Some(json!({"allowedOrigins": ["https://shop.example"]})),
        )
        .await;

    let preflight = collector
        .http
        .request(reqwest::Method::OPTIONS, collector.url("/v1/track"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    let request = collector
        .http
        .post(collector.url("/v1/track"))
        .header("origin", "https://evil.example")
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"userId": "ada", "event": "From elsewhere"}))
        .send()
        .await
        .unwrap();
    let refused_has_allow_origin = request
        .headers()
        .contains_key("access-control-allow-origin");
    let (refused, body) = common::read(request).await;
    let (stored, _) = collector.user("ada").await;

    assert_eq!(patched, 200);
    assert_eq!(preflight.status().as_u16(), 204);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://evil.example"
    );
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(refused, 403);
    assert_eq!(body["error"], "origin_not_allowed");
    assert!(
        !refused_has_allow_origin,
        "the page may not even read the refusal"
    );
    assert_eq!(stored, 404, "nothing from the refused origin is stored");
}

#[tokio::test]
async fn a_write_key_over_its_rate_limit_is_told_when_to_retry() {
    let collector = Collector::start_with(&[("EBB_RATE_LIMIT", "2")]);

    let mut answers = Vec::new();
    for index in 0..6 {
        let response = collector
            .http
            .post(collector.url("/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&track("ada", &format!("E{index}")))
            .send()
            .await
            .unwrap();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        answers.push((response.status().as_u16(), retry_after));
    }
    let (_, user) = collector.user("ada").await;

    let limited: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert!(!limited.is_empty(), "{answers:?}");
    assert!(limited.iter().all(|(_, retry)| retry
        .as_deref()
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)));
    let accepted = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(
        user["events"].as_array().unwrap().len(),
        accepted,
        "a 429 stores nothing"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let collector = Collector::start();
    collector
        .post(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "ada", "event": "E"},
                {"type": "track", "event": "No identity"}
            ]}),
        )
        .await;

    let health = collector
        .http
        .get(collector.url("/healthz"))
        .send()
        .await
        .unwrap();
    let ready = collector
        .http
        .get(collector.url("/readyz"))
        .send()
        .await
        .unwrap();
    let metrics = collector
        .http
        .get(collector.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();

    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(ready.status().as_u16(), 200);
    for expected in [
        "ebb_messages_accepted_total 1",
        "ebb_messages_rejected_total{reason=\"missing_identity\"} 1",
        "ebb_batch_messages_count 1",
        "ebb_commit_seconds_bucket",
        "ebb_commit_group_requests_count",
        "ebb_db_pool_connections{state=\"idle\"}",
        "ebb_http_requests_total{route=\"/v1/batch\",status=\"400\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing `{expected}` in\n{metrics}"
        );
    }
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn readiness_is_503_while_the_database_refuses_connections() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::postgres();
    let collector = Collector::start_in(temp.path(), &db, &[]);
    let ready = || async {
        let response = collector
            .http
            .get(collector.url("/readyz"))
            .send()
            .await
            .unwrap();
        common::read(response).await
    };

    let (before, _) = ready().await;
    db.run_on_server("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false");
    db.run_on_server(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'",
    );
    // Termination is signalled, not awaited: wait (up to 5 s) until the sessions are gone.
    db.run_on_server(
        "DO $$ BEGIN FOR attempt IN 1..500 LOOP \
           PERFORM pg_stat_clear_snapshot(); \
           EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity WHERE datname = '{db}'); \
           PERFORM pg_sleep(0.01); \
         END LOOP; END $$",
    );
    let (during, body) = ready().await;
    let (alive, _) = collector.admin_get("/healthz", "").await;
    db.run_on_server("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true");
    let (after, _) = ready().await;

    assert_eq!(before, 200);
    assert_eq!(during, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(alive, 200, "the process itself still serves");
    assert_eq!(after, 200, "ready again once the database answers");
}

#[tokio::test]
async fn concurrent_batches_are_all_stored() {
    let collector = Collector::start();

    let requests = (0..40).map(|user| {
        let batch: Vec<_> = (0..20)
            .map(|event| json!({"type": "track", "userId": format!("u{user}"), "event": format!("E{event}")}))
            .collect();
        let body = json!({"batch": batch});
        let collector = &collector;
        async move { collector.post("/v1/batch", &body).await.0 }
    });
    let statuses = futures_util::future::join_all(requests).await;

    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    for user in 0..40 {
        let (_, profile) = collector.user(&format!("u{user}")).await;
        assert_eq!(
            profile["events"].as_array().unwrap().len(),
            20,
            "user u{user}"
        );
    }
}

#[tokio::test]
async fn json_logs_make_every_stderr_line_a_json_object() {
    let mut collector = Collector::start_with(&[("EBB_LOG_FORMAT", "json")]);
    collector.post("/v1/batch", &track("ada", "Stored")).await;
    collector
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "event": "No identity"}]}),
        )
        .await;
    collector
        .post_as("wk_unknown", "/v1/batch", &track("ada", "E"))
        .await;
    collector.user("ada").await;

    let stopped = collector.terminate();
    let log = collector.log();

    assert!(stopped, "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines.iter().all(serde_json::Value::is_object), "{log}");
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    for expected in [
        "listening",
        "batch committed",
        "batch refused",
        "ingest with an unknown write key",
        "stopped",
    ] {
        assert!(
            messages.contains(&expected),
            "no `{expected}` in {messages:?}"
        );
    }
    for level in ["DEBUG", "INFO", "WARN"] {
        assert!(
            lines.iter().any(|line| line["level"] == level),
            "no {level} line"
        );
    }
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_and_commit() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut collector = Collector::start_in(temp.path(), &db, &env);
    let body = track("ada", "Sent during shutdown")
        .to_string()
        .into_bytes();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let (chunks, stream) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let request = collector
        .http
        .post(collector.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .body(reqwest::Body::wrap_stream(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        ))
        .send();
    let pending = tokio::spawn(request);

    chunks.send(Ok(first_half.to_vec())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = collector.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    chunks.send(Ok(second_half.to_vec())).await.unwrap();
    drop(chunks);
    let response = pending.await.unwrap().unwrap();
    let exited_cleanly = collector.terminate_wait();
    let restarted = Collector::start_in(temp.path(), &db, &env);
    let (_, user) = restarted.user("ada").await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(
        exited_cleanly,
        "the collector exits with status 0 after SIGTERM"
    );
    assert_eq!(user["events"][0]["event"], "Sent during shutdown");
}

#[tokio::test]
async fn pages_carry_a_content_security_policy_and_refuse_framing() {
    let collector = Collector::start();
    std::fs::create_dir_all(collector.data_dir.join("www/admin")).unwrap();
    std::fs::write(collector.data_dir.join("www/index.html"), "<p>demo</p>").unwrap();
    std::fs::write(
        collector.data_dir.join("www/admin/index.html"),
        "<p>console</p>",
    )
    .unwrap();

    let site = collector.http.get(collector.url("/")).send().await.unwrap();
    let console = collector
        .http
        .get(collector.url("/admin/"))
        .send()
        .await
        .unwrap();
    let api = collector
        .http
        .get(collector.url("/admin/v1/environments"))
        .send()
        .await
        .unwrap();

    let policy = |response: &reqwest::Response| {
        response
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let console_policy = policy(&console).unwrap();
    assert!(console_policy.contains("frame-ancestors 'none'"));
    assert!(
        console_policy.contains("script-src 'self';"),
        "no inline or eval: {console_policy}"
    );
    assert!(!console_policy.contains("unsafe"));
    let site_policy = policy(&site).unwrap();
    assert!(site_policy.contains("'wasm-unsafe-eval'") && !site_policy.contains("'unsafe-eval'"));
    assert_eq!(console.headers()["x-frame-options"], "DENY");
    assert_eq!(policy(&api), None, "the API answers JSON, not pages");
}

#[tokio::test]
async fn the_demo_user_hash_is_served_only_when_turned_on() {
    let off = Collector::start();
    let on = Collector::start_with(&[("EBB_DEMO_USER_HASH", "true")]);

    let (off_status, _) = off.admin_get("/demo/user-hash?userId=ada", "").await;
    let (_, without_secret) = on.admin_get("/demo/user-hash?userId=ada", "").await;
    let (_, secret) = on
        .admin(
            "POST",
            "/admin/v1/environments/default/identity-secret",
            None,
        )
        .await;
    let (_, with_secret) = on.admin_get("/demo/user-hash?userId=ada", "").await;
    let hash = with_secret["userHash"].as_str().unwrap().to_owned();
    let (stored, _) = on
        .post(
            "/v1/track",
            &json!({"userId": "ada", "event": "E", "context": {"userHash": hash}}),
        )
        .await;

    assert_eq!(off_status, 404);
    assert_eq!(without_secret, json!({"userHash": null}));
    assert!(secret["identitySecret"].is_string());
    assert_eq!(stored, 200, "the demo's hash passes identity verification");
}
