//! The last step of a validation: the secret checked against a cached entry
//! with one HMAC, whatever the entry says, and the bookkeeping of a success.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Instant,
};

use super::{ApiKeyValidator, Hit, MAX_WARNED_KEYS, cache::CachedKey};
use crate::{
    policy::rejection::Rejection,
    store::{HashRewrite, KeyStatus},
    sync::lock,
};

impl ApiKeyValidator {
    /// Verifies `secret_key` against `entry`: one HMAC (with the pepper that
    /// made the entry's hash), then status and expiry. A success records the
    /// use and, for a hash made with a previous pepper, queues its re-hash once.
    pub(super) fn check_entry(
        &self,
        entry: Arc<CachedKey>,
        secret_key: &str,
        now: Instant,
    ) -> Result<Hit, Rejection> {
        let inner = &*self.inner;
        // One HMAC whatever the entry says (with the pepper that made its hash),
        // so that every refusal costs the same.
        let matches = inner.hashers.verify(
            secret_key,
            entry.pepper,
            entry.hash.as_ref(),
            &inner.dummy_hash,
        );
        if !matches || entry.status != KeyStatus::Active || entry.is_expired(now) {
            return Err(Rejection::InvalidCredential);
        }
        let key_id = entry.key.key_id().into_inner();
        inner.writer.record_use(key_id, &entry.last_used, now);
        // Made with a previous pepper: re-hashed under the current one, once.
        if let Some(rehash) = &entry.rehash
            && !rehash.queued.swap(true, Ordering::Relaxed)
        {
            inner.writer.queue_rehash(HashRewrite {
                key_id,
                old_hash: rehash.old_hash.clone(),
                new_hash: inner.hashers.current().hash(secret_key).to_hex().into(),
                pepper_id: inner.hashers.current_id().as_str().to_owned(),
            });
        }
        Ok(Hit {
            key: entry.key.clone(),
            entry,
        })
    }

    /// Logs, once per key, that a row names a pepper this validator does not
    /// hold (its id, never a pepper).
    pub(super) fn warn_unknown_pepper(&self, entry: &CachedKey) {
        let key_id = entry.key.key_id().into_inner();
        let mut warned = lock(&self.inner.warned_peppers);
        if warned.len() < MAX_WARNED_KEYS && warned.insert(key_id) {
            tracing::warn!(
                %key_id,
                "the key's hash was made with a pepper this validator does not hold; \
                 it is refused until that pepper is configured again"
            );
        }
    }
}
