//! How the SDK was loaded: the write key, the collector's address and the flush triggers.

use crate::{Error, Result};

/// The settings given to `load`, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    write_key: String,
    host: String,
    flush_at: usize,
    flush_interval_ms: u32,
}

impl Config {
    /// How many queued messages trigger a flush when `flushAt` is not given.
    pub const DEFAULT_FLUSH_AT: usize = 20;

    /// How long a message waits at most before a flush when `flushInterval` is not given.
    pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 10_000;

    /// Settings for the environment named by `write_key`, sending to the collector at `host`.
    ///
    /// `host` is an origin such as `https://collector.example` (a path prefix may follow). A
    /// host without a scheme gets `https://`; one starting with `/` stays relative to the
    /// page's origin. Trailing slashes are dropped.
    ///
    /// # Errors
    ///
    /// [`Error::MissingWriteKey`] and [`Error::MissingHost`] when either is blank.
    pub fn new(write_key: &str, host: &str) -> Result<Self> {
        let write_key = write_key.trim();
        if write_key.is_empty() {
            return Err(Error::MissingWriteKey);
        }

        let host = host.trim().trim_end_matches('/');
        if host.is_empty() {
            return Err(Error::MissingHost);
        }
        // A byte scan, not `str::contains`: the substring searcher costs the wasm module
        // kilobytes.
        let has_scheme = host.as_bytes().windows(3).any(|window| window == b"://");
        let host = if has_scheme || host.starts_with('/') {
            host.to_owned()
        } else {
            format!("https://{host}")
        };

        Ok(Self {
            write_key: write_key.to_owned(),
            host,
            flush_at: Self::DEFAULT_FLUSH_AT,
            flush_interval_ms: Self::DEFAULT_FLUSH_INTERVAL_MS,
        })
    }

    /// Flush as soon as `count` messages are queued.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `count` is zero.
    pub fn with_flush_at(mut self, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(Error::InvalidArgument {
                what: "flushAt",
                why: "must be a whole number of at least 1",
            });
        }
        self.flush_at = count;
        Ok(self)
    }

    /// Flush at the latest `millis` milliseconds after a message was queued.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `millis` is zero.
    pub fn with_flush_interval_ms(mut self, millis: u32) -> Result<Self> {
        if millis == 0 {
            return Err(Error::InvalidArgument {
                what: "flushInterval",
                why: "must be a whole number of milliseconds, at least 1",
            });
        }
        self.flush_interval_ms = millis;
        Ok(self)
    }

    /// The write key, which names one environment at the collector.
    pub fn write_key(&self) -> &str {
        &self.write_key
    }

    /// The collector's address, without a trailing slash.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// How many queued messages trigger a flush.
    pub fn flush_at(&self) -> usize {
        self.flush_at
    }

    /// The longest a queued message waits for a flush, in milliseconds.
    pub fn flush_interval_ms(&self) -> u32 {
        self.flush_interval_ms
    }

    /// Where batches go: `{host}/v1/batch`.
    pub fn batch_url(&self) -> String {
        format!("{}/v1/batch", self.host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_url_joins_host_and_path_without_a_double_slash() {
        let config = Config::new("wk", "http://localhost:8080/").unwrap();

        assert_eq!(config.batch_url(), "http://localhost:8080/v1/batch");
    }

    #[test]
    fn a_host_without_scheme_gets_https() {
        let config = Config::new("wk", "collector.example").unwrap();

        assert_eq!(config.batch_url(), "https://collector.example/v1/batch");
    }

    #[test]
    fn a_host_path_stays_relative_to_the_page() {
        let config = Config::new("wk", "/ebb").unwrap();

        assert_eq!(config.batch_url(), "/ebb/v1/batch");
    }

    #[test]
    fn blank_write_key_or_host_is_refused() {
        assert_eq!(Config::new("  ", "http://h"), Err(Error::MissingWriteKey));
        assert_eq!(Config::new("wk", " / "), Err(Error::MissingHost));
    }

    #[test]
    fn flush_triggers_default_and_refuse_zero() {
        let config = Config::new("wk", "http://h").unwrap();

        assert_eq!(config.flush_at(), 20);
        assert_eq!(config.flush_interval_ms(), 10_000);
        assert!(config.clone().with_flush_at(0).is_err());
        assert!(config.with_flush_interval_ms(0).is_err());
    }
}
