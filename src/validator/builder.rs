//! [`ValidatorBuilder`]: every setting of a validator, with its default, and
//! the assembly of the parts.

use std::{
    fmt,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use super::{
    ApiKeyValidator, Inner,
    admission::Limits,
    cache::{CacheConfig, KeyCache},
    flight::Flights,
    writer::{BatchWriter, flusher::Flusher},
};
use crate::{
    feed::{ChangeSource, Evict, Feed},
    key::KeyPrefix,
    key::ring::{Hashers, PepperId, PepperRing},
    policy::TrustedProxies,
    ratelimit::{RateLimit, RateLimiter},
    store::{ApiKeyRepository, Store},
};

/// The default store timeout.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Configures an [`ApiKeyValidator`]. Every setting has a default, given with
/// its method.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_api_keys::{ApiKeyValidator, Pepper, RateLimit, RateLimiter, store::SeaOrmRepository};
///
/// let repository = SeaOrmRepository::connect("sqlite::memory:").await?;
/// let pepper = Pepper::try_from("a-pepper-of-at-least-16-bytes")?;
/// let validator = ApiKeyValidator::builder(repository, pepper)
///     // A revocation made by another process reaches this one within 30 s
///     // (at once with the change feed, on by default for `SeaOrmRepository`).
///     .with_positive_ttl(Duration::from_secs(30))
///     .with_store_timeout(Duration::from_millis(500))
///     // Fail closed: no grace for cached keys while the store is unreachable.
///     .with_stale_if_error(Duration::ZERO)
///     // 100 requests a minute for keys without a limit of their own, counted
///     // in this process.
///     .with_rate_limiter(RateLimiter::in_process())
///     .with_default_rate_limit(RateLimit::new(100, 60)?)
///     .build();
/// # validator.shutdown().await;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ValidatorBuilder {
    store: Store,
    change_source: Option<ChangeSource>,
    change_feed: bool,
    poll_interval: Duration,
    peppers: PepperRing,
    positive_ttl: Duration,
    feed_down_ttl: Option<Duration>,
    capacity: u64,
    negative_ttl: Duration,
    negative_capacity: u64,
    last_used_throttle: Duration,
    flush_interval: Duration,
    store_timeout: Duration,
    stale_if_error: Duration,
    limiter: Option<RateLimiter>,
    default_rate_limit: Option<RateLimit>,
    key_prefix: Option<KeyPrefix>,
    trusted_proxies: Option<TrustedProxies>,
}

impl ValidatorBuilder {
    /// How long a known key stays cached: default **60 s**, and never past the
    /// key's `expires_at`. This bounds how long a revocation made by *another*
    /// process takes to reach this one; revocations through this process's
    /// [`KeyManager`](crate::KeyManager) take effect at once.
    pub fn with_positive_ttl(mut self, ttl: Duration) -> Self {
        self.positive_ttl = ttl;
        self
    }

    /// Most known keys kept in the cache: default **100,000**.
    pub fn with_cache_capacity(mut self, capacity: u64) -> Self {
        self.capacity = capacity;
        self
    }

    /// How long a well-formed but unknown public key is remembered as unknown:
    /// default **30 s**.
    pub fn with_negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = ttl;
        self
    }

    /// Most unknown public keys remembered: default **10,000**. This cache is
    /// separate from the known keys, so a flood of random keys never evicts a
    /// valid one.
    pub fn with_negative_capacity(mut self, capacity: u64) -> Self {
        self.negative_capacity = capacity;
        self
    }

    /// `last_used_at` is recorded at most once per key per this interval:
    /// default **900 s** (as the reference service).
    pub fn with_last_used_throttle(mut self, throttle: Duration) -> Self {
        self.last_used_throttle = throttle;
        self
    }

    /// How often recorded `last_used_at` values are written, in one batch:
    /// default **10 s**. The periodic flush runs only when the validator is built
    /// inside a tokio runtime; [`ApiKeyValidator::flush`] works everywhere.
    pub fn with_flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// Longest wait for one store call before it counts as failed: default **2 s**.
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// How long a cached key is trusted without a store check while the
    /// change feed is down (the listener lost its connection, or polls fail):
    /// default **the positive TTL**. A shorter value makes a replica whose
    /// feed is down read keys again sooner; a longer one has no effect (the
    /// positive TTL always holds). Counted from the key's last read.
    pub fn with_feed_down_ttl(mut self, ttl: Duration) -> Self {
        self.feed_down_ttl = Some(ttl);
        self
    }

    /// Stale-if-error: how long a cached key keeps validating after its trust
    /// ended (the positive TTL, or the feed-down TTL while the feed is down)
    /// when the store cannot answer the lookup that would confirm it: default
    /// **300 s**. Never past the key's `expires_at`. `Duration::ZERO` fails
    /// closed: once its trust ends, a key is refused with `503` while the
    /// store is unreachable.
    ///
    /// This is separate from the change feed: it answers a store outage, not a
    /// feed outage. While both are down, a key revoked elsewhere may validate
    /// here for its trust plus this window.
    pub fn with_stale_if_error(mut self, grace: Duration) -> Self {
        self.stale_if_error = grace;
        self
    }

    /// Where per-key rate limits are counted: default an in-process limiter
    /// ([`RateLimiter::in_process`]), so that with N replicas a key gets N
    /// times its limit;
    #[cfg_attr(feature = "redis", doc = "[`RateLimiter::redis`] (feature `redis`)")]
    #[cfg_attr(not(feature = "redis"), doc = "`RateLimiter::redis` (feature `redis`)")]
    /// makes the limits hold for the whole cluster. Shared by every layer over
    /// this validator, so a key has one budget across routes.
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// The limit of keys that have none of their own: default **none** (such
    /// keys are not limited). A key's own `rate_limit` always wins.
    pub fn with_default_rate_limit(mut self, limit: RateLimit) -> Self {
        self.default_rate_limit = Some(limit);
        self
    }

    /// The host's key prefix `P`: default **none**. With one, every key also
    /// has a token form `P_…` (CONTRACT §14.1) that is accepted wherever
    /// `pk_…:sk_…` is (`X-API-Key`, `Bearer`, revocation by the holder), and
    /// that [`KeyManager`](crate::KeyManager) hands out on create and rotate.
    /// A token of another prefix or with a wrong checksum is malformed,
    /// refused before any lookup.
    ///
    /// ```
    /// use tower_api_keys::{ApiKeyValidator, KeyPrefix, Pepper, store::MemoryRepository};
    ///
    /// let validator = ApiKeyValidator::builder(
    ///     MemoryRepository::new(),
    ///     Pepper::try_from("a-pepper-of-at-least-16-bytes")?,
    /// )
    /// .with_key_prefix(KeyPrefix::new("acme")?)
    /// .build();
    /// assert_eq!(validator.key_prefix().map(KeyPrefix::as_str), Some("acme"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_key_prefix(mut self, prefix: KeyPrefix) -> Self {
        self.key_prefix = Some(prefix);
        self
    }

    /// The proxies and load balancers in front of the host: default **none**,
    /// and then `X-Forwarded-For` is never read. With them, a request whose
    /// peer is one of them has as its client address the rightmost
    /// `X-Forwarded-For` entry that is not a trusted proxy — what a key's
    /// allowlist ([`NewApiKey::with_allowed_cidrs`](crate::NewApiKey::with_allowed_cidrs))
    /// is checked against. Name only proxies that set or append the header
    /// themselves: a client connecting directly could otherwise claim any
    /// address.
    ///
    /// ```
    /// use tower_api_keys::{ApiKeyValidator, Pepper, TrustedProxies, store::MemoryRepository};
    ///
    /// let validator = ApiKeyValidator::builder(
    ///     MemoryRepository::new(),
    ///     Pepper::try_from("a-pepper-of-at-least-16-bytes")?,
    /// )
    /// .with_trusted_proxies("10.0.0.0/8, 127.0.0.1".parse::<TrustedProxies>()?)
    /// .build();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_trusted_proxies(mut self, proxies: TrustedProxies) -> Self {
        self.trusted_proxies = Some(proxies);
        self
    }

    /// Whether the validator follows the store's change feed, so that a key
    /// changed by any writer (another replica, the reference service, plain
    /// SQL) is dropped from this process's cache at once: default **on** when
    /// the repository has a feed (the crate's [`SeaOrmRepository`] on every
    /// backend; see [`crate::feed`]). Off, a change made elsewhere reaches this
    /// process within the positive TTL.
    ///
    /// [`SeaOrmRepository`]: crate::store::SeaOrmRepository
    pub fn with_change_feed(mut self, enabled: bool) -> Self {
        self.change_feed = enabled;
        self
    }

    /// How often the change log is polled on MySQL/MariaDB and SQLite: default
    /// **1 s** (PostgreSQL pushes changes and is not polled).
    pub fn with_change_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Builds the validator and, inside a tokio runtime, starts its batch
    /// writer's flusher and its change feed, and checks once that no key names
    /// a pepper missing from the ring (a warning with the counts if one does).
    pub fn build(self) -> ApiKeyValidator {
        let hashers = Hashers::new(&self.peppers);
        let dummy_hash = hashers
            .current()
            .hash("sk_00000000000000000000000000000000");
        let store = self.store.with_timeout(self.store_timeout);
        let writer = Arc::new(BatchWriter::new(store.clone(), self.last_used_throttle));
        let flusher = Flusher::spawn(Arc::clone(&writer), self.flush_interval);
        let validator = ApiKeyValidator {
            inner: Arc::new(Inner {
                hashers,
                dummy_hash,
                store,
                cache: KeyCache::new(CacheConfig {
                    capacity: self.capacity,
                    negative_capacity: self.negative_capacity,
                    negative_ttl: self.negative_ttl,
                }),
                flights: Flights::default(),
                writer,
                flusher,
                warned_peppers: Mutex::default(),
                feed: OnceLock::new(),
                positive_ttl: self.positive_ttl,
                feed_down_ttl: self.feed_down_ttl.filter(|ttl| *ttl < self.positive_ttl),
                stale_if_error: self.stale_if_error,
                key_prefix: self.key_prefix,
                trusted_proxies: self.trusted_proxies,
                telemetry: crate::telemetry::Telemetry::register(),
                limits: Limits {
                    limiter: self.limiter.unwrap_or_default(),
                    default: self.default_rate_limit,
                },
            }),
        };
        warn_of_missing_peppers(&validator.inner.store, &self.peppers);
        if let Some(source) = self.change_source.filter(|_| self.change_feed) {
            let target: Weak<dyn Evict> = Arc::downgrade(&validator.inner) as Weak<dyn Evict>;
            if let Some(feed) = Feed::spawn(source, target, self.poll_interval) {
                let _ = validator.inner.feed.set(feed);
            }
        }
        validator
    }
}

/// Counts the keys per pepper in the background and warns about those whose
/// pepper the ring lacks: they will be refused (a configuration mistake while
/// rotating, most likely).
fn warn_of_missing_peppers(store: &Store, peppers: &PepperRing) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (store, ring): (Store, Vec<PepperId>) = (store.clone(), peppers.ids().cloned().collect());
    runtime.spawn(async move {
        match store.count_by_pepper().await {
            Ok(counts) => {
                for count in counts {
                    let Some(id) = count.pepper_id else { continue };
                    if count.keys > 0 && !ring.iter().any(|known| known.as_str() == id) {
                        tracing::warn!(
                            pepper_id = %id,
                            keys = count.keys,
                            "keys were hashed with a pepper this validator does not hold; \
                             they are refused until it is configured (as a previous pepper)"
                        );
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "counting keys per pepper failed"),
        }
    });
}

impl fmt::Debug for ValidatorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorBuilder")
            .field("positive_ttl", &self.positive_ttl)
            .field("feed_down_ttl", &self.feed_down_ttl)
            .field("capacity", &self.capacity)
            .field("negative_ttl", &self.negative_ttl)
            .field("negative_capacity", &self.negative_capacity)
            .field("last_used_throttle", &self.last_used_throttle)
            .field("flush_interval", &self.flush_interval)
            .field("store_timeout", &self.store_timeout)
            .field("stale_if_error", &self.stale_if_error)
            .field(
                "change_feed",
                &self.change_source.as_ref().filter(|_| self.change_feed),
            )
            .field("poll_interval", &self.poll_interval)
            .field("peppers", &self.peppers)
            .field("key_prefix", &self.key_prefix)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl ValidatorBuilder {
    pub(super) fn new(repository: impl ApiKeyRepository, peppers: PepperRing) -> Self {
        Self {
            change_source: repository.change_source(),
            change_feed: true,
            poll_interval: Duration::from_secs(1),
            store: Store::new(repository, STORE_TIMEOUT),
            peppers,
            positive_ttl: Duration::from_secs(60),
            feed_down_ttl: None,
            capacity: 100_000,
            negative_ttl: Duration::from_secs(30),
            negative_capacity: 10_000,
            last_used_throttle: Duration::from_secs(900),
            flush_interval: Duration::from_secs(10),
            store_timeout: STORE_TIMEOUT,
            stale_if_error: Duration::from_secs(300),
            limiter: None,
            default_rate_limit: None,
            key_prefix: None,
            trusted_proxies: None,
        }
    }
}
