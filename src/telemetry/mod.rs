//! Metrics through the `metrics` facade (README, "Operations"). Without a recorder
//! each call is about one atomic load; the host picks the exporter.
//!
//! The request path uses handles registered once, when the validator (or a
//! scope guard) is built, so that a request costs no registry lookup: install
//! the recorder before building them. Labels never carry a key id, account id
//! or public key. Logs name URLs only through [`redact`]: never a password
//! or a secret query parameter.

pub(crate) mod redact;

use metrics::{Counter, counter};

use crate::policy::rejection::Rejection;

/// `tower_api_keys_verifications_total`.
pub(crate) const VERIFICATIONS: &str = "tower_api_keys_verifications_total";
/// `tower_api_keys_cache_lookups_total`.
pub(crate) const CACHE_LOOKUPS: &str = "tower_api_keys_cache_lookups_total";
/// `tower_api_keys_store_duration_seconds`.
pub(crate) const STORE_DURATION: &str = "tower_api_keys_store_duration_seconds";
/// `tower_api_keys_flushes_total`.
pub(crate) const FLUSHES: &str = "tower_api_keys_flushes_total";
/// `tower_api_keys_change_feed_connected`.
pub(crate) const FEED_CONNECTED: &str = "tower_api_keys_change_feed_connected";
/// `tower_api_keys_change_feed_events_total`.
pub(crate) const FEED_EVENTS: &str = "tower_api_keys_change_feed_events_total";
/// `tower_api_keys_ratelimit_fallbacks_total`: requests limited in process
/// because Redis could not answer (DECISIONS.md, "Redis Cluster").
#[cfg(feature = "redis")]
pub(crate) const RATELIMIT_FALLBACKS: &str = "tower_api_keys_ratelimit_fallbacks_total";

/// The request path's counters, registered once.
pub(crate) struct Telemetry {
    valid: Counter,
    missing: Counter,
    malformed: Counter,
    invalid: Counter,
    unavailable: Counter,
    rate_limited: Counter,
    forbidden: Counter,
    pub(crate) hit: Counter,
    pub(crate) negative_hit: Counter,
    pub(crate) miss: Counter,
}

impl Telemetry {
    pub(crate) fn register() -> Self {
        let outcome = |outcome: &'static str| counter!(VERIFICATIONS, "outcome" => outcome);
        let lookup = |result: &'static str| counter!(CACHE_LOOKUPS, "result" => result);
        Self {
            valid: outcome("valid"),
            missing: outcome("missing"),
            malformed: outcome("malformed"),
            invalid: outcome("invalid"),
            unavailable: outcome("unavailable"),
            rate_limited: outcome("rate_limited"),
            forbidden: outcome("forbidden"),
            hit: lookup("hit"),
            negative_hit: lookup("negative_hit"),
            miss: lookup("miss"),
        }
    }

    /// Counts the layer's outcome for one request.
    pub(crate) fn verified(&self, outcome: Result<(), Rejection>) {
        let counter = match outcome {
            Ok(()) => &self.valid,
            Err(Rejection::MissingCredential) => &self.missing,
            Err(Rejection::MalformedCredential) => &self.malformed,
            Err(Rejection::InvalidCredential) => &self.invalid,
            Err(Rejection::StoreUnavailable) => &self.unavailable,
            Err(Rejection::RateLimited) => &self.rate_limited,
            Err(Rejection::InsufficientScope | Rejection::AddressNotAllowed) => &self.forbidden,
        };
        counter.increment(1);
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry")
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderValue, Request, Response};
    use http_body_util::Full;
    use metrics_util::{
        CompositeKey, MetricKind,
        debugging::{DebugValue, DebuggingRecorder},
    };
    use tower::{Layer, ServiceExt};
    use uuid::Uuid;

    use crate::{
        ApiKeyAuth, ApiKeyValidator, RequireScopesLayer, Scopes,
        headers::X_API_KEY,
        key::KeyPair,
        store::{ApiKeyRecord, ApiKeyRepository},
        testing::fixtures::{Scripted, pepper, row},
    };

    async fn ok(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(Response::new(Full::from("inner")))
    }

    fn request(credential: Option<&str>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::default());
        if let Some(credential) = credential {
            request
                .headers_mut()
                .insert(X_API_KEY, HeaderValue::from_str(credential).unwrap());
        }
        request
    }

    type Snapshot = Vec<(
        CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )>;

    fn counter(snapshot: &Snapshot, name: &str, label: &str) -> u64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| {
                key.kind() == MetricKind::Counter
                    && key.key().name() == name
                    && key.key().labels().any(|l| l.value() == label)
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// Each outcome the layer and a scope guard decide is counted once, with
    /// no key, account or public key in any label.
    #[tokio::test]
    async fn outcomes_and_cache_lookups_are_counted() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let repository = Scripted::default();
        let pair = KeyPair::generate().unwrap();
        let scoped = ApiKeyRecord {
            scopes: Some(Scopes::new(["other"]).unwrap()),
            ..row(&pair, Uuid::new_v4())
        };
        repository.inner.insert(scoped).await.unwrap();
        let (validator, guard) = metrics::with_local_recorder(&recorder, || {
            (
                ApiKeyValidator::new(repository.clone(), pepper()),
                RequireScopesLayer::new(["reports:read"]),
            )
        });
        let auth = ApiKeyAuth::new(tower::service_fn(ok), validator.clone());
        let guarded = ApiKeyAuth::new(guard.layer(tower::service_fn(ok)), validator);
        let credential = pair.credential();
        let unknown = KeyPair::generate().unwrap().credential();
        for request in [
            request(None),
            request(Some("pk_short:sk_short")),
            request(Some(&unknown)),
            request(Some(&unknown)),
            request(Some(&credential)),
            request(Some(&credential)),
        ] {
            auth.clone().oneshot(request).await.unwrap();
        }
        // A guard's refusal counts `valid` (the layer) and `forbidden` (the guard).
        let refused = guarded.oneshot(request(Some(&credential))).await.unwrap();
        assert_eq!(refused.status(), 403);
        let snapshot: Snapshot = snapshotter.snapshot().into_vec();
        let outcomes = |label| counter(&snapshot, super::VERIFICATIONS, label);
        assert_eq!(outcomes("missing"), 1);
        assert_eq!(outcomes("malformed"), 1);
        assert_eq!(outcomes("invalid"), 2);
        assert_eq!(outcomes("valid"), 3);
        assert_eq!(outcomes("forbidden"), 1);
        let lookups = |label| counter(&snapshot, super::CACHE_LOOKUPS, label);
        assert_eq!(lookups("miss"), 2, "the first unknown and the first valid");
        assert_eq!(lookups("negative_hit"), 1);
        assert_eq!(lookups("hit"), 2);
        for (key, _, _, _) in &snapshot {
            for label in key.key().labels() {
                assert!(!label.value().contains("pk_"), "{label:?}");
                assert!(Uuid::parse_str(label.value()).is_err(), "{label:?}");
            }
        }
    }
}
