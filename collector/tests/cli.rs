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
        check["entries"], 3,
        "export, delete-user and delete-segment are audited"
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
