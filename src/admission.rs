//! What happens after a key is authenticated and before the request goes on:
//! the key's rate limit (its own, or the validator's default) and usage
//! metering. Shared by the layer's cache-hit path (answered at once when the
//! limiter is in-process) and its store path (awaited).

use crate::{
    identity::AuthenticatedKey,
    ratelimit::{Decision, RateLimit, RateLimitUnavailable, RateLimiter},
    rejection::Rejection,
    validator::ApiKeyValidator,
};

/// The rate limiter and the default limit a validator applies.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) limiter: RateLimiter,
    /// The limit of keys without one of their own; `None`: unlimited.
    pub(crate) default: Option<RateLimit>,
}

/// A request that may go on, with the rate-limit state its response reports.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) key: AuthenticatedKey,
    pub(crate) rate: Option<Decision>,
}

/// A refused request, with the rate-limit state its response reports.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused {
    pub(crate) rejection: Rejection,
    pub(crate) rate: Option<Decision>,
}

impl From<Rejection> for Refused {
    fn from(rejection: Rejection) -> Self {
        Self {
            rejection,
            rate: None,
        }
    }
}

/// The outcome without awaiting.
pub(crate) enum Now {
    Decided(Result<Admitted, Refused>),
    /// The limiter is in Redis: await [`ApiKeyValidator::admit`].
    Later(AuthenticatedKey),
}

impl ApiKeyValidator {
    /// The limit that applies to `key`, if any.
    fn limit_of(&self, key: &AuthenticatedKey) -> Option<RateLimit> {
        key.rate_limit().or(self.limits().default)
    }

    /// Admits or refuses an authenticated key without awaiting, when it can.
    pub(crate) fn admit_now(&self, key: AuthenticatedKey) -> Now {
        let Some(limit) = self.limit_of(&key) else {
            return Now::Decided(Ok(self.admitted(key, None)));
        };
        match self
            .limits()
            .limiter
            .check_local(key.key_id().into_inner(), limit)
        {
            Some(decision) => Now::Decided(self.decide(key, decision)),
            None => Now::Later(key),
        }
    }

    /// Admits or refuses an authenticated key, asking a shared limiter if the
    /// validator has one.
    pub(crate) async fn admit(&self, key: AuthenticatedKey) -> Result<Admitted, Refused> {
        let Some(limit) = self.limit_of(&key) else {
            return Ok(self.admitted(key, None));
        };
        match self
            .limits()
            .limiter
            .check(key.key_id().into_inner(), limit)
            .await
        {
            Ok(decision) => self.decide(key, decision),
            // Only with `OnRedisError::Refuse`: answered like a store outage.
            Err(RateLimitUnavailable) => Err(Rejection::StoreUnavailable.into()),
        }
    }

    fn decide(&self, key: AuthenticatedKey, decision: Decision) -> Result<Admitted, Refused> {
        if decision.allowed {
            Ok(self.admitted(key, Some(decision)))
        } else {
            Err(Refused {
                rejection: Rejection::RateLimited,
                rate: Some(decision),
            })
        }
    }

    fn admitted(&self, key: AuthenticatedKey, rate: Option<Decision>) -> Admitted {
        self.count_request(&key);
        Admitted { key, rate }
    }
}
