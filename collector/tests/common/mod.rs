//! A real collector process for tests: its own temporary data folder, a port chosen by the
//! system, known secrets, and an HTTP client. Dropping it kills the process and removes the
//! folder.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const WRITE_KEY: &str = "wk_test_key";
pub const ADMIN_TOKEN: &str = "ebb_admin_test_token";

pub struct Collector {
    child: Child,
    pub base: String,
    pub banner: Vec<String>,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl Collector {
    /// Starts a collector on a fresh SQLite database with the test write key and token.
    pub fn start() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().to_path_buf();
        let mut collector = Self::start_in(
            &data_dir,
            &[
                ("EBB_WRITE_KEY", WRITE_KEY),
                ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
            ],
        );
        collector._temp = Some(temp);
        collector
    }

    /// Starts a collector on the data folder `data_dir` (kept when dropped) with these
    /// extra environment variables.
    pub fn start_in(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ebb-collector"));
        command
            .env_clear()
            .env("EBB_LISTEN", "127.0.0.1:0")
            .env("EBB_DATA_DIR", data_dir)
            .env("EBB_WWW_DIR", data_dir.join("www"))
            .env("EBB_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(data_dir.join("collector.log")).unwrap());
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
        let base = first
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in the banner: {banner:?}"))
            .to_owned();

        Self {
            child,
            base,
            banner,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Posts a JSON body with the test write key as Basic user name.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .basic_auth(WRITE_KEY, Some(""))
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

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Everything the collector logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("collector.log")).unwrap_or_default()
    }
}

async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill();
    }
}
