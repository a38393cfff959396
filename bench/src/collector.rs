//! The collector under test: the release binary as a child process on a free port.
//!
//! It runs with its own temporary data folder, `EBB_LOG=warn` (its log goes to a file in
//! that folder), the database it is given, and the benchmarks' write key and admin token.
//! Its memory and CPU use are read from `/proc`.

use std::fs::{self, File};
use std::io::{BufRead as _, BufReader, Read as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context as _};

use crate::{ADMIN_TOKEN, WRITE_KEY};

/// A running collector; killed when dropped.
#[derive(Debug)]
pub struct Collector {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
    folder: tempfile::TempDir,
}

impl Collector {
    /// Starts `binary` on `database_url`, with `settings` as further environment variables,
    /// and waits until it listens.
    ///
    /// # Errors
    ///
    /// When the process cannot start or exits before printing its address.
    pub fn start(
        binary: &Path,
        database_url: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let folder = tempfile::tempdir().context("while creating the collector's folder")?;
        let log = File::create(folder.path().join("collector.log"))?;
        let mut child = Command::new(binary)
            .env_clear()
            .env("EBB_LISTEN", "127.0.0.1:0")
            .env("EBB_DATA_DIR", folder.path())
            .env("EBB_WWW_DIR", folder.path())
            .env("EBB_DATABASE_URL", database_url)
            .env("EBB_WRITE_KEY", WRITE_KEY)
            .env("EBB_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("EBB_LOG", "warn")
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("while starting {}", binary.display()))?;

        let stdout = child.stdout.take().context("the collector has no stdout")?;
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines.read_line(&mut first)?;
        // The rest of the banner is read and dropped, so that the collector never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            let _ = lines.read_to_end(&mut Vec::new());
        });

        let address = first
            .split_whitespace()
            .find_map(|word| word.strip_prefix("http://"))
            .and_then(|address| address.parse().ok());
        let Some(address) = address else {
            let _ = child.kill();
            let _ = child.wait();
            let log = fs::read_to_string(folder.path().join("collector.log")).unwrap_or_default();
            bail!("the collector did not start; it printed {first:?}; its log:\n{log}");
        };
        Ok(Self {
            child,
            address,
            folder,
        })
    }

    /// The most resident memory the process has had (`VmHWM`), in bytes.
    ///
    /// # Errors
    ///
    /// When `/proc` cannot be read.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// The process's `/proc/<pid>/stat` file, for CPU time.
    pub fn stat_path(&self) -> String {
        format!("/proc/{}/stat", self.child.id())
    }

    /// The last lines the collector logged, for error reports.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.folder.path().join("collector.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
