//! [`RateLimit`]: `requests` per `period_seconds`, within the bounds of the contract.

use std::{borrow::Cow, fmt, time::Duration};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A per-key rate limit: `requests` per `period_seconds`, bursts up to `requests`
/// (GCRA; DECISIONS.md, "Rate limits in detail").
///
/// Built only through [`RateLimit::new`] (or deserialized, which validates the
/// same way), so a value always lies within the bounds: `requests` in
/// 1–1 000 000, `period_seconds` in 1–86 400. It serializes as
/// `{"requests": n, "period_seconds": n}`.
///
/// ```
/// use tower_api_keys::RateLimit;
///
/// let limit = RateLimit::new(100, 60).unwrap();
/// assert_eq!(limit.requests(), 100);
/// assert_eq!(
///     serde_json::to_string(&limit).unwrap(),
///     r#"{"requests":100,"period_seconds":60}"#
/// );
/// assert!(RateLimit::new(0, 60).is_err());
/// assert!(serde_json::from_str::<RateLimit>(r#"{"requests":5,"period_seconds":0}"#).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawRateLimit")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(
        as = ApiKeyRateLimit,
        description = "`requests` per `period_seconds` (GCRA), bursts up to `requests`."
    ),
    // For the schema's `additionalProperties: false` only: deserializing goes
    // through `RawRateLimit`, which refuses unknown fields.
    serde(deny_unknown_fields)
)]
pub struct RateLimit {
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    requests: u32,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86_400))]
    period_seconds: u32,
}

/// The unvalidated wire shape that [`RateLimit`] deserializes through.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests: u32,
    period_seconds: u32,
}

impl TryFrom<RawRateLimit> for RateLimit {
    type Error = RateLimitError;

    fn try_from(raw: RawRateLimit) -> Result<Self, Self::Error> {
        Self::new(raw.requests, raw.period_seconds)
    }
}

impl RateLimit {
    /// Largest accepted `requests`.
    pub const MAX_REQUESTS: u32 = 1_000_000;
    /// Largest accepted `period_seconds` (one day).
    pub const MAX_PERIOD_SECONDS: u32 = 86_400;

    /// A limit of `requests` per `period_seconds`.
    ///
    /// # Errors
    ///
    /// [`RateLimitError`] when `requests` is outside 1–1 000 000 or
    /// `period_seconds` outside 1–86 400 (`requests` is checked first).
    pub const fn new(requests: u32, period_seconds: u32) -> Result<Self, RateLimitError> {
        if requests == 0 || requests > Self::MAX_REQUESTS {
            return Err(RateLimitError(Bound::Requests));
        }
        if period_seconds == 0 || period_seconds > Self::MAX_PERIOD_SECONDS {
            return Err(RateLimitError(Bound::Period));
        }
        Ok(Self {
            requests,
            period_seconds,
        })
    }

    /// A limit from its JSON form, as a request body or an import line gives
    /// it: `null` (`None`: no limit of its own) or exactly
    /// `{"requests": 1–1000000, "period_seconds": 1–86400}`. The error names
    /// the member at fault where there is one.
    pub fn from_json(value: &Value) -> Result<Option<Self>, RateLimitJsonError> {
        let Value::Object(object) = value else {
            return match value {
                Value::Null => Ok(None),
                _ => Err(RateLimitJsonError {
                    member: None,
                    message: Cow::Borrowed(
                        "must be an object {\"requests\", \"period_seconds\"} or null",
                    ),
                }),
            };
        };
        let at = |member: &str, message: Cow<'static, str>| RateLimitJsonError {
            member: Some(member.to_owned()),
            message,
        };
        let mut requests = None;
        let mut period = None;
        for (member, value) in object {
            let (slot, max) = match member.as_str() {
                "requests" => (&mut requests, Self::MAX_REQUESTS),
                "period_seconds" => (&mut period, Self::MAX_PERIOD_SECONDS),
                _ => return Err(at(member, Cow::Borrowed("unknown field"))),
            };
            match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if (1..=max).contains(&n) => *slot = Some(n),
                _ => {
                    let message = format!("must be an integer from 1 to {max}");
                    return Err(at(member, Cow::Owned(message)));
                }
            }
        }
        match (requests, period) {
            (Some(requests), Some(period)) => Self::new(requests, period)
                .map(Some)
                .map_err(|err| at(err.field(), Cow::Borrowed(err.message()))),
            (None, _) => Err(at("requests", Cow::Borrowed("is required"))),
            (_, None) => Err(at("period_seconds", Cow::Borrowed("is required"))),
        }
    }

    /// Requests allowed per period, which is also the largest burst.
    pub const fn requests(self) -> u32 {
        self.requests
    }

    /// The period, in seconds.
    pub const fn period_seconds(self) -> u32 {
        self.period_seconds
    }

    /// The period as a [`Duration`].
    pub const fn period(self) -> Duration {
        Duration::from_secs(self.period_seconds as u64)
    }

    /// The GCRA emission interval: how long one request takes to come back,
    /// `period / requests`, in nanoseconds (never zero given the bounds).
    pub(crate) const fn emission_interval_nanos(self) -> u64 {
        self.period_seconds as u64 * 1_000_000_000 / self.requests as u64
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} per {} s", self.requests, self.period_seconds)
    }
}

/// Which bound a [`RateLimitError`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Requests,
    Period,
}

/// A [`RateLimit`] outside the contract's bounds; `Display` names the bound,
/// e.g. `requests must be between 1 and 1000000`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct RateLimitError(Bound);

impl RateLimitError {
    /// The offending field: `"requests"` or `"period_seconds"`.
    pub const fn field(&self) -> &'static str {
        match self.0 {
            Bound::Requests => "requests",
            Bound::Period => "period_seconds",
        }
    }

    const fn message(&self) -> &'static str {
        match self.0 {
            Bound::Requests => "requests must be between 1 and 1000000",
            Bound::Period => "period_seconds must be between 1 and 86400",
        }
    }
}

/// JSON that [`RateLimit::from_json`] refuses: `Display` says what is
/// wrong, [`member`](Self::member) where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RateLimitJsonError {
    member: Option<String>,
    message: Cow<'static, str>,
}

impl RateLimitJsonError {
    /// The member of the object at fault: `requests`, `period_seconds`, or an
    /// unknown member's name as given; `None` when the value is not an object.
    pub fn member(&self) -> Option<&str> {
        self.member.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_accepts_the_bounds_and_refuses_beyond() {
        for (requests, period) in [(1, 1), (1_000_000, 86_400), (3, 60)] {
            let limit = RateLimit::new(requests, period).unwrap();
            assert_eq!(
                (limit.requests(), limit.period_seconds()),
                (requests, period)
            );
        }
        for requests in [0, 1_000_001, u32::MAX] {
            let err = RateLimit::new(requests, 60).unwrap_err();
            assert_eq!(err.field(), "requests");
            assert_eq!(err.to_string(), "requests must be between 1 and 1000000");
        }
        for period in [0, 86_401, u32::MAX] {
            let err = RateLimit::new(10, period).unwrap_err();
            assert_eq!(err.field(), "period_seconds");
            assert_eq!(
                err.to_string(),
                "period_seconds must be between 1 and 86400"
            );
        }
    }

    #[test]
    fn serializes_as_the_contract_object() {
        let limit = RateLimit::new(5, 60).unwrap();
        let json = serde_json::to_string(&limit).unwrap();
        assert_eq!(json, r#"{"requests":5,"period_seconds":60}"#);
        assert_eq!(serde_json::from_str::<RateLimit>(&json).unwrap(), limit);
    }

    #[test]
    fn deserializing_validates() {
        for bad in [
            r#"{"requests":0,"period_seconds":60}"#,
            r#"{"requests":1000001,"period_seconds":60}"#,
            r#"{"requests":5,"period_seconds":0}"#,
            r#"{"requests":5,"period_seconds":86401}"#,
            r#"{"requests":-1,"period_seconds":60}"#,
            r#"{"requests":1.5,"period_seconds":60}"#,
            r#"{"requests":"5","period_seconds":60}"#,
            r#"{"requests":5}"#,
            r#"{"requests":5,"period_seconds":60,"burst":9}"#,
            r#"{"requests":99999999999,"period_seconds":60}"#,
            r#"null"#,
        ] {
            assert!(
                serde_json::from_str::<RateLimit>(bad).is_err(),
                "{bad} was accepted"
            );
        }
        let err =
            serde_json::from_str::<RateLimit>(r#"{"requests":5,"period_seconds":0}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("period_seconds must be between 1 and 86400")
        );
    }

    #[test]
    fn emission_interval_is_period_over_requests() {
        assert_eq!(
            RateLimit::new(3, 60).unwrap().emission_interval_nanos(),
            20_000_000_000
        );
        assert_eq!(
            RateLimit::new(1_000_000, 1)
                .unwrap()
                .emission_interval_nanos(),
            1_000
        );
    }

    #[test]
    fn from_json_reads_the_contract_object_and_names_the_member_at_fault() {
        use serde_json::json;

        assert_eq!(RateLimit::from_json(&Value::Null), Ok(None));
        assert_eq!(
            RateLimit::from_json(&json!({"requests": 5, "period_seconds": 60})),
            Ok(Some(RateLimit::new(5, 60).unwrap()))
        );
        for (bad, member, message) in [
            (
                json!("5/60"),
                None,
                r#"must be an object {"requests", "period_seconds"} or null"#,
            ),
            (
                json!({"requests": 0, "period_seconds": 60}),
                Some("requests"),
                "must be an integer from 1 to 1000000",
            ),
            (
                json!({"requests": 5_000_000_000u64, "period_seconds": 60}),
                Some("requests"),
                "must be an integer from 1 to 1000000",
            ),
            (
                json!({"requests": 1, "period_seconds": 1.5}),
                Some("period_seconds"),
                "must be an integer from 1 to 86400",
            ),
            (
                json!({"requests": 1}),
                Some("period_seconds"),
                "is required",
            ),
            (
                json!({"requests": 1, "period_seconds": 1, "burst": 2}),
                Some("burst"),
                "unknown field",
            ),
        ] {
            let err = RateLimit::from_json(&bad).unwrap_err();
            assert_eq!(
                (err.member(), err.to_string().as_str()),
                (member, message),
                "{bad}"
            );
        }
    }
}
