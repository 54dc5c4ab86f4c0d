//! What the other parts of the crate read from a validator: the store
//! boundary (the key manager), hashing of new secrets, the limits and metrics
//! (the layer), the peppers (pepper status).

use std::{sync::Arc, time::Instant};

use super::{ApiKeyValidator, admission::Limits, cache::CachedKey};
use crate::{
    key::hash::SecretHash,
    key::ring::PepperId,
    store::{ApiKeyRecord, Store},
    telemetry::Telemetry,
};

impl ApiKeyValidator {
    /// The timed store boundary, for the key manager to hold its own copy of.
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Hashes a new secret for storage with the current pepper; returns the
    /// hash and the pepper's id.
    pub(crate) fn hash_new_secret(&self, secret: &str) -> (SecretHash, &PepperId) {
        let hashers = &self.inner.hashers;
        (hashers.current().hash(secret), hashers.current_id())
    }

    /// One HMAC of `secret` compared with the dummy hash: the work of a
    /// refusal, for callers that refuse before a lookup but must not be faster
    /// for it (revocation by credential).
    pub(crate) fn verify_dummy(&self, secret: &str) {
        let inner = &*self.inner;
        inner.hashers.current().verify(secret, &inner.dummy_hash);
    }

    /// Whether `secret` is the secret of the stored `record`, whatever its
    /// status or expiry: exactly one HMAC (with the pepper that made the
    /// row's hash), compared in constant time. A row whose pepper this
    /// validator does not hold, or whose hash is unreadable, costs the same
    /// HMAC (against the dummy hash) and never matches.
    pub(crate) fn secret_matches(&self, secret: &str, record: &ApiKeyRecord) -> bool {
        let hashers = &self.inner.hashers;
        hashers.verify(
            secret,
            hashers.index_of(record.pepper_id.as_deref()),
            SecretHash::from_hex(&record.secret_key_hash).as_ref(),
            &self.inner.dummy_hash,
        )
    }

    /// The rate limiter and default limit the layer applies after
    /// authentication.
    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The request path's metrics.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.inner.telemetry
    }

    /// Counts a request the layer lets through (usage metering), in the
    /// cache entry its key was checked against.
    pub(crate) fn count_request(&self, entry: &Arc<CachedKey>, now: Instant) {
        self.inner.writer.count_request_in(entry, now);
    }

    /// The ids of the peppers this validator holds, current first.
    pub(crate) fn pepper_ids(&self) -> impl Iterator<Item = &PepperId> {
        self.inner.hashers.ring_ids()
    }
}
