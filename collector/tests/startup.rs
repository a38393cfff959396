//! First start and restart: the default environment, its write key, the admin token; and
//! start-ups that must fail: bad settings in the environment, an address already taken.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Collector, TestDb};
use serde_json::{json, Value};

/// Runs the collector with only these environment variables (and a data folder of its
/// own) until it exits; returns its exit code and what it wrote to stderr. Fails the test
/// if it is still running after 30 s, which means it started despite what it was given.
fn exit_of(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let temp = tempfile::tempdir().unwrap();
    let stderr_path = temp.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb-collector"))
        .env_clear()
        .env("EBB_DATA_DIR", temp.path())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the collector started with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), std::fs::read_to_string(stderr_path).unwrap())
}

#[test]
fn a_bad_setting_in_the_environment_stops_the_start_naming_variable_and_flag() {
    let cases = [
        ("EBB_LISTEN", "nonsense", "--listen"),
        ("EBB_RETENTION_INTERVAL", "abc", "--retention-interval"),
        ("EBB_SUPPRESSION_DAYS", "0", "--suppression-days"),
        ("EBB_JOB_LEASE", "-3", "--job-lease"),
        ("EBB_DEMO_USER_HASH", "maybe", "--demo-user-hash"),
        ("EBB_LOG_FORMAT", "xml", "--log-format"),
        ("EBB_DATABASE_URL", "mysql://db/ebb", "--database-url"),
    ];

    for (variable, value, flag) in cases {
        let mut env = vec![("EBB_LISTEN", "127.0.0.1:0")];
        env.push((variable, value));

        let (code, stderr) = exit_of(&env);

        assert_eq!(code, Some(2), "{variable}={value}: {stderr}");
        for named in [variable, flag, value] {
            assert!(stderr.contains(named), "{variable}={value}: {stderr}");
        }
    }
}

#[tokio::test]
async fn a_failed_start_with_json_logs_is_reported_as_json() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let db = TestDb::new();
    let temp = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", temp.path().join("ebb.db").display());
    let database_url = db.url().unwrap_or(sqlite);

    let (code, stderr) = exit_of(&[
        ("EBB_LISTEN", &listen),
        ("EBB_DATABASE_URL", &database_url),
        ("EBB_LOG_FORMAT", "json"),
    ]);

    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    assert!(lines.iter().all(Value::is_object), "{stderr}");
    let failure = lines.last().unwrap();
    assert_eq!(failure["level"], "ERROR", "{stderr}");
    assert!(
        failure["fields"]["error"]
            .as_str()
            .is_some_and(|error| error.contains(&listen)),
        "{stderr}"
    );
}

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
