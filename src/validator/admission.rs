//! What happens after a key is authenticated and before the request goes on:
//! the key's address allowlist, then its rate limit (its own, or the
//! validator's default) and usage metering. Shared by the layer's cache-hit
//! path (answered at once when the limiter is in-process) and its store path
//! (awaited).

use std::{net::IpAddr, time::Instant};

use super::Hit;
use crate::{
    identity::AuthenticatedKey,
    policy::rejection::Rejection,
    ratelimit::{RateLimit, RateLimitUnavailable, RateLimiter, headers::Rated},
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
    pub(crate) rate: Option<Rated>,
}

/// A refused request, with the rate-limit state its response reports.
#[derive(Debug, Clone)]
pub(crate) struct Refused {
    pub(crate) rejection: Rejection,
    pub(crate) rate: Option<Rated>,
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
    Later(Hit),
}

impl ApiKeyValidator {
    /// Whether the key may be used from the client's address: always for a key
    /// without an allowlist (`client` is then not called); otherwise only
    /// from a known address inside it. Checked after verification and before
    /// the rate limit, so a refused request spends no budget and counts no
    /// usage.
    pub(crate) fn address_allowed(
        &self,
        hit: &Hit,
        client: impl FnOnce() -> Option<IpAddr>,
    ) -> bool {
        match &hit.entry.allowed_cidrs {
            None => true,
            Some(networks) => client().is_some_and(|address| networks.contains(address)),
        }
    }

    /// The limit that applies to `key`, if any.
    fn limit_of(&self, key: &AuthenticatedKey) -> Option<RateLimit> {
        key.rate_limit().or(self.limits().default)
    }

    /// Admits or refuses an authenticated key without awaiting, when it can;
    /// `now` is the request's clock reading.
    pub(crate) fn admit_now(&self, hit: Hit, now: Instant) -> Now {
        let Some(limit) = self.limit_of(&hit.key) else {
            return Now::Decided(Ok(self.admitted(hit, None, now)));
        };
        match self
            .limits()
            .limiter
            .check_local_rated(hit.key.key_id().into_inner(), limit)
        {
            Some(rated) => Now::Decided(self.decide(hit, rated, now)),
            None => Now::Later(hit),
        }
    }

    /// Admits or refuses an authenticated key, asking a shared limiter if the
    /// validator has one.
    pub(crate) async fn admit(&self, hit: Hit) -> Result<Admitted, Refused> {
        let Some(limit) = self.limit_of(&hit.key) else {
            return Ok(self.admitted(hit, None, Instant::now()));
        };
        match self
            .limits()
            .limiter
            .check_rated(hit.key.key_id().into_inner(), limit)
            .await
        {
            Ok(rated) => self.decide(hit, rated, Instant::now()),
            // Only with `OnRedisError::Refuse`: answered like a store outage.
            Err(RateLimitUnavailable) => {
                self.telemetry().verified(Err(Rejection::StoreUnavailable));
                Err(Rejection::StoreUnavailable.into())
            }
        }
    }

    fn decide(&self, hit: Hit, rated: Rated, now: Instant) -> Result<Admitted, Refused> {
        if rated.decision.allowed {
            Ok(self.admitted(hit, Some(rated), now))
        } else {
            self.telemetry().verified(Err(Rejection::RateLimited));
            Err(Refused {
                rejection: Rejection::RateLimited,
                rate: Some(rated),
            })
        }
    }

    /// Counts the request, in the key's cache entry, and lets it through.
    fn admitted(&self, hit: Hit, rate: Option<Rated>, now: Instant) -> Admitted {
        self.telemetry().verified(Ok(()));
        self.count_request(&hit.entry, now);
        Admitted { key: hit.key, rate }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderValue, Request, Response, StatusCode, header};
    use http_body_util::Full;
    use tower::ServiceExt;
    use uuid::Uuid;

    use super::*;
    use crate::{
        ApiKeyAuth,
        headers::X_API_KEY,
        key::KeyPair,
        store::{ApiKeyRecord, ApiKeyRepository},
        testing::fixtures::{Scripted, pepper, row},
    };

    async fn ok(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::from("inner")))
    }

    fn request(credential: &str) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::default());
        request
            .headers_mut()
            .insert(X_API_KEY, HeaderValue::from_str(credential).unwrap());
        request
    }

    /// A stored key limited to one request per hour.
    async fn limited_key(repository: &Scripted) -> KeyPair {
        let pair = KeyPair::generate().unwrap();
        let record = ApiKeyRecord {
            rate_limit: Some(RateLimit::new(1, 3600).unwrap()),
            ..row(&pair, Uuid::new_v4())
        };
        repository.inner.insert(record).await.unwrap();
        pair
    }

    #[cfg(feature = "tonic")]
    #[tokio::test]
    async fn over_the_limit_is_resource_exhausted_in_grpc_with_the_headers() {
        let repository = Scripted::default();
        let pair = limited_key(&repository).await;
        let service = ApiKeyAuth::new(
            tower::service_fn(ok),
            ApiKeyValidator::new(repository.clone(), pepper()),
        )
        .with_rejection(crate::auth::grpc::GrpcRejection);
        let first = service
            .clone()
            .oneshot(request(&pair.credential()))
            .await
            .unwrap();
        assert_eq!(first.status(), StatusCode::OK);
        assert!(!first.headers().contains_key("grpc-status"));
        let second = service.oneshot(request(&pair.credential())).await.unwrap();
        assert_eq!(second.headers()["grpc-status"], "8");
        assert_eq!(second.headers()["ratelimit-policy"], "\"key\";q=1;w=3600");
        let retry: u64 = second.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=3600).contains(&retry), "{retry}");
    }

    /// With the limiter in a Redis that cannot be reached, the layer falls back
    /// to counting in process (the default) or refuses with `503`.
    #[cfg(feature = "redis")]
    #[tokio::test]
    async fn a_lost_redis_falls_back_or_refuses_as_configured() {
        use redis::aio::{ConnectionManager, ConnectionManagerConfig};

        use crate::ratelimit::OnRedisError;

        let lost = |policy: OnRedisError| {
            let client = redis::Client::open("redis://127.0.0.1:1").unwrap();
            let config = ConnectionManagerConfig::new().set_number_of_retries(0);
            let manager = ConnectionManager::new_lazy_with_config(client, config).unwrap();
            RateLimiter::redis_with(manager)
                .redis_timeout(std::time::Duration::from_millis(200))
                .on_redis_error(policy)
        };
        for (policy, expected) in [
            (
                OnRedisError::FallBack,
                [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
            ),
            (
                OnRedisError::Refuse,
                [
                    StatusCode::SERVICE_UNAVAILABLE,
                    StatusCode::SERVICE_UNAVAILABLE,
                ],
            ),
        ] {
            let repository = Scripted::default();
            let pair = limited_key(&repository).await;
            let validator = ApiKeyValidator::builder(repository.clone(), pepper())
                .with_rate_limiter(lost(policy))
                .build();
            let service = ApiKeyAuth::new(tower::service_fn(ok), validator);
            for expected in expected {
                let response = service
                    .clone()
                    .oneshot(request(&pair.credential()))
                    .await
                    .unwrap();
                assert_eq!(response.status(), expected, "{policy:?}");
            }
        }
    }
}
