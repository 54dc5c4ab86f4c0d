//! Validation of credentials against the store, through the cache.
//!
//! [`ApiKeyValidator`] reads top to bottom as a request goes: parse the
//! credential, answer from the cache if it can, otherwise join (or start) the
//! key's single flight to the store, cache the answer, and verify the secret.

mod access;
pub(crate) mod admission;
mod builder;
mod cache;
mod day_count;
mod flight;
mod verify;
mod writer;

pub use self::builder::ValidatorBuilder;
pub use self::cache::CachedEntries;

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use uuid::Uuid;

use self::{
    admission::Limits,
    cache::{CachedKey, Freshness, KeyCache},
    flight::{Flight, Flights},
    writer::{BatchWriter, flusher::Flusher},
};
use crate::{
    feed::{Evict, Feed, FeedStatus},
    identity::AuthenticatedKey,
    key::hash::SecretHash,
    key::ring::{Hashers, PepperRing},
    key::{Credential, KeyPrefix},
    policy::TrustedProxies,
    policy::rejection::Rejection,
    store::{ApiKeyRepository, Store, StoreError},
    telemetry::Telemetry,
};

/// An authenticated key, with the cache entry it was checked against (which
/// counts the key's requests, see [`admission`]).
pub(crate) struct Hit {
    pub(crate) key: AuthenticatedKey,
    pub(crate) entry: Arc<CachedKey>,
}

/// Most keys remembered as already warned about an unknown pepper.
const MAX_WARNED_KEYS: usize = 10_000;

/// Checks credentials: parses them, looks the public key up in the cache or the
/// store, and verifies the secret's HMAC in constant time.
///
/// One validator is shared (it is an `Arc` inside) by the layer and the key
/// manager, so that revoking or deleting a key evicts it from the very cache the
/// layer reads.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use tower_api_keys::{ApiKeyValidator, Pepper, store::MemoryRepository};
///
/// let validator = ApiKeyValidator::builder(
///     MemoryRepository::new(),
///     Pepper::try_from("a-pepper-of-at-least-16-bytes")?,
/// )
/// .with_positive_ttl(Duration::from_secs(30))
/// .build();
/// assert!(validator.validate("pk_nope").await.is_err());
/// validator.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ApiKeyValidator {
    inner: Arc<Inner>,
}

struct Inner {
    hashers: Hashers,
    /// Compared against when there is no stored hash, so that every refusal costs
    /// one HMAC.
    dummy_hash: SecretHash,
    store: Store,
    cache: KeyCache,
    flights: Flights<StoreAnswer>,
    writer: Arc<BatchWriter>,
    flusher: Option<Flusher>,
    /// Keys already logged as naming a pepper the validator does not hold.
    warned_peppers: Mutex<HashSet<Uuid>>,
    /// Set once, right after the validator is built (the feed holds a weak
    /// reference to it).
    feed: OnceLock<Feed>,
    positive_ttl: Duration,
    /// Shorter than the positive TTL when set: how long an entry is trusted
    /// while the change feed is down.
    feed_down_ttl: Option<Duration>,
    stale_if_error: Duration,
    limits: Limits,
    /// The host's key prefix, for the token form.
    key_prefix: Option<KeyPrefix>,
    /// Whose `X-Forwarded-For` is believed.
    trusted_proxies: Option<TrustedProxies>,
    telemetry: Telemetry,
}

impl ApiKeyValidator {
    /// A validator over `repository` with every default. `peppers` is a
    /// [`Pepper`](crate::Pepper), or a [`PepperRing`] while a pepper is being
    /// rotated.
    pub fn new(repository: impl ApiKeyRepository, peppers: impl Into<PepperRing>) -> Self {
        Self::builder(repository, peppers).build()
    }

    /// Starts configuring a validator over `repository` (see [`Self::new`]).
    pub fn builder(
        repository: impl ApiKeyRepository,
        peppers: impl Into<PepperRing>,
    ) -> ValidatorBuilder {
        ValidatorBuilder::new(repository, peppers.into())
    }

    /// The host's key prefix, if one is configured
    /// ([`ValidatorBuilder::with_key_prefix`]).
    pub fn key_prefix(&self) -> Option<&KeyPrefix> {
        self.inner.key_prefix.as_ref()
    }

    /// The client address of a request, as a key's allowlist sees it: the
    /// peer address the server put in the request's extensions (axum's
    /// `ConnectInfo<SocketAddr>`, a [`PeerAddr`](crate::PeerAddr) or a
    /// `SocketAddr`), or, when the peer is a trusted proxy
    /// ([`ValidatorBuilder::with_trusted_proxies`]), the rightmost
    /// `X-Forwarded-For` entry that is not one. `None` when unknown.
    pub fn client_address(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
    ) -> Option<std::net::IpAddr> {
        crate::policy::client::client_address(
            extensions,
            headers,
            self.inner.trusted_proxies.as_ref(),
        )
    }

    /// Validates a whole credential: `pk_…:sk_…`, or the token `P_…` when a
    /// key prefix is configured.
    pub async fn validate(&self, credential: &str) -> Result<AuthenticatedKey, Rejection> {
        let credential = self.parse(credential)?;
        match self.check_cached(&credential, Instant::now()) {
            Some(result) => result.map(|hit| hit.key),
            None => self
                .check_store(credential.public_key(), credential.secret_key())
                .await
                .map(|hit| hit.key),
        }
    }

    /// The crate's one parse of a whole credential, for every caller that
    /// takes one as text (validation, leak reports).
    pub(crate) fn parse<'a>(&self, credential: &'a str) -> Result<Credential<'a>, Rejection> {
        Credential::parse_with_prefix(credential, self.key_prefix())
            .map_err(|_| Rejection::MalformedCredential)
    }

    /// Answers from the cache alone, without awaiting: `None` when the store must
    /// be asked (not cached, or cached but past its TTL). `now` is the
    /// request's one clock reading.
    pub(crate) fn check_cached(
        &self,
        credential: &Credential<'_>,
        now: Instant,
    ) -> Option<Result<Hit, Rejection>> {
        let inner = &*self.inner;
        if let Some(entry) = inner.cache.get(credential.public_key(), now) {
            if inner.is_trusted(&entry, now) {
                inner.telemetry.hit.increment(1);
                return Some(self.check_entry(entry, credential.secret_key(), now));
            }
            inner.telemetry.miss.increment(1);
            return None;
        }
        if inner.cache.is_known_unknown(credential.public_key(), now) {
            inner.telemetry.negative_hit.increment(1);
            inner
                .hashers
                .current()
                .verify(credential.secret_key(), &inner.dummy_hash);
            return Some(Err(Rejection::InvalidCredential));
        }
        inner.telemetry.miss.increment(1);
        None
    }

    /// Looks the key up in the store and caches what it finds.
    ///
    /// Single flight: concurrent misses for the same public key share one store
    /// lookup; each request still verifies its own secret against the result.
    /// Misses for different keys do not wait for each other. A request that
    /// arrives after an invalidation of its key never joins a lookup that
    /// started before it.
    pub(crate) async fn check_store(
        &self,
        public_key: &str,
        secret_key: &str,
    ) -> Result<Hit, Rejection> {
        let inner = &*self.inner;
        let flight = inner.flights.join(public_key);
        let answer = flight
            .answer(|| self.lookup(public_key, &flight))
            .await
            .clone();
        drop(flight);
        let now = Instant::now();
        match answer {
            StoreAnswer::Found(entry) => self.check_entry(entry, secret_key, now),
            StoreAnswer::Unknown => {
                inner
                    .hashers
                    .current()
                    .verify(secret_key, &inner.dummy_hash);
                Err(Rejection::InvalidCredential)
            }
            // Stale-if-error: a cached entry outlives its trust by the grace
            // period while the store cannot answer.
            StoreAnswer::Failed => match inner.cache.get(public_key, now) {
                Some(entry) if !entry.is_expired(now) && inner.is_servable_stale(&entry, now) => {
                    self.check_entry(entry, secret_key, now)
                }
                _ => {
                    inner
                        .hashers
                        .current()
                        .verify(secret_key, &inner.dummy_hash);
                    Err(Rejection::StoreUnavailable)
                }
            },
        }
    }

    /// One store lookup, cached unless an invalidation of the key ran since the
    /// flight started. Runs once per flight.
    async fn lookup(&self, public_key: &str, flight: &Flight<StoreAnswer>) -> StoreAnswer {
        let inner = &*self.inner;
        // A flight that just landed may have answered already.
        let now = Instant::now();
        if let Some(entry) = inner.cache.get(public_key, now)
            && inner.is_trusted(&entry, now)
        {
            return StoreAnswer::Found(entry);
        }
        if inner.cache.is_known_unknown(public_key, now) {
            return StoreAnswer::Unknown;
        }
        match inner.store.find_by_public_key(public_key).await {
            // A case-insensitive collation (MySQL) may match another spelling:
            // only the exact public key is this key.
            Ok(Some(record)) if record.public_key == public_key => {
                let last_used = record
                    .last_used_at
                    .max(inner.writer.pending_for(record.key_id));
                let freshness = Freshness {
                    now: Instant::now(),
                    ttl: inner.positive_ttl,
                    stale_grace: inner.stale_if_error,
                };
                let entry = CachedKey::from_record(record, freshness, last_used, &inner.hashers);
                if entry.pepper.is_none() {
                    self.warn_unknown_pepper(&entry);
                }
                let entry = Arc::new(entry);
                flight.land(|current| {
                    if current {
                        inner.cache.insert_known(public_key, Arc::clone(&entry));
                    }
                });
                StoreAnswer::Found(entry)
            }
            Ok(_) => {
                flight.land(|current| {
                    if current {
                        inner.cache.insert_unknown(public_key);
                    }
                });
                StoreAnswer::Unknown
            }
            Err(err) => {
                flight.land(|_| ());
                tracing::warn!(public_key, error = %err, "API key lookup failed");
                StoreAnswer::Failed
            }
        }
    }

    /// Forgets `public_key` in the cache (known and unknown), so that the next
    /// request asks the store. A lookup already in flight will not put an older
    /// answer back. The key manager calls this on revoke and delete.
    pub fn invalidate(&self, public_key: &str) {
        self.inner.evict(public_key);
    }

    /// Empties the cache. Lookups under way will not put older answers back.
    pub fn invalidate_all(&self) {
        self.inner.evict_all();
    }

    /// Approximate number of cached public keys, known and unknown.
    pub fn cached_entries(&self) -> CachedEntries {
        self.inner.cache.entry_counts()
    }

    /// Writes every recorded `last_used_at` now, in one batch; returns how many
    /// keys were written. On failure they stay pending for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        self.inner.writer.flush().await
    }

    /// The change feed's state: connected or not, changes seen, lag. `None`
    /// when the validator has no feed (turned off, a repository without one, or
    /// built outside a tokio runtime).
    pub fn change_feed(&self) -> Option<FeedStatus> {
        self.inner.feed.get().map(Feed::status)
    }

    /// Stops the change feed, and the periodic flusher after a final flush.
    /// Call it on shutdown so that no recorded use is lost. The validator keeps
    /// validating afterwards; later uses need an explicit
    /// [`flush`](Self::flush), and changes made elsewhere reach it within the
    /// positive TTL.
    pub async fn shutdown(&self) {
        if let Some(feed) = self.inner.feed.get() {
            feed.shutdown().await;
        }
        match &self.inner.flusher {
            Some(flusher) => flusher.shutdown().await,
            None => {
                let _ = self.flush().await;
            }
        }
        // Anything recorded while the flusher was stopping.
        if self.inner.writer.pending_len() > 0 {
            let _ = self.flush().await;
        }
    }
}

impl Inner {
    /// Whether `entry` may be served without asking the store: within the
    /// positive TTL of its read, and within the feed-down TTL while the
    /// change feed is down (one atomic load, and only when that TTL is the
    /// shorter one).
    fn is_trusted(&self, entry: &CachedKey, now: Instant) -> bool {
        now < entry.fresh_until
            && match self.feed_down_ttl {
                Some(ttl) => self.feed_is_up() || now < entry.confirmed + ttl,
                None => true,
            }
    }

    /// Whether `entry`, past its trust, may still be served because the store
    /// cannot answer: for the stale-if-error window after its trust ended.
    fn is_servable_stale(&self, entry: &CachedKey, now: Instant) -> bool {
        let trust = match self.feed_down_ttl {
            Some(ttl) if !self.feed_is_up() => ttl,
            _ => self.positive_ttl,
        };
        entry
            .confirmed
            .checked_add(trust.saturating_add(self.stale_if_error))
            .is_none_or(|until| now < until)
    }

    /// Whether the change feed works now; a validator without a feed has
    /// nothing to miss.
    fn feed_is_up(&self) -> bool {
        self.feed.get().is_none_or(Feed::is_up)
    }
}

impl Evict for Inner {
    fn evict(&self, public_key: &str) {
        self.flights
            .retire(public_key, || self.cache.remove(public_key));
    }

    fn evict_all(&self) {
        self.flights.retire_all(|| self.cache.clear());
    }
}

/// What one store lookup found, shared by every request of its flight.
#[derive(Clone)]
enum StoreAnswer {
    Found(Arc<CachedKey>),
    Unknown,
    Failed,
}

impl fmt::Debug for ApiKeyValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyValidator")
            .field("positive_ttl", &self.inner.positive_ttl)
            .field("feed_down_ttl", &self.inner.feed_down_ttl)
            .field("stale_if_error", &self.inner.stale_if_error)
            .field("store_timeout", &self.inner.store.timeout())
            .field("key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use futures_util::FutureExt;
    use uuid::Uuid;

    use super::*;
    use crate::{
        key::KeyPair,
        testing::fixtures::{Scripted, pepper, row},
    };

    #[tokio::test]
    async fn cancelled_lookups_leave_no_flight_behind() {
        let repository = Scripted::default();
        repository.stalled.store(true, Ordering::SeqCst);
        let validator = ApiKeyValidator::new(repository.clone(), pepper());
        for _ in 0..10_000 {
            let credential = KeyPair::generate().unwrap().credential();
            // Polled once (the lookup starts and stalls), then dropped, as a
            // disconnected client's request is.
            let request = tokio::task::unconstrained(validator.validate(&credential));
            assert!(request.now_or_never().is_none());
        }
        assert_eq!(repository.lookups(), 10_000);
        assert_eq!(validator.inner.flights.len(), 0);
    }

    #[tokio::test]
    async fn a_key_deleted_elsewhere_is_not_served_stale_in_a_later_outage() {
        let repository = Scripted::default();
        let validator = ApiKeyValidator::builder(repository.clone(), pepper())
            .with_positive_ttl(Duration::from_millis(20))
            .with_stale_if_error(Duration::from_secs(300))
            .build();
        let pair = KeyPair::generate().unwrap();
        let record = row(&pair, Uuid::new_v4());
        repository.inner.insert(record.clone()).await.unwrap();
        assert!(validator.validate(&pair.credential()).await.is_ok());

        // Deleted by another process; the store says so once the entry is stale.
        repository
            .inner
            .delete(record.account_id, record.key_id, &Default::default())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            validator.validate(&pair.credential()).await,
            Err(Rejection::InvalidCredential)
        );
        // Then the store fails: the old entry must not come back as stale-if-error.
        validator.invalidate_all();
        repository.failing.store(true, Ordering::SeqCst);
        assert_eq!(
            validator.validate(&pair.credential()).await,
            Err(Rejection::StoreUnavailable)
        );
    }

    #[tokio::test]
    async fn stale_if_error_zero_fails_closed_once_the_trust_ends() {
        let repository = Scripted::default();
        let pair = KeyPair::generate().unwrap();
        repository
            .inner
            .insert(row(&pair, Uuid::new_v4()))
            .await
            .unwrap();
        let build = |stale| {
            ApiKeyValidator::builder(repository.clone(), pepper())
                .with_positive_ttl(Duration::from_millis(20))
                .with_stale_if_error(stale)
                .build()
        };
        let closed = build(Duration::ZERO);
        let grace = build(Duration::from_secs(300));
        for validator in [&closed, &grace] {
            assert!(validator.validate(&pair.credential()).await.is_ok());
        }
        repository.failing.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            closed.validate(&pair.credential()).await.map(|_| ()),
            Err(Rejection::StoreUnavailable)
        );
        assert!(grace.validate(&pair.credential()).await.is_ok());
    }

    #[tokio::test]
    async fn a_row_found_under_another_spelling_is_unknown() {
        let repository = Scripted::default();
        let validator = ApiKeyValidator::new(repository.clone(), pepper());
        let pair = KeyPair::generate().unwrap();
        let record = row(&pair, Uuid::new_v4());
        // A case-insensitive collation: any spelling finds the row.
        repository.answer_with(move |public_key| {
            public_key
                .eq_ignore_ascii_case(&record.public_key)
                .then(|| record.clone())
        });
        let credential = pair.credential();
        let swapped: String = credential[..35]
            .chars()
            .map(|c| {
                if c.is_ascii_lowercase() {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        let swapped = format!("pk_{}{}", &swapped[3..], &credential[35..]);
        assert_ne!(swapped, credential);
        assert_eq!(
            validator.validate(&swapped).await,
            Err(Rejection::InvalidCredential)
        );
        assert!(validator.validate(&credential).await.is_ok());
        // Each spelling is cached on its own: the right one as known.
        assert_eq!(
            validator.cached_entries(),
            CachedEntries {
                known: 1,
                unknown: 1
            }
        );
    }
}
