//! A real collector process for tests: its own temporary data folder, a fresh database, a
//! port chosen by the system, known secrets, and an HTTP client. Dropping it kills the
//! process, removes the folder and drops the database.
//!
//! The backend comes from `EBB_TEST_BACKEND`: `sqlite` (the default) or `postgres`, which
//! creates a uniquely named database on `EBB_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and fails the test when it cannot.

#![allow(dead_code, clippy::unwrap_used, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use sqlx::Connection as _;

pub const WRITE_KEY: &str = "wk_test_key";
pub const ADMIN_TOKEN: &str = "ebb_admin_test_token";
/// A trait value the tests that send traits include, so that the log check catches a
/// trait value logged on its own, without the `"traits"` key around it.
pub const TRAIT_MARKER: &str = "trait-marker-7d2f91c4";

/// The database of one test: SQLite in the data folder, or a PostgreSQL database of its own.
pub struct TestDb {
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// A fresh database of the backend `EBB_TEST_BACKEND` names.
    pub fn new() -> Self {
        match std::env::var("EBB_TEST_BACKEND").as_deref() {
            Ok("postgres") => Self::postgres(),
            Ok("sqlite") | Err(_) => Self { postgres: None },
            Ok(other) => panic!("EBB_TEST_BACKEND must be sqlite or postgres, not {other}"),
        }
    }

    /// A fresh PostgreSQL database whatever `EBB_TEST_BACKEND` says, for tests of several
    /// collectors sharing one database, which only PostgreSQL supports.
    pub fn postgres() -> Self {
        let server = std::env::var("EBB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("ebb_test_{}", uuid::Uuid::new_v4().simple());
        let statement = format!("CREATE DATABASE {name}");
        run_on_server(&server, &statement).unwrap_or_else(|error| {
            panic!("PostgreSQL was expected at {server} but could not be used: {error}")
        });
        Self {
            postgres: Some((server, name)),
        }
    }

    /// The `EBB_DATABASE_URL` for a collector, if not the default SQLite file.
    pub fn url(&self) -> Option<String> {
        let (server, name) = self.postgres.as_ref()?;
        let base = server
            .rsplit_once('/')
            .map_or(server.as_str(), |(base, _)| base);
        Some(format!("{base}/{name}"))
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// Runs one statement on the PostgreSQL server that holds this database, with
    /// `{db}` replaced by the database's name: to shut the collector out of it, say.
    pub fn run_on_server(&self, statement: &str) {
        let (server, name) = self.postgres.as_ref().expect("a PostgreSQL database");
        let statement = statement.replace("{db}", name);
        run_on_server(server, &statement)
            .unwrap_or_else(|error| panic!("`{statement}` failed: {error}"));
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((server, name)) = &self.postgres {
            let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(error) = run_on_server(server, &statement) {
                eprintln!("could not drop the test database {name}: {error}");
            }
        }
    }
}

/// Runs one statement on the PostgreSQL server, from a thread of its own so that it works
/// inside and outside an async runtime alike.
fn run_on_server(server: &str, statement: &str) -> Result<(), String> {
    let (server, statement) = (server.to_owned(), statement.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&server)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&statement)
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            connection.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .unwrap()
}

pub struct Collector {
    child: Child,
    /// The database the collector uses, for tests that look at it directly.
    pub database_url: String,
    pub base: String,
    pub banner: Vec<String>,
    pub data_dir: PathBuf,
    pub http: reqwest::Client,
    // Dropped after the process is killed (fields drop in order, after `Drop::drop`).
    db: Option<TestDb>,
    temp: Option<tempfile::TempDir>,
}

impl Collector {
    /// Starts a collector on a fresh database with the test write key and admin token.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Collector::start`], with extra environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let db = TestDb::new();
        let mut all = vec![
            ("EBB_WRITE_KEY", WRITE_KEY),
            ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
        ];
        all.extend_from_slice(env);
        let mut collector = Self::start_in(temp.path(), &db, &all);
        collector.temp = Some(temp);
        collector.db = Some(db);
        collector
    }

    /// Starts a collector on the data folder `data_dir` and database `db`, both kept when
    /// it is dropped, with these environment variables.
    pub fn start_in(data_dir: &Path, db: &TestDb, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ebb-collector"));
        command
            .env_clear()
            .env("EBB_LISTEN", "127.0.0.1:0")
            .env("EBB_DATA_DIR", data_dir)
            .env("EBB_WWW_DIR", data_dir.join("www"))
            .env("EBB_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(data_dir.join("collector.log"))
                    .unwrap(),
            );
        let database_url = match db.url() {
            Some(url) => url,
            None => format!("sqlite://{}", data_dir.join("ebb.db").display()),
        };
        command.env("EBB_DATABASE_URL", &database_url);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().unwrap();

        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut banner = Vec::new();
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(30)) {
            let last = line.contains("write key");
            banner.push(line);
            if last {
                break;
            }
        }
        // The admin token line, when there is one, comes right after the write key.
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(500)) {
            banner.push(line);
        }
        let first = banner.first().cloned().unwrap_or_default();
        let Some(base) = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
        else {
            let log = std::fs::read_to_string(data_dir.join("collector.log")).unwrap_or_default();
            panic!("the collector did not start; banner {banner:?}; log:\n{log}");
        };

        Self {
            child,
            database_url,
            base: base.to_owned(),
            banner,
            data_dir: data_dir.to_path_buf(),
            http: reqwest::Client::new(),
            db: None,
            temp: None,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Posts a JSON body with the test write key as Basic user name.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(WRITE_KEY, path, body).await
    }

    /// Posts a JSON body with this write key as Basic user name.
    pub async fn post_as(&self, write_key: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .basic_auth(write_key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Posts raw bytes with the given headers.
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read(request.send().await.unwrap()).await
    }

    /// Reads a user through the admin API with the test admin token.
    pub async fn user(&self, id: &str) -> (u16, Value) {
        self.admin_get(&format!("/admin/v1/users/{id}"), ADMIN_TOKEN)
            .await
    }

    pub async fn admin_get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    /// Sends an admin request with a JSON body (or none) and the test admin token.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_as(ADMIN_TOKEN, method, path, body).await
    }

    /// Sends an admin request with a JSON body (or none) and this admin token.
    pub async fn admin_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap().success()
    }

    /// Waits for the process to exit on its own; returns whether it exited cleanly.
    pub fn terminate_wait(&mut self) -> bool {
        self.child.wait().unwrap().success()
    }

    /// Everything the collector logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("collector.log")).unwrap_or_default()
    }
}

/// Every text value in every column of every table, as `(table, column, value)`: the
/// tables and columns come from the database's own catalog, not from a list kept here, so
/// a table added later is searched too.
pub async fn every_stored_value(database_url: &str) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        let columns: Vec<(String, String)> = sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        for (table, column) in columns {
            let sql = format!("SELECT \"{column}\"::text FROM \"{table}\"");
            let values: Vec<Option<String>> =
                sqlx::query_scalar(&sql).fetch_all(&mut db).await.unwrap();
            found.extend(
                values
                    .into_iter()
                    .flatten()
                    .map(|v| (table.clone(), column.clone(), v)),
            );
        }
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut db)
                .await
                .unwrap();
        for table in tables {
            let columns: Vec<String> =
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .fetch_all(&mut db)
                    .await
                    .unwrap();
            for column in columns {
                // As bytes, since some columns (migration checksums) are not UTF-8.
                let sql = format!("SELECT CAST(\"{column}\" AS BLOB) FROM \"{table}\"");
                let values: Vec<Option<Vec<u8>>> =
                    sqlx::query_scalar(&sql).fetch_all(&mut db).await.unwrap();
                found.extend(values.into_iter().flatten().map(|bytes| {
                    let value = String::from_utf8_lossy(&bytes).into_owned();
                    (table.clone(), column.clone(), value)
                }));
            }
        }
    }
    assert!(!found.is_empty(), "the catalog walk found nothing at all");
    found
}

/// Fails when any stored value anywhere still contains one of `needles` (the ids and
/// distinctive trait values of a deleted user).
pub async fn assert_forgotten(database_url: &str, needles: &[&str]) {
    let leftovers: Vec<_> = every_stored_value(database_url)
        .await
        .into_iter()
        .filter(|(_, _, value)| needles.iter().any(|needle| value.contains(needle)))
        .collect();
    assert!(
        leftovers.is_empty(),
        "deleted data is still stored: {leftovers:#?}"
    );
}

/// Runs one statement on the test database directly, as an intruder or a bug would.
pub async fn execute(database_url: &str, statement: &str) {
    if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&mut db).await.unwrap();
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
}

/// Runs one query on the test database directly and returns its first column, an integer.
pub async fn fetch_integers(database_url: &str, query: &str) -> Vec<i64> {
    if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&mut db).await.unwrap()
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&mut db).await.unwrap()
    }
}

/// Runs one query on the test database directly and returns its first column, as text.
pub async fn fetch_texts(database_url: &str, query: &str) -> Vec<String> {
    if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&mut db).await.unwrap()
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_scalar(query).fetch_all(&mut db).await.unwrap()
    }
}

/// Fails unless every one of `needles` is stored somewhere: run before a deletion, it
/// proves that [`assert_forgotten`] afterwards has something to miss.
pub async fn assert_stored(database_url: &str, needles: &[&str]) {
    let values = every_stored_value(database_url).await;
    for needle in needles {
        assert!(
            values.iter().any(|(_, _, value)| value.contains(needle)),
            "{needle} is not stored"
        );
    }
}

pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// What no log line may hold: the test's secrets, any generated secret (write keys, admin
/// tokens and identity secrets are a prefix and 32 hex digits), e-mail addresses, message
/// payloads and the tests' trait value [`TRAIT_MARKER`]. Every collector a test starts has its log checked for these when it
/// is dropped, so the whole test suite's logs are searched, on both backends.
pub fn log_leaks(log: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    for line in log.lines() {
        let fixed = [
            WRITE_KEY,
            ADMIN_TOKEN,
            TRAIT_MARKER,
            "\"traits\"",
            "\"properties\"",
            "\"answers\"",
        ];
        let generated = ["wk_", "ebb_admin_", "ebb_ivs_"].iter().any(|prefix| {
            line.match_indices(prefix).any(|(at, _)| {
                let rest = &line[at + prefix.len()..];
                rest.len() >= 32 && rest.bytes().take(32).all(|b| b.is_ascii_hexdigit())
            })
        });
        let email = line.match_indices('@').any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = &line[at + 1..];
            before.is_some_and(|c| c.is_alphanumeric())
                && after
                    .split(|c: char| !(c.is_alphanumeric() || c == '.' || c == '-'))
                    .next()
                    .is_some_and(|domain| domain.contains('.') && !domain.ends_with('.'))
        });
        if generated || email || fixed.iter().any(|secret| line.contains(secret)) {
            leaks.push(line.to_owned());
        }
    }
    leaks
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let leaks = log_leaks(&self.log());
            assert!(
                leaks.is_empty(),
                "the collector logged secrets, e-mail addresses or payloads:\n{}",
                leaks.join("\n")
            );
        }
    }
}
