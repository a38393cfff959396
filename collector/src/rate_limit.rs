//! The optional per-write-key rate limit on ingest (`EBB_RATE_LIMIT`).
//!
//! A token bucket per write key: the configured number of requests per second, with bursts
//! of up to that many. Keys are checked only after they proved valid, so the number of
//! buckets is bounded by the number of write keys, not by what clients make up.

use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// Requests per second allowed per write key.
#[derive(Debug)]
pub struct RateLimit {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl RateLimit {
    /// A limit of `per_second` requests per second for each write key.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request from the key's bucket.
    ///
    /// # Errors
    ///
    /// [`ApiError::RateLimited`] with the whole seconds to wait when the bucket is empty.
    pub fn check(&self, write_key: &str) -> Result<(), ApiError> {
        match self.limiter.check_key(&write_key.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Err(ApiError::RateLimited {
                    retry_after: retry_after.max(1),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_limit_is_told_when_to_retry_and_other_keys_are_unaffected() {
        let limit = RateLimit::new(NonZeroU32::new(2).unwrap());

        let first = [limit.check("a"), limit.check("a")];
        let third = limit.check("a");
        let other = limit.check("b");

        assert!(first.iter().all(Result::is_ok));
        assert!(matches!(
            third,
            Err(ApiError::RateLimited { retry_after: 1 })
        ));
        assert!(other.is_ok());
    }
}
