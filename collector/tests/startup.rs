//! First start and restart: the default environment, its write key, the admin token.

mod common;

use common::{Collector, TestDb};
use serde_json::json;

fn banner_value(banner: &[String], label: &str) -> String {
    let line = banner
        .iter()
        .find(|line| line.contains(label))
        .expect("the banner has the line");
    line.split_whitespace()
        .find(|word| word.starts_with("wk_") || word.starts_with("ebb_admin_"))
        .expect("the line shows the secret")
        .to_owned()
}

#[tokio::test]
async fn generated_write_key_and_admin_token_survive_a_restart() {
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();

    let mut first = Collector::start_in(temp.path(), &db, &[]);
    let write_key = banner_value(&first.banner, "write key");
    let token = banner_value(&first.banner, "admin token");
    first.kill();
    let second = Collector::start_in(temp.path(), &db, &[]);
    let response = second
        .http
        .post(second.url("/v1/identify"))
        .basic_auth(&write_key, Some(""))
        .json(&json!({"userId": "ada", "traits": {"kept": true}}))
        .send()
        .await
        .unwrap();
    let (status, user) = second.admin_get("/admin/v1/users/ada", &token).await;

    assert_eq!(banner_value(&second.banner, "write key"), write_key);
    assert_eq!(banner_value(&second.banner, "admin token"), token);
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(status, 200);
    assert_eq!(user["traits"]["kept"], true);
}

#[tokio::test]
async fn configured_secrets_are_used_and_no_token_is_generated() {
    let collector = Collector::start();

    let token_file = collector.data_dir.join("admin-token");

    assert_eq!(
        banner_value(&collector.banner, "write key"),
        common::WRITE_KEY
    );
    assert!(!token_file.exists());
    assert!(collector
        .banner
        .iter()
        .all(|line| !line.contains("admin token")));
}

#[tokio::test]
async fn the_generated_admin_token_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::tempdir().unwrap();
    let db = TestDb::new();

    let _collector = Collector::start_in(temp.path(), &db, &[]);
    let mode = std::fs::metadata(temp.path().join("admin-token"))
        .unwrap()
        .permissions()
        .mode();

    assert_eq!(
        mode & 0o077,
        0,
        "the token file is readable by others: {mode:o}"
    );
}

#[tokio::test]
async fn secrets_do_not_appear_in_the_log() {
    let collector = Collector::start();
    collector
        .post(
            "/v1/identify",
            &json!({"userId": "ada", "traits": {"email": "ada@example.com"}}),
        )
        .await;
    collector
        .admin_get("/admin/v1/users/ada", common::ADMIN_TOKEN)
        .await;

    let log = collector.log();

    assert!(log.contains("listening"), "the log was not captured: {log}");
    for secret in [common::WRITE_KEY, common::ADMIN_TOKEN, "ada@example.com"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}
