//! The operator's commands against a database a collector filled: results on stdout as
//! JSON, exit codes a script can rely on, and every action in the audit log.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use common::{assert_forgotten, Collector, TestDb, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};

fn ebb(database_url: &str, data_dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb-collector"))
        .env_clear()
        .env("EBB_DATABASE_URL", database_url)
        .env("EBB_DATA_DIR", data_dir)
        .env("USER", "ops")
        .args(args)
        .output()
        .unwrap()
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "not JSON: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn commands_do_the_lifecycle_operations_with_reliable_exit_codes() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut collector = Collector::start_in(temp.path(), &db, &env);
    let batch: Vec<Value> = (0..30)
        .map(|n| {
            json!({"type": "identify", "userId": format!("cli-{n}"),
                   "traits": {"plan": if n < 10 { "free" } else { "pro" },
                              "email": format!("cli-{n}@cli.example")}})
        })
        .collect();
    collector.post("/v1/batch", &json!({"batch": batch})).await;
    collector
        .post("/v1/track", &json!({"userId": "cli-29", "event": "Kept"}))
        .await;
    let url = collector.database_url.clone();
    collector.kill();
    let dir = temp.path();

    let exported = ebb(&url, dir, &["export", "--format", "ndjson", "cli-29"]);
    let exported_json = ebb(&url, dir, &["export", "--format", "json", "cli-29"]);
    let deleted = ebb(&url, dir, &["delete-user", "cli-0"]);
    let missing = ebb(&url, dir, &["delete-user", "nobody"]);
    let segment = ebb(
        &url,
        dir,
        &[
            "delete-segment",
            "--filter",
            r#"{"trait": "plan", "equals": "free"}"#,
        ],
    );
    let bad_filter = ebb(
        &url,
        dir,
        &["delete-segment", "--filter", r#"{"trait": 7}"#],
    );
    let unconfirmed = ebb(
        &url,
        dir,
        &["purge", "--environment", "default", "--confirm", "prod"],
    );
    let swept = ebb(&url, dir, &["sweep-now"]);
    let verified = ebb(&url, dir, &["audit-verify"]);

    let line: Value =
        serde_json::from_slice(exported.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(exported.status.code(), Some(0));
    assert_eq!(line["batch"][0]["userId"], "cli-29");
    assert_eq!(exported_json.status.code(), Some(0));
    let profile = stdout_json(&exported_json);
    assert_eq!(profile["userId"], "cli-29");
    assert_eq!(profile["traits"]["email"], "cli-29@cli.example");
    assert_eq!(profile["events"][0]["event"], "Kept");
    assert_eq!(profile["counts"]["events"], 1);
    assert_eq!(deleted.status.code(), Some(0));
    assert_eq!(stdout_json(&deleted)["removed"]["users"], 1);
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no user"));
    assert_eq!(
        segment.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&segment.stderr)
    );
    let job = stdout_json(&segment);
    assert_eq!(
        (job["status"].clone(), job["done"].clone()),
        (json!("done"), json!(9))
    );
    assert_eq!(bad_filter.status.code(), Some(2));
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert_eq!(swept.status.code(), Some(0));
    assert_eq!(stdout_json(&swept), json!([]), "no environment has a rule");
    assert_eq!(verified.status.code(), Some(0));
    let check = stdout_json(&verified);
    assert_eq!(check["valid"], true);
    assert_eq!(
        check["entries"], 4,
        "both exports, delete-user and delete-segment are audited"
    );
    assert_forgotten(&url, &["cli-0@", "cli-5@"]).await;

    let purged = ebb(
        &url,
        dir,
        &["purge", "--environment", "default", "--confirm", "default"],
    );
    let restarted = Collector::start_in(temp.path(), &db, &env);
    let (_, entries) = restarted.admin("GET", "/admin/v1/audit", None).await;

    assert_eq!(purged.status.code(), Some(0));
    assert_eq!(stdout_json(&purged)["removed"]["users"], 20);
    assert_eq!(entries[0]["action"], "purge_environment");
    assert_eq!(entries[0]["actor"], "cli:ops");
    assert_eq!(restarted.user("cli-29").await.0, 404);
}

#[tokio::test]
async fn audit_verify_exits_4_when_the_chain_was_tampered_with() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut collector = Collector::start_in(temp.path(), &db, &env);
    collector
        .post("/v1/identify", &json!({"userId": "cli-1"}))
        .await;
    collector
        .admin("DELETE", "/admin/v1/users/cli-1", None)
        .await;
    collector
        .admin(
            "PATCH",
            "/admin/v1/environments/default",
            Some(json!({"storeIp": true})),
        )
        .await;
    let url = collector.database_url.clone();
    collector.kill();

    common::execute(&url, "DELETE FROM audit_entries WHERE seq = 1").await;
    let verified = ebb(&url, temp.path(), &["audit-verify"]);

    assert_eq!(verified.status.code(), Some(4));
    assert_eq!(stdout_json(&verified)["firstBroken"], 2);
}

#[tokio::test]
async fn a_command_runs_beside_a_busy_collector_on_the_same_database() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let collector = Collector::start_in(temp.path(), &db, &env);
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "cli-gone", "traits": {"a": 1}}),
        )
        .await;
    let (url, dir) = (collector.database_url.clone(), temp.path().to_path_buf());

    let load = async {
        let mut statuses = Vec::new();
        for round in 0..40 {
            let batch: Vec<Value> = (0..20)
                .map(|n| json!({"type": "track", "userId": format!("load-{n}"), "event": format!("R{round}")}))
                .collect();
            statuses.push(
                collector
                    .post("/v1/batch", &json!({"batch": batch}))
                    .await
                    .0,
            );
        }
        statuses
    };
    let command = tokio::task::spawn_blocking(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        ebb(&url, &dir, &["delete-user", "cli-gone"])
    });
    let (statuses, deleted) = tokio::join!(load, command);
    let deleted = deleted.unwrap();

    assert_eq!(
        deleted.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert_eq!(collector.user("cli-gone").await.0, 404);
}

/// A database a collector filled with `stale` users last seen 400 days ago and one active
/// user, under a rule deleting users inactive for 30 days; the collector is stopped.
/// Returns the database URL and the default environment's id.
async fn stale_users_under_a_rule(
    data_dir: &std::path::Path,
    db: &TestDb,
    stale: usize,
) -> (String, String) {
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut collector = Collector::start_in(data_dir, db, &env);
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(400)).to_rfc3339();
    let mut batch: Vec<Value> = (0..stale)
        .map(|n| {
            json!({"type": "identify", "userId": format!("stale-{n}"), "timestamp": long_ago,
                        "traits": {"email": format!("stale-{n}@cli.example")}})
        })
        .collect();
    batch.push(json!({"type": "identify", "userId": "active", "traits": {"plan": "pro"}}));
    let (status, reply) = collector.post("/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(status, 200, "{reply}");
    let (status, rule) = collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 30})),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    let (_, environment) = collector
        .admin("GET", "/admin/v1/environments/default", None)
        .await;
    let url = collector.database_url.clone();
    collector.kill();
    (url, environment["id"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn sweep_now_deletes_the_users_the_rule_makes_due_and_audits_it() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let (url, _) = stale_users_under_a_rule(temp.path(), &db, 45).await;
    let dir = temp.path();

    let swept = ebb(&url, dir, &["sweep-now"]);
    let verified = ebb(&url, dir, &["audit-verify"]);
    let stale = ebb(&url, dir, &["export", "stale-7"]);
    let active = ebb(&url, dir, &["export", "active"]);

    assert_eq!(
        swept.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&swept.stderr)
    );
    let runs = stdout_json(&swept);
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["environment"], "default");
    assert_eq!(runs[0]["users"], 45);
    assert_eq!(runs[0]["removed"]["users"], 45);
    assert_eq!(runs[0]["removed"]["identities"], 45);
    let check = stdout_json(&verified);
    assert_eq!(check["valid"], true);
    assert_eq!(
        check["entries"], runs[0]["auditEntry"],
        "the sweep's audit entry is the newest"
    );
    assert_eq!(stale.status.code(), Some(3), "the stale user is gone");
    assert_eq!(active.status.code(), Some(0), "the active user stays");
    assert_forgotten(&url, &["stale-7", "stale-44@"]).await;
}

#[tokio::test]
async fn sweep_now_exits_5_and_deletes_nothing_while_a_sweep_runs_elsewhere() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let (url, environment_id) = stale_users_under_a_rule(temp.path(), &db, 3).await;
    let dir = temp.path();
    // Another collector's sweep of the environment holds its lease.
    common::execute(
        &url,
        &format!(
            "INSERT INTO leases (name, owner, expires_at) \
             VALUES ('retention:{environment_id}', 'collector:elsewhere', '2999-01-01T00:00:00+00:00')"
        ),
    )
    .await;

    let busy = ebb(&url, dir, &["sweep-now", "--environment", "default"]);
    let stale = ebb(&url, dir, &["export", "stale-0"]);

    assert_eq!(busy.status.code(), Some(5));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("running elsewhere"),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    assert!(busy.stdout.is_empty(), "no result is printed");
    assert_eq!(stale.status.code(), Some(0), "nothing was deleted");
}
