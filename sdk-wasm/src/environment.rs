//! What the core needs from its host: randomness, the clock, the page and its privacy
//! signals.
//!
//! The browser bindings implement [`Environment`] with `crypto.getRandomValues`, `Date`,
//! `location`, `document` and `navigator`; tests implement it with counters and fixed
//! values, which keeps every message the core builds reproducible.

use core::cell::Cell;

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

    /// The wall clock: milliseconds since the Unix epoch, which jump when the clock is set.
    /// The SDK reads it through [`SteadyClock`] for timestamps and retry delays.
    fn now_ms(&self) -> f64;

    /// The page the visitor is on, when the SDK runs in a window.
    fn page(&self) -> Option<Page>;

    /// Whether the visitor is still on `seen`, an earlier answer of [`page`](Self::page).
    /// Asked for every message but page views; a host where reading the whole page is
    /// costly answers it more cheaply (the browser's, from the same millisecond as the last
    /// check, without reading at all).
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

/// The SDK's time for message timestamps, `sentAt` and retry delays: the wall clock, except
/// that it never runs backwards.
///
/// When the wall clock is set back (by the visitor, or a time sync correcting it), this
/// clock carries on from where it was, at the wall clock's pace. Messages then keep their
/// order, and `sentAt` stays on the same clock as the `timestamp` of every message in the
/// batch, so the collector's skew correction (`receivedAt − (sentAt − timestamp)`) still
/// places each where it happened; a retry that was due in a second is still due in a
/// second, not an hour later. Only the tabs' liveness marks read the wall clock itself,
/// since other tabs compare them with theirs.
#[derive(Debug, Default)]
pub(crate) struct SteadyClock {
    /// How far this clock runs ahead of the wall clock: the sum of its backward jumps.
    ahead: Cell<f64>,
    /// The last time read.
    last: Cell<f64>,
}

impl SteadyClock {
    /// The time now, for a wall clock reading `wall` milliseconds.
    pub(crate) fn at(&self, wall: f64) -> f64 {
        let mut now = wall + self.ahead.get();
        if now < self.last.get() {
            now = self.last.get();
            self.ahead.set(now - wall);
        }
        self.last.set(now);
        now
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

    #[test]
    fn the_steady_clock_carries_on_where_it_was_when_the_wall_clock_goes_back() {
        let clock = SteadyClock::default();
        let hour = 3_600_000.0;

        let before = clock.at(10.0 * hour);
        let at_the_jump = clock.at(9.0 * hour);
        let a_second_later = clock.at(9.0 * hour + 1000.0);

        assert_eq!(before, 10.0 * hour);
        assert_eq!(at_the_jump, before);
        assert_eq!(a_second_later, before + 1000.0);
    }

    proptest! {
        #[test]
        fn the_steady_clock_moves_as_far_as_the_wall_clock_moves_forward(
            start in 0f64..1e13,
            steps in prop::collection::vec(-1e7f64..1e7, 1..40),
        ) {
            let clock = SteadyClock::default();
            let mut wall = start;
            let mut last = clock.at(wall);

            for step in steps {
                wall += step;
                let now = clock.at(wall);

                prop_assert!((now - last - step.max(0.0)).abs() < 1e-3, "{} after {}", now, last);
                last = now;
            }
        }

        #[test]
        fn every_instant_reads_back_as_itself(ms in 0u64..253_402_300_800_000) {
            let text = iso8601(ms as f64);

            let parsed = ebb_protocol::decode::parse_timestamp(&text).unwrap();
            prop_assert_eq!(parsed.timestamp_millis() as u64, ms);
        }
    }
}
