//! How the SDK was loaded: the write key, the collector's address, batching, the queue's
//! bound, the retry schedule and the consent settings. Every default is a named constant
//! here and in the README.

use crate::prelude::*;
use crate::{Error, Result};

/// Whether tracking waits for consent or runs until the visitor objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing is stored or sent until the required categories are granted (the default).
    OptIn,
    /// Tracking runs until the visitor objects: a denial, a withdrawal, or a privacy signal.
    OptOut,
}

/// The settings given to `load`, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub(crate) write_key: String,
    pub(crate) host: String,
    pub(crate) flush_at: usize,
    pub(crate) flush_bytes: usize,
    pub(crate) flush_interval_ms: u32,
    pub(crate) max_queue_bytes: usize,
    pub(crate) max_pending: usize,
    pub(crate) retry_base_ms: u32,
    pub(crate) retry_max_ms: u32,
    pub(crate) mode: Mode,
    pub(crate) categories: Vec<String>,
    pub(crate) required: Vec<String>,
    pub(crate) honor_dnt: bool,
    pub(crate) user_hash: Option<String>,
}

impl Config {
    /// Queued messages that trigger a flush (`flushAt`).
    pub const DEFAULT_FLUSH_AT: usize = 20;
    /// Queued bytes that trigger a flush, and the most one batch body holds (`flushBytes`):
    /// under the browser's 64 KiB budget for requests that outlive the page.
    pub const DEFAULT_FLUSH_BYTES: usize = 60_000;
    /// The longest a queued message waits for a flush, in milliseconds (`flushInterval`).
    pub const DEFAULT_FLUSH_INTERVAL_MS: u32 = 10_000;
    /// The bound of the stored queue in bytes (`maxQueueBytes`); the oldest go first.
    pub const DEFAULT_MAX_QUEUE_BYTES: usize = 256 * 1024;
    /// Calls kept in memory while consent is undecided (`maxPendingCalls`).
    pub const DEFAULT_MAX_PENDING: usize = 100;
    /// The first retry's delay in milliseconds (`retry.baseDelay`); it doubles per failure.
    pub const DEFAULT_RETRY_BASE_MS: u32 = 1_000;
    /// The longest delay between retries in milliseconds (`retry.maxDelay`).
    pub const DEFAULT_RETRY_MAX_MS: u32 = 60_000;
    /// The category that tracking needs when none are configured.
    pub const DEFAULT_CATEGORY: &'static str = "analytics";

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
            let mut full = String::from("https://");
            full.push_str(host);
            full
        };

        Ok(Self {
            write_key: write_key.to_owned(),
            host,
            flush_at: Self::DEFAULT_FLUSH_AT,
            flush_bytes: Self::DEFAULT_FLUSH_BYTES,
            flush_interval_ms: Self::DEFAULT_FLUSH_INTERVAL_MS,
            max_queue_bytes: Self::DEFAULT_MAX_QUEUE_BYTES,
            max_pending: Self::DEFAULT_MAX_PENDING,
            retry_base_ms: Self::DEFAULT_RETRY_BASE_MS,
            retry_max_ms: Self::DEFAULT_RETRY_MAX_MS,
            mode: Mode::OptIn,
            categories: vec![Self::DEFAULT_CATEGORY.to_owned()],
            required: vec![Self::DEFAULT_CATEGORY.to_owned()],
            honor_dnt: false,
            user_hash: None,
        })
    }

    /// Flush as soon as `count` messages are queued; also the most messages in one batch.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `count` is zero.
    pub fn set_flush_at(&mut self, count: usize) -> Result<()> {
        self.flush_at = at_least_one(count, "flushAt")?;
        Ok(())
    }

    /// Flush as soon as `bytes` are queued; also the most bytes in one batch body. A
    /// single message larger than this still goes, alone.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `bytes` is under 1 KiB or over the collector's
    /// batch limit.
    pub fn set_flush_bytes(&mut self, bytes: usize) -> Result<()> {
        if !(1024..=crate::wire::MAX_BATCH_BYTES).contains(&bytes) {
            return Err(Error::InvalidArgument {
                what: "flushBytes",
                why: "must be between 1024 and 512000",
            });
        }
        self.flush_bytes = bytes;
        Ok(())
    }

    /// Flush at the latest `millis` milliseconds after a message was queued.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `millis` is zero.
    pub fn set_flush_interval_ms(&mut self, millis: u32) -> Result<()> {
        self.flush_interval_ms = at_least_one(millis as usize, "flushInterval")? as u32;
        Ok(())
    }

    /// Bound the stored queue to `bytes`; the oldest messages are dropped past it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `bytes` is smaller than one largest message.
    pub fn set_max_queue_bytes(&mut self, bytes: usize) -> Result<()> {
        if bytes < crate::wire::MAX_MESSAGE_BYTES {
            return Err(Error::InvalidArgument {
                what: "maxQueueBytes",
                why: "must be at least 32768, the size of one largest message",
            });
        }
        self.max_queue_bytes = bytes;
        Ok(())
    }

    /// Keep at most `count` calls in memory while consent is undecided.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `count` is zero.
    pub fn set_max_pending(&mut self, count: usize) -> Result<()> {
        self.max_pending = at_least_one(count, "maxPendingCalls")?;
        Ok(())
    }

    /// Retry after `base_ms`, doubling per failure up to `max_ms`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when either is zero or `base_ms` exceeds `max_ms`.
    pub fn set_retry(&mut self, base_ms: u32, max_ms: u32) -> Result<()> {
        if base_ms == 0 || base_ms > max_ms {
            return Err(Error::InvalidArgument {
                what: "retry",
                why: "baseDelay must be at least 1 and at most maxDelay",
            });
        }
        self.retry_base_ms = base_ms;
        self.retry_max_ms = max_ms;
        Ok(())
    }

    /// Use consent `mode`, with the named `categories` known and the `required` ones needed
    /// for tracking. Empty `categories` keep the default (`analytics`); empty `required`
    /// means the first category.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a blank category name.
    pub fn set_consent(
        &mut self,
        mode: Mode,
        categories: Vec<String>,
        required: Vec<String>,
    ) -> Result<()> {
        if categories
            .iter()
            .chain(&required)
            .any(|name| name.trim().is_empty())
        {
            return Err(Error::InvalidArgument {
                what: "consent category",
                why: "must be a non-empty string",
            });
        }
        self.mode = mode;
        if !categories.is_empty() {
            self.categories = categories;
        }
        self.required = if required.is_empty() {
            self.categories.iter().take(1).cloned().collect()
        } else {
            required
        };
        for name in &self.required {
            if !self.categories.contains(name) {
                self.categories.push(name.clone());
            }
        }
        Ok(())
    }

    /// Count the browser's Do Not Track setting as an objection, like Global Privacy Control.
    pub fn set_honor_dnt(&mut self, honor: bool) {
        self.honor_dnt = honor;
    }

    /// Send `hash` as `context.userHash` (identity verification) on every message.
    pub fn set_user_hash(&mut self, hash: Option<String>) {
        self.user_hash = hash.filter(|hash| !hash.is_empty());
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

    /// How many queued bytes trigger a flush.
    pub fn flush_bytes(&self) -> usize {
        self.flush_bytes
    }

    /// The longest a queued message waits for a flush, in milliseconds.
    pub fn flush_interval_ms(&self) -> u32 {
        self.flush_interval_ms
    }

    /// The consent mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Where batches go: `{host}/v1/batch`.
    pub fn batch_url(&self) -> String {
        let mut url = self.host.clone();
        url.push_str("/v1/batch");
        url
    }
}

fn at_least_one(count: usize, what: &'static str) -> Result<usize> {
    if count == 0 {
        return Err(Error::InvalidArgument {
            what,
            why: "must be a whole number of at least 1",
        });
    }
    Ok(count)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
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
    fn defaults_are_documented_values_and_zero_is_refused() {
        let mut config = Config::new("wk", "http://h").unwrap();

        assert_eq!(config.flush_at(), 20);
        assert_eq!(config.flush_bytes(), 60_000);
        assert_eq!(config.flush_interval_ms(), 10_000);
        assert_eq!(config.max_queue_bytes, 262_144);
        assert_eq!(config.mode(), Mode::OptIn);
        assert_eq!(config.required, ["analytics"]);
        assert!(config.set_flush_at(0).is_err());
        assert!(config.set_flush_interval_ms(0).is_err());
        assert!(config.set_flush_bytes(100).is_err());
        assert!(config.set_max_queue_bytes(1000).is_err());
        assert!(config.set_retry(10, 5).is_err());
        assert_eq!(
            config,
            Config::new("wk", "http://h").unwrap(),
            "a refusal changes nothing"
        );
    }

    #[test]
    fn required_categories_default_to_the_first_and_are_always_known() {
        let config = Config::new("wk", "http://h").unwrap();

        let mut first = config.clone();
        first
            .set_consent(Mode::OptIn, vec!["stats".into(), "ads".into()], vec![])
            .unwrap();
        let mut extra = config;
        extra
            .set_consent(Mode::OptOut, vec![], vec!["essential".into()])
            .unwrap();

        assert_eq!(first.required, ["stats"]);
        assert_eq!(extra.categories, ["analytics", "essential"]);
    }
}
