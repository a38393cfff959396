//! What the core needs from its host: randomness, the clock, the page and its privacy
//! signals.
//!
//! The browser bindings implement [`Environment`] with `crypto.getRandomValues`, `Date`,
//! `location`, `document` and `navigator`; tests implement it with counters and fixed
//! values, which keeps every message the core builds reproducible.

use crate::json::Object;
use crate::prelude::*;
use crate::Result;

/// The host the SDK runs in.
pub trait Environment {
    /// Sixteen bytes from a cryptographically secure source.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`](crate::Error::NoRandomSource) when the host has none.
    fn random_bytes(&mut self) -> Result<[u8; 16]>;

    /// The current time as ISO-8601 in UTC, e.g. `2026-05-01T12:00:00.000Z`.
    fn now(&self) -> String;

    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> f64;

    /// The page the visitor is on, when the SDK runs in a window.
    fn page(&self) -> Option<Page>;

    /// Whether the visitor is still on `seen`, an earlier answer of [`page`](Self::page).
    /// Asked for every message; a host where reading the whole page is costly answers it
    /// more cheaply.
    fn still_on(&self, seen: Option<&Page>) -> bool {
        self.page().as_ref() == seen
    }

    /// Whether the browser sends Global Privacy Control (`navigator.globalPrivacyControl`).
    fn global_privacy_control(&self) -> bool {
        false
    }

    /// Whether the browser asks not to be tracked (`navigator.doNotTrack == "1"`).
    fn do_not_track(&self) -> bool {
        false
    }

    /// Whether this page load is a reload of the same tab (`PerformanceNavigationTiming`'s
    /// `type`): then the tab id kept in `sessionStorage` is this tab's own, even if the page
    /// before had no chance to mark itself closed.
    fn reloaded(&self) -> bool {
        false
    }
}

/// The page a message was recorded on, sent as `context.page`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Page {
    /// `location.pathname`.
    pub path: String,
    /// `location.href`.
    pub url: String,
    /// `location.search`, with its leading `?` when not empty.
    pub search: String,
    /// `document.title`.
    pub title: String,
    /// `document.referrer`; empty when the visitor came directly.
    pub referrer: String,
}

impl Page {
    /// The page as the JSON text of `context.page`.
    pub fn to_json(&self) -> String {
        Object::new()
            .string("path", &self.path)
            .string("url", &self.url)
            .string("search", &self.search)
            .string("title", &self.title)
            .string("referrer", &self.referrer)
            .finish()
    }
}

/// Milliseconds since the Unix epoch as ISO-8601 in UTC with milliseconds, the way
/// `Date.prototype.toISOString` writes them (years 0 to 9999).
///
/// Written here because asking the engine for the string costs a round trip and a string
/// copy on every message, while the number comes across for free.
pub fn iso8601(ms: f64) -> String {
    let ms = ms.max(0.0) as u64;
    let days = ms / 86_400_000;
    let rest = ms % 86_400_000;

    // Days to a civil date, after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);

    // Written into a fixed buffer, digit by digit from the right: one string per message
    // is written here, and pushing characters one at a time cost more than the arithmetic.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    for (end, width, value) in [
        (4, 4, year),
        (7, 2, month),
        (10, 2, day),
        (13, 2, rest / 3_600_000),
        (16, 2, rest / 60_000 % 60),
        (19, 2, rest / 1000 % 60),
        (23, 3, rest % 1000),
    ] {
        let mut value = value;
        for at in (end - width..end).rev() {
            if let Some(digit) = out.get_mut(at) {
                *digit = b'0' + (value % 10) as u8;
            }
            value /= 10;
        }
    }
    crate::json::ascii(&out)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn known_instants_are_written_like_to_iso_string() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_777_636_800_123.0), "2026-05-01T12:00:00.123Z");
        assert_eq!(iso8601(253_402_300_799_999.0), "9999-12-31T23:59:59.999Z");
    }

    proptest! {
        #[test]
        fn every_instant_reads_back_as_itself(ms in 0u64..253_402_300_800_000) {
            let text = iso8601(ms as f64);

            let parsed = ebb_protocol::decode::parse_timestamp(&text).unwrap();
            prop_assert_eq!(parsed.timestamp_millis() as u64, ms);
        }
    }
}
