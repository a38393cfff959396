//! What an answer from the collector means for a batch, and when to try again.
//!
//! A 2xx delivered the batch (messages the collector listed as rejected are refused for good
//! and not sent again). 400, 401, 413 and every other 4xx but 408 and 429 refuse it for good:
//! sending the same bytes again cannot succeed. 408, 429, 5xx and no answer at all are
//! worth another try, after an exponentially growing delay with jitter, or after the
//! `Retry-After` the collector asked for.

/// How a request for one batch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The collector took the batch.
    Delivered,
    /// The collector refused the batch for good; it is dropped.
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// Worth another try: no answer, 408, 429 or 5xx.
    Retry {
        /// The HTTP status, or 0 when no answer came.
        status: u16,
        /// How long the collector asked to wait, in milliseconds.
        retry_after_ms: Option<u32>,
    },
}

impl Outcome {
    /// The outcome of an answer with `status` and the `Retry-After` it carried.
    pub fn of_status(status: u16, retry_after_ms: Option<u32>) -> Self {
        match status {
            200..=299 => Self::Delivered,
            408 | 429 | 500..=599 => Self::Retry {
                status,
                retry_after_ms,
            },
            _ => Self::Refused { status },
        }
    }
}

/// The longest `Retry-After` honoured, so that a wrong header cannot stop delivery for days.
pub const MAX_RETRY_AFTER_MS: u32 = 60 * 60 * 1000;

/// A `Retry-After` given in seconds, in milliseconds. An HTTP date is left to the caller,
/// which has a date parser (the engine's).
pub fn retry_after_seconds(value: &str) -> Option<u32> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let seconds: u64 = value.parse().ok()?;
    Some(
        seconds
            .saturating_mul(1000)
            .min(u64::from(MAX_RETRY_AFTER_MS)) as u32,
    )
}

/// The retry schedule: consecutive failures and the delay before the next try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u32,
    max_ms: u32,
    failures: u32,
}

impl Backoff {
    /// A schedule starting at `base_ms` and doubling up to `max_ms`.
    pub fn new(base_ms: u32, max_ms: u32) -> Self {
        Self {
            base_ms,
            max_ms,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Counts a failure and returns the delay before the next try, in milliseconds.
    ///
    /// Without `retry_after_ms` the delay is drawn between half and all of
    /// `base · 2^(failures − 1)` (capped at the maximum), from `random`: the jitter keeps
    /// many browsers that failed together from retrying together. With it, the collector's
    /// wish is followed as asked (up to [`MAX_RETRY_AFTER_MS`]).
    pub fn failed(&mut self, random: u32, retry_after_ms: Option<u32>) -> u32 {
        self.failures = self.failures.saturating_add(1);
        if let Some(asked) = retry_after_ms {
            return asked.min(MAX_RETRY_AFTER_MS);
        }

        let doublings = (self.failures - 1).min(31);
        let full = u64::from(self.base_ms)
            .saturating_mul(1 << doublings)
            .min(u64::from(self.max_ms));
        let half = full / 2;
        (half + u64::from(random) % (full - half + 1)) as u32
    }

    /// Starts over after a success.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn statuses_are_sorted_into_delivered_refused_and_retry() {
        assert_eq!(Outcome::of_status(200, None), Outcome::Delivered);
        for status in [400, 401, 403, 404, 413, 422] {
            assert_eq!(
                Outcome::of_status(status, None),
                Outcome::Refused { status }
            );
        }
        for status in [408, 429, 500, 502, 503] {
            assert!(matches!(
                Outcome::of_status(status, None),
                Outcome::Retry { .. }
            ));
        }
    }

    #[test]
    fn retry_after_in_seconds_is_read_and_capped() {
        assert_eq!(retry_after_seconds(" 3 "), Some(3000));
        assert_eq!(retry_after_seconds("86400"), Some(MAX_RETRY_AFTER_MS));
        assert_eq!(retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_seconds("-1"), None);
        assert_eq!(retry_after_seconds(""), None);
    }

    #[test]
    fn delays_double_up_to_the_cap_and_a_success_starts_over() {
        let mut backoff = Backoff::new(1000, 8000);

        let lowest: Vec<u32> = (0..6).map(|_| backoff.failed(0, None)).collect();
        backoff.succeeded();

        assert_eq!(lowest, [500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(
            backoff.failed(500, None),
            1000,
            "the highest draw is all of it"
        );
    }

    #[test]
    fn retry_after_is_followed_as_asked() {
        let mut backoff = Backoff::new(1000, 8000);

        assert_eq!(backoff.failed(0, Some(30_000)), 30_000);
        assert_eq!(backoff.failures(), 1);
    }

    proptest! {
        #[test]
        fn every_delay_lies_between_half_and_all_of_the_capped_doubling(
            base in 1u32..10_000,
            extra in 0u32..1_000_000,
            draws in prop::collection::vec(any::<u32>(), 1..40),
        ) {
            let max = base + extra;
            let mut backoff = Backoff::new(base, max);

            for (n, random) in draws.into_iter().enumerate() {
                let full = (u64::from(base) << n.min(40)).min(u64::from(max));
                let delay = u64::from(backoff.failed(random, None));
                prop_assert!(delay >= full / 2 && delay <= full, "{delay} vs {full}");
            }
        }
    }
}
