//! The in-process key cache: positive entries by public key, and a separate,
//! smaller cache of public keys the store does not know.
//!
//! Both are bounded [`quick_cache`] maps keyed by the public key's 35 bytes,
//! held inline. Each entry carries its own deadline, checked on every read:
//! an entry past it reads as absent and is removed. Eviction by capacity is
//! the map's (S3-FIFO, per shard).

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use quick_cache::sync::Cache;
use uuid::Uuid;

use super::{
    day_count::{Counted, DayCount},
    writer::LastRecorded,
};
use crate::{
    identity::AuthenticatedKey,
    key::PublicKeyBytes,
    key::hash::SecretHash,
    key::ring::Hashers,
    policy::AllowedNetworks,
    store::{ApiKeyRecord, KeyStatus, StoredHash},
};

/// What the cache keeps for a known public key.
pub(crate) struct CachedKey {
    pub(crate) key: AuthenticatedKey,
    pub(crate) status: KeyStatus,
    /// `None` when the stored hash was not 64 hex characters: the key never validates.
    pub(crate) hash: Option<SecretHash>,
    /// The key's `expires_at`, on the monotonic clock.
    pub(crate) expires_at: Option<Instant>,
    /// When the store last answered with this row.
    pub(crate) confirmed: Instant,
    /// After this the entry is stale: used only while the store is failing.
    pub(crate) fresh_until: Instant,
    /// When the entry stops being served at all: `fresh_until` + the stale
    /// grace, never past `expires_at`. `None`: never (a lifetime too long for
    /// the clock).
    evict_at: Option<Instant>,
    /// The batch writer's throttle state for this key.
    pub(crate) last_used: LastRecorded,
    /// Which of the validator's peppers made the hash (an index into its
    /// ring); `None` when the row names a pepper the validator does not hold:
    /// the key never validates.
    pub(crate) pepper: Option<usize>,
    /// For a key hashed with a previous pepper: what its re-hash needs.
    pub(crate) rehash: Option<Box<Rehash>>,
    /// The requests the layer let through with this entry, not yet flushed.
    usage: DayCount,
    /// The networks the key may be used from; `None`: any address.
    pub(crate) allowed_cidrs: Option<AllowedNetworks>,
}

impl Counted for CachedKey {
    fn key_id(&self) -> Uuid {
        self.key.key_id().into_inner()
    }

    fn day_count(&self) -> &DayCount {
        &self.usage
    }
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
                &record.public_key,
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
        entry.allowed_cidrs = record.allowed_cidrs;
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
            confirmed: now,
            fresh_until: now + ttl,
            evict_at: now.checked_add(evict_after),
            last_used,
            pepper: Some(0),
            rehash: None,
            usage: DayCount::default(),
            allowed_cidrs: None,
        }
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Whether the entry is past its lifetime in the cache.
    fn is_evicted(&self, now: Instant) -> bool {
        self.evict_at.is_some_and(|at| now >= at)
    }
}

/// When an entry was made and how long it stays fresh, then stale.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    pub(crate) now: Instant,
    pub(crate) ttl: Duration,
    pub(crate) stale_grace: Duration,
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
/// caller (see [`super::flight`]): this type only stores.
pub(crate) struct KeyCache {
    positive: Cache<PublicKeyBytes, Arc<CachedKey>>,
    /// Unknown public keys, each with the end of its negative TTL (`None`:
    /// never, a TTL too long for the clock).
    negative: Cache<PublicKeyBytes, Option<Instant>>,
    negative_ttl: Duration,
}

impl KeyCache {
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            positive: Cache::new(capacity(config.capacity)),
            negative: Cache::new(capacity(config.negative_capacity)),
            negative_ttl: config.negative_ttl,
        }
    }

    /// The entry for `public_key`, unless there is none or it is past its
    /// lifetime at `now` (then it is removed).
    pub(crate) fn get(&self, public_key: &str, now: Instant) -> Option<Arc<CachedKey>> {
        let key = PublicKeyBytes::new(public_key)?;
        let entry = self.positive.get(&key)?;
        if entry.is_evicted(now) {
            // Only this entry: one cached since by a newer lookup stays.
            self.positive
                .remove_if(&key, |cached| Arc::ptr_eq(cached, &entry));
            return None;
        }
        Some(entry)
    }

    /// Whether `public_key` is remembered as unknown at `now`.
    pub(crate) fn is_known_unknown(&self, public_key: &str, now: Instant) -> bool {
        let Some(key) = PublicKeyBytes::new(public_key) else {
            return false;
        };
        let Some(until) = self.negative.get(&key) else {
            return false;
        };
        if until.is_some_and(|until| now >= until) {
            self.negative.remove_if(&key, |cached| *cached == until);
            return false;
        }
        true
    }

    /// Caches a key the store knows (and forgets it as unknown).
    pub(crate) fn insert_known(&self, public_key: &str, entry: Arc<CachedKey>) {
        let Some(key) = PublicKeyBytes::new(public_key) else {
            return;
        };
        self.negative.remove(&key);
        self.positive.insert(key, entry);
    }

    /// Remembers that the store does not know `public_key`, and forgets any
    /// entry for it as known (it was deleted behind this process's back: a
    /// later outage must not serve it as stale-if-error).
    pub(crate) fn insert_unknown(&self, public_key: &str) {
        let Some(key) = PublicKeyBytes::new(public_key) else {
            return;
        };
        self.positive.remove(&key);
        let until = Instant::now().checked_add(self.negative_ttl);
        self.negative.insert(key, until);
    }

    /// Forgets everything about `public_key`, in both caches.
    pub(crate) fn remove(&self, public_key: &str) {
        let Some(key) = PublicKeyBytes::new(public_key) else {
            return;
        };
        self.positive.remove(&key);
        self.negative.remove(&key);
    }

    /// Forgets everything.
    pub(crate) fn clear(&self) {
        self.positive.clear();
        self.negative.clear();
    }

    /// Entry counts, after dropping the entries past their lifetime.
    pub(crate) fn entry_counts(&self) -> CachedEntries {
        let now = Instant::now();
        self.positive.retain(|_, entry| !entry.is_evicted(now));
        self.negative
            .retain(|_, until| until.is_none_or(|until| now < until));
        CachedEntries {
            known: self.positive.len() as u64,
            unknown: self.negative.len() as u64,
        }
    }
}

/// A configured capacity as the map takes it.
fn capacity(configured: u64) -> usize {
    usize::try_from(configured).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::identity::{AccountId, ApiKeyId};

    const TTL: Duration = Duration::from_secs(60);
    const A: &str = "pk_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "pk_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const GRACE: Duration = Duration::from_secs(300);

    fn entry(now: Instant, expires_at: Option<Instant>) -> CachedKey {
        CachedKey::new(
            AuthenticatedKey::new(
                AccountId::new(Uuid::new_v4()),
                ApiKeyId::new(Uuid::new_v4()),
                "pk_x",
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
        assert_eq!(entry.evict_at, Some(now + TTL + GRACE));
        assert!(!entry.is_expired(now + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn an_entry_never_outlives_a_future_expiry() {
        let now = Instant::now();
        let expires = now + Duration::from_secs(5);
        let entry = entry(now, Some(expires));
        assert_eq!(entry.evict_at, Some(expires));
        assert!(!entry.is_expired(now));
        assert!(entry.is_expired(expires));
    }

    #[test]
    fn an_already_expired_key_is_cached_like_any_refused_key() {
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let entry = entry(later, Some(now));
        assert_eq!(entry.evict_at, Some(later + TTL + GRACE));
        assert!(entry.is_expired(now + Duration::from_secs(10)));
    }

    #[test]
    fn known_and_unknown_exclude_each_other() {
        let cache = cache();
        cache.insert_unknown(A);
        assert!(cache.is_known_unknown(A, Instant::now()));
        cache.insert_known(A, Arc::new(entry(Instant::now(), None)));
        assert!(cache.get(A, Instant::now()).is_some());
        assert!(!cache.is_known_unknown(A, Instant::now()));
        cache.insert_unknown(A);
        assert!(cache.get(A, Instant::now()).is_none());
        assert!(cache.is_known_unknown(A, Instant::now()));
    }

    #[test]
    fn remove_and_clear_forget_both_kinds() {
        let cache = cache();
        cache.insert_known(A, Arc::new(entry(Instant::now(), None)));
        cache.insert_unknown(B);
        cache.remove(A);
        assert!(cache.get(A, Instant::now()).is_none());
        assert_eq!(
            cache.entry_counts(),
            CachedEntries {
                known: 0,
                unknown: 1
            }
        );
        cache.insert_known(A, Arc::new(entry(Instant::now(), None)));
        cache.clear();
        assert_eq!(cache.entry_counts(), CachedEntries::default());
    }

    #[test]
    fn an_entry_past_its_lifetime_reads_as_absent_and_is_removed() {
        let cache = cache();
        let past = Instant::now() - Duration::from_secs(1);
        // Expired a second ago: kept until then, no longer.
        cache.insert_known(A, Arc::new(entry(past - TTL, Some(past))));
        cache.insert_known(B, Arc::new(entry(Instant::now(), None)));
        assert_eq!(cache.positive.len(), 2);
        assert!(cache.get(A, Instant::now()).is_none());
        assert_eq!(cache.positive.len(), 1);
        assert!(cache.get(B, Instant::now()).is_some());
    }

    #[test]
    fn an_unknown_key_is_forgotten_after_the_negative_ttl() {
        let cache = KeyCache::new(CacheConfig {
            capacity: 100,
            negative_capacity: 100,
            negative_ttl: Duration::ZERO,
        });
        cache.insert_unknown(A);
        assert!(!cache.is_known_unknown(A, Instant::now()));
        assert_eq!(cache.entry_counts(), CachedEntries::default());
    }

    #[test]
    fn a_capacity_of_zero_does_not_panic() {
        let cache = KeyCache::new(CacheConfig {
            capacity: 0,
            negative_capacity: 0,
            negative_ttl: Duration::from_secs(30),
        });
        cache.insert_known(A, Arc::new(entry(Instant::now(), None)));
        cache.insert_unknown(B);
        let _ = cache.get(A, Instant::now());
        let _ = cache.is_known_unknown(B, Instant::now());
        let counts = cache.entry_counts();
        assert!(counts.known <= 1 && counts.unknown <= 1, "{counts:?}");
    }

    #[test]
    fn only_keys_of_the_credential_shape_are_cached() {
        assert_eq!(A.len(), crate::key::KEY_LEN);
        let cache = cache();
        cache.insert_known("pk_short", Arc::new(entry(Instant::now(), None)));
        cache.insert_unknown("pk_short");
        assert!(cache.get("pk_short", Instant::now()).is_none());
        assert!(!cache.is_known_unknown("pk_short", Instant::now()));
        assert_eq!(cache.entry_counts(), CachedEntries::default());
    }

    #[test]
    fn the_caches_stay_within_their_capacity() {
        let cache = cache();
        for index in 0..1_000 {
            let key = format!("pk_{index:032}");
            cache.insert_known(&key, Arc::new(entry(Instant::now(), None)));
            cache.insert_unknown(&format!("pk_{:032}", index + 1_000_000));
        }
        let CachedEntries { known, unknown } = cache.entry_counts();
        assert!(known <= 100, "{known} known");
        assert!(unknown <= 100, "{unknown} unknown");
    }
}
