//! [`Decision`]: what the limiter says about one request.

use std::time::Duration;

use super::RateLimit;

/// The outcome for one request.
///
/// `remaining` and `reset_after` are the `r` and `t` of the `RateLimit` header
/// field (DECISIONS.md, "Rate limits in detail"); [`Decision::policy_header`] and
/// [`Decision::ratelimit_header`] format them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// The limit the request was checked against.
    pub limit: RateLimit,
    /// Requests left now, after this one (`0` when refused). A key at 3
    /// requests per period sees 2, 1, 0 on its first three requests.
    pub remaining: u32,
    /// Time until the full budget (`limit.requests()`) is back.
    pub reset_after: Duration,
    /// When refused: time until one request is allowed again. `None` when
    /// allowed.
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up and at
    /// least 1: the `Retry-After` value of a `429`. `None` when allowed.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_seconds(d).max(1))
    }

    /// [`reset_after`](Self::reset_after) in whole seconds, rounded up.
    pub fn reset_seconds(&self) -> u64 {
        ceil_seconds(self.reset_after)
    }
}

/// Whole seconds, rounded up.
fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(reset_after: Duration, retry_after: Option<Duration>) -> Decision {
        Decision {
            allowed: retry_after.is_none(),
            limit: RateLimit::new(3, 60).unwrap(),
            remaining: 0,
            reset_after,
            retry_after,
        }
    }

    #[test]
    fn seconds_round_up() {
        let d = decision(Duration::from_millis(19_001), Some(Duration::from_nanos(1)));
        assert_eq!(d.reset_seconds(), 20);
        assert_eq!(d.retry_after_seconds(), Some(1));
        let d = decision(Duration::from_secs(20), Some(Duration::from_secs(7)));
        assert_eq!(d.reset_seconds(), 20);
        assert_eq!(d.retry_after_seconds(), Some(7));
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        assert_eq!(
            decision(Duration::ZERO, Some(Duration::ZERO)).retry_after_seconds(),
            Some(1)
        );
        assert_eq!(decision(Duration::ZERO, None).retry_after_seconds(), None);
        assert_eq!(decision(Duration::ZERO, None).reset_seconds(), 0);
    }
}
