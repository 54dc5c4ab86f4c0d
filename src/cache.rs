//! The in-process key cache: positive entries by public key, and a separate,
//! smaller cache of public keys the store does not know.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use moka::{policy::Expiry, sync::Cache};

use crate::{
    hash::SecretHash,
    identity::AuthenticatedKey,
    ring::Hashers,
    store::{ApiKeyRecord, KeyStatus, StoredHash},
    writer::LastRecorded,
};

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
    /// The batch writer's throttle state for this key.
    pub(crate) last_used: LastRecorded,
    /// Which of the validator's peppers made the hash (an index into its
    /// ring); `None` when the row names a pepper the validator does not hold:
    /// the key never validates.
    pub(crate) pepper: Option<usize>,
    /// For a key hashed with a previous pepper: what its re-hash needs.
    pub(crate) rehash: Option<Box<Rehash>>,
}

/// A key whose hash was made with a previous pepper, to be re-hashed under the
/// current one after its first successful validation.
pub(crate) struct Rehash {
    /// The hash as stored: the rewrite happens only where the row still holds it.
    pub(crate) old_hash: StoredHash,
    /// Set by the first success, so that the key is queued once.
    pub(crate) queued: AtomicBool,
}

impl CachedKey {
    /// The entry for a row the store returned at `freshness.now`. `last_used`
    /// is the newest use known, stored or still pending.
    pub(crate) fn from_record(
        record: ApiKeyRecord,
        freshness: Freshness,
        last_used: Option<DateTime<Utc>>,
        hashers: &Hashers,
    ) -> Self {
        let pepper = hashers.index_of(record.pepper_id.as_deref());
        let rehash = (pepper.is_some_and(|index| index > 0)).then(|| {
            Box::new(Rehash {
                old_hash: record.secret_key_hash.clone(),
                queued: AtomicBool::new(false),
            })
        });
        let hash = SecretHash::from_hex(&record.secret_key_hash);
        if hash.is_none() {
            tracing::warn!(key_id = %record.key_id, "stored secret_key_hash is not 64 hex characters; the key cannot validate");
        }
        // The key's wall-clock expiry, moved onto the monotonic clock.
        let wall_now = Utc::now();
        let expires_at = record
            .expires_at
            .map(|at| freshness.now + (at - wall_now).to_std().unwrap_or(Duration::ZERO));
        let mut entry = Self::new(
            AuthenticatedKey::new(
                record.account_id.into(),
                record.key_id.into(),
                Arc::from(record.public_key),
                record.expires_at,
                record.scopes,
                record.metadata,
            )
            .with_rate_limit(record.rate_limit),
            record.status,
            hash,
            expires_at,
            freshness,
            LastRecorded::new(last_used),
        );
        entry.pepper = pepper;
        entry.rehash = rehash;
        entry
    }

    fn new(
        key: AuthenticatedKey,
        status: KeyStatus,
        hash: Option<SecretHash>,
        expires_at: Option<Instant>,
        freshness: Freshness,
        last_used: LastRecorded,
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
            last_used,
            pepper: Some(0),
            rehash: None,
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

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::identity::{AccountId, ApiKeyId};

    const TTL: Duration = Duration::from_secs(60);
    const GRACE: Duration = Duration::from_secs(300);

    fn entry(now: Instant, expires_at: Option<Instant>) -> CachedKey {
        CachedKey::new(
            AuthenticatedKey::new(
                AccountId::new(Uuid::new_v4()),
                ApiKeyId::new(Uuid::new_v4()),
                Arc::from("pk_x"),
                None,
                None,
                None,
            ),
            KeyStatus::Active,
            None,
            expires_at,
            Freshness {
                now,
                ttl: TTL,
                stale_grace: GRACE,
            },
            LastRecorded::new(None),
        )
    }

    fn cache() -> KeyCache {
        KeyCache::new(CacheConfig {
            capacity: 100,
            negative_capacity: 100,
            negative_ttl: Duration::from_secs(30),
        })
    }

    #[test]
    fn an_entry_is_kept_for_its_ttl_plus_the_stale_grace() {
        let now = Instant::now();
        let entry = entry(now, None);
        assert_eq!(entry.fresh_until, now + TTL);
        assert_eq!(entry.evict_after, TTL + GRACE);
        assert!(!entry.is_expired(now + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn an_entry_never_outlives_a_future_expiry() {
        let now = Instant::now();
        let expires = now + Duration::from_secs(5);
        let entry = entry(now, Some(expires));
        assert_eq!(entry.evict_after, Duration::from_secs(5));
        assert!(!entry.is_expired(now));
        assert!(entry.is_expired(expires));
    }

    #[test]
    fn an_already_expired_key_is_cached_like_any_refused_key() {
        let now = Instant::now();
        let entry = entry(now + Duration::from_secs(10), Some(now));
        assert_eq!(entry.evict_after, TTL + GRACE);
        assert!(entry.is_expired(now + Duration::from_secs(10)));
    }

    #[test]
    fn known_and_unknown_exclude_each_other() {
        let cache = cache();
        cache.insert_unknown("pk_a");
        assert!(cache.is_known_unknown("pk_a"));
        cache.insert_known("pk_a", Arc::new(entry(Instant::now(), None)));
        assert!(cache.get("pk_a").is_some());
        assert!(!cache.is_known_unknown("pk_a"));
        cache.insert_unknown("pk_a");
        assert!(cache.get("pk_a").is_none());
        assert!(cache.is_known_unknown("pk_a"));
    }

    #[test]
    fn remove_and_clear_forget_both_kinds() {
        let cache = cache();
        cache.insert_known("pk_a", Arc::new(entry(Instant::now(), None)));
        cache.insert_unknown("pk_b");
        cache.remove("pk_a");
        assert!(cache.get("pk_a").is_none());
        assert_eq!(
            cache.entry_counts(),
            CachedEntries {
                known: 0,
                unknown: 1
            }
        );
        cache.insert_known("pk_a", Arc::new(entry(Instant::now(), None)));
        cache.clear();
        assert_eq!(cache.entry_counts(), CachedEntries::default());
    }
}
