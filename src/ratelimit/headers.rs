//! The IETF httpapi `RateLimit-Policy` and `RateLimit` header fields
//! (CONTRACT §9.3).

use http::{HeaderName, HeaderValue};

use super::Decision;

/// `RateLimit-Policy`, the limit a key is held to.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`, what is left of it now.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

impl Decision {
    /// `RateLimit-Policy: "key";q=<requests>;w=<period_seconds>`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use tower_api_keys::{Decision, RateLimit};
    ///
    /// let decision = Decision {
    ///     allowed: true,
    ///     limit: RateLimit::new(3, 60).unwrap(),
    ///     remaining: 2,
    ///     reset_after: Duration::from_millis(19_500),
    ///     retry_after: None,
    /// };
    /// assert_eq!(decision.policy_header(), r#""key";q=3;w=60"#);
    /// assert_eq!(decision.ratelimit_header(), r#""key";r=2;t=20"#);
    /// ```
    pub fn policy_header(&self) -> HeaderValue {
        header_value(format!(
            "\"key\";q={};w={}",
            self.limit.requests(),
            self.limit.period_seconds()
        ))
    }

    /// `RateLimit: "key";r=<remaining>;t=<seconds until the full budget is
    /// back, rounded up>`.
    pub fn ratelimit_header(&self) -> HeaderValue {
        header_value(format!(
            "\"key\";r={};t={}",
            self.remaining,
            self.reset_seconds()
        ))
    }
}

/// The values above are ASCII digits and punctuation, always valid; the
/// fallback only keeps this free of panics.
fn header_value(value: String) -> HeaderValue {
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("\"key\""))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::RateLimit;

    #[test]
    fn headers_follow_the_contract() {
        let refused = Decision {
            allowed: false,
            limit: RateLimit::new(1_000_000, 86_400).unwrap(),
            remaining: 0,
            reset_after: Duration::from_secs(86_400),
            retry_after: Some(Duration::from_millis(86)),
        };
        assert_eq!(refused.policy_header(), "\"key\";q=1000000;w=86400");
        assert_eq!(refused.ratelimit_header(), "\"key\";r=0;t=86400");
        assert_eq!(RATELIMIT_POLICY.as_str(), "ratelimit-policy");
        assert_eq!(RATELIMIT.as_str(), "ratelimit");
    }
}
