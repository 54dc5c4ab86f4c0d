//! The in-process key cache: positive entries by public key, and a separate,
//! smaller cache of public keys the store does not know.

use std::{
    sync::{Arc, atomic::AtomicI64},
    time::{Duration, Instant},
};

use moka::{policy::Expiry, sync::Cache};

use crate::{hash::SecretHash, identity::AuthenticatedKey, store::KeyStatus};

/// What the cache keeps for a known public key.
pub(crate) struct CachedKey {
    pub(crate) key: AuthenticatedKey,
    pub(crate) status: KeyStatus,
    /// `None` when the stored hash was not 64 hex characters: the key never validates.
    pub(crate) hash: Option<SecretHash>,
    /// The key's `expires_at`, on the monotonic clock.
    pub(crate) expires_at: Option<Instant>,
    /// After this the entry is stale: used only while the store is failing.
    pub(crate) fresh_until: Instant,
    /// When moka drops the entry: `fresh_until` + the stale grace, never past `expires_at`.
    evict_after: Duration,
    /// Unix seconds of the last `last_used_at` recorded for this key.
    pub(crate) last_recorded: AtomicI64,
}

impl CachedKey {
    pub(crate) fn new(
        key: AuthenticatedKey,
        status: KeyStatus,
        hash: Option<SecretHash>,
        expires_at: Option<Instant>,
        freshness: Freshness,
        last_recorded: i64,
    ) -> Self {
        let Freshness {
            now,
            ttl,
            stale_grace,
        } = freshness;
        let mut evict_after = ttl.saturating_add(stale_grace);
        // Never cached past a future `expires_at`. A key already expired is cached
        // for the whole lifetime (refused on every hit), so that refusing it costs
        // no more than refusing an unknown or revoked key.
        if let Some(at) = expires_at
            && at > now
        {
            evict_after = evict_after.min(at - now);
        }
        Self {
            key,
            status,
            hash,
            expires_at,
            fresh_until: now + ttl,
            evict_after,
            last_recorded: AtomicI64::new(last_recorded),
        }
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
}

/// When an entry was made and how long it stays fresh, then stale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    pub(crate) now: Instant,
    pub(crate) ttl: Duration,
    pub(crate) stale_grace: Duration,
}

struct PerEntryExpiry;

impl Expiry<String, Arc<CachedKey>> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedKey>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.evict_after)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<CachedKey>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.evict_after)
    }
}

/// How many public keys a validator's caches hold (approximately: the cache
/// settles pending work first, but concurrent requests may change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CachedEntries {
    /// Keys the store knows (whatever their state).
    pub known: u64,
    /// Well-formed public keys the store does not know.
    pub unknown: u64,
}

/// Sizes and lifetimes of the two caches.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheConfig {
    pub(crate) capacity: u64,
    pub(crate) negative_capacity: u64,
    pub(crate) negative_ttl: Duration,
}

/// Both caches. Writes that race with invalidations are ordered by the
/// caller (see [`crate::flight`]): this type only stores.
pub(crate) struct KeyCache {
    positive: Cache<String, Arc<CachedKey>>,
    negative: Cache<String, ()>,
}

impl KeyCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            positive: Cache::builder()
                .max_capacity(config.capacity)
                .expire_after(PerEntryExpiry)
                .build(),
            negative: Cache::builder()
                .max_capacity(config.negative_capacity)
                .time_to_live(config.negative_ttl)
                .build(),
        }
    }

    pub(crate) fn get(&self, public_key: &str) -> Option<Arc<CachedKey>> {
        self.positive.get(public_key)
    }

    pub(crate) fn is_known_unknown(&self, public_key: &str) -> bool {
        self.negative.contains_key(public_key)
    }

    /// Caches a key the store knows (and forgets it as unknown).
    pub(crate) fn insert_known(&self, public_key: &str, entry: Arc<CachedKey>) {
        self.negative.invalidate(public_key);
        self.positive.insert(public_key.to_owned(), entry);
    }

    /// Remembers that the store does not know `public_key`, and forgets any
    /// entry for it as known (it was deleted behind this process's back: a
    /// later outage must not serve it as stale-if-error).
    pub(crate) fn insert_unknown(&self, public_key: &str) {
        self.positive.invalidate(public_key);
        self.negative.insert(public_key.to_owned(), ());
    }

    /// Forgets everything about `public_key`, in both caches.
    pub(crate) fn remove(&self, public_key: &str) {
        self.positive.invalidate(public_key);
        self.negative.invalidate(public_key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.positive.invalidate_all();
        self.negative.invalidate_all();
    }

    /// Approximate entry counts, after pending maintenance.
    pub(crate) fn entry_counts(&self) -> CachedEntries {
        self.positive.run_pending_tasks();
        self.negative.run_pending_tasks();
        CachedEntries {
            known: self.positive.entry_count(),
            unknown: self.negative.entry_count(),
        }
    }
}
