//! The IETF httpapi `RateLimit-Policy` and `RateLimit` header fields, which
//! every response to a rate-limited key carries (DECISIONS.md, "Rate limits in detail").

use http::{HeaderName, HeaderValue};

use super::{Decision, RateLimit};

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
        self.limit.policy_header()
    }

    /// `RateLimit: "key";r=<remaining>;t=<seconds until the full budget is
    /// back, rounded up>`.
    pub fn ratelimit_header(&self) -> HeaderValue {
        let mut remaining = itoa::Buffer::new();
        let mut reset = itoa::Buffer::new();
        header_value([
            "\"key\";r=",
            remaining.format(self.remaining),
            ";t=",
            reset.format(self.reset_seconds()),
        ])
    }
}

impl RateLimit {
    /// `RateLimit-Policy: "key";q=<requests>;w=<period_seconds>`, the value
    /// [`Decision::policy_header`] gives for this limit.
    pub(crate) fn policy_header(self) -> HeaderValue {
        let mut requests = itoa::Buffer::new();
        let mut period = itoa::Buffer::new();
        header_value([
            "\"key\";q=",
            requests.format(self.requests()),
            ";w=",
            period.format(self.period_seconds()),
        ])
    }
}

/// A decision, with the `RateLimit-Policy` value of its limit made once per
/// limiter state rather than once per response.
#[derive(Clone, Debug)]
pub(crate) struct Rated {
    pub(crate) decision: Decision,
    pub(crate) policy: HeaderValue,
}

impl From<Decision> for Rated {
    fn from(decision: Decision) -> Self {
        Self {
            policy: decision.policy_header(),
            decision,
        }
    }
}

/// The longest value: `"key";r=` or `"key";q=`, a `u32`, `;t=` or `;w=`, a
/// `u64`.
const MAX_LEN: usize = 8 + 10 + 3 + 20;

/// Joins `parts` into a header value, with one allocation (the value's own).
/// The parts are ASCII digits and punctuation, always valid and never longer
/// than [`MAX_LEN`] together; the fallback only keeps this free of panics.
fn header_value(parts: [&str; 4]) -> HeaderValue {
    let mut buffer = [0u8; MAX_LEN];
    let mut len = 0;
    for part in parts {
        let Some(slot) = buffer.get_mut(len..len + part.len()) else {
            return HeaderValue::from_static("\"key\"");
        };
        slot.copy_from_slice(part.as_bytes());
        len += part.len();
    }
    HeaderValue::from_bytes(&buffer[..len]).unwrap_or_else(|_| HeaderValue::from_static("\"key\""))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

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
        let widest = Decision {
            remaining: u32::MAX,
            reset_after: Duration::from_secs(u64::MAX),
            ..refused
        };
        assert_eq!(
            widest.ratelimit_header(),
            format!("\"key\";r={};t={}", u32::MAX, u64::MAX).as_str()
        );
        assert_eq!(Rated::from(refused).policy, "\"key\";q=1000000;w=86400");
        assert_eq!(RATELIMIT_POLICY.as_str(), "ratelimit-policy");
        assert_eq!(RATELIMIT.as_str(), "ratelimit");
    }
}
