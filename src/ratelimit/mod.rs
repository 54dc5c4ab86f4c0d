//! Per-key rate limits (DECISIONS.md, "Rate limits in detail"): GCRA, `requests` per
//! `period_seconds` with bursts up to `requests`.
//!
//! A [`RateLimiter`] counts requests per key id, either in process memory
//! ([`RateLimiter::in_process`], one replica's view) or in Redis
#![cfg_attr(
    feature = "redis",
    doc = "([`RateLimiter::redis`], feature `redis`, one budget shared by every"
)]
#![cfg_attr(
    not(feature = "redis"),
    doc = "(`RateLimiter::redis`, feature `redis`, one budget shared by every"
)]
//! replica). Each check returns a [`Decision`]: allowed or not, what is left,
//! and when the budget comes back, ready for the `RateLimit-Policy`,
//! `RateLimit` and `Retry-After` headers. The limiter only ever sees key ids,
//! never secrets.
//!
//! ```
//! use tower_api_keys::{RateLimit, RateLimiter};
//! use uuid::Uuid;
//!
//! let limiter = RateLimiter::in_process();
//! let key = Uuid::new_v4();
//! let limit = RateLimit::new(3, 60).unwrap();
//! let remaining: Vec<u32> = (0..3)
//!     .map(|_| limiter.check_local(key, limit).unwrap().remaining)
//!     .collect();
//! assert_eq!(remaining, [2, 1, 0]);
//!
//! let refused = limiter.check_local(key, limit).unwrap();
//! assert!(!refused.allowed);
//! assert_eq!(refused.retry_after_seconds(), Some(20));
//! assert_eq!(refused.ratelimit_header(), r#""key";r=0;t=60"#);
//! ```

mod decision;
pub mod headers;
mod limit;
mod local;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
use std::time::Duration;
use std::{fmt, sync::Arc};

use uuid::Uuid;

pub use decision::Decision;
pub use limit::{RateLimit, RateLimitError, RateLimitJsonError};

use headers::Rated;
use local::Local;

/// Keys tracked at once by [`RateLimiter::in_process`].
pub const DEFAULT_MAX_KEYS: u64 = 100_000;

/// Counts requests per key id and decides whether each is within its key's
/// [`RateLimit`].
///
/// Cheap to clone: clones share their state.
#[derive(Clone)]
pub struct RateLimiter {
    /// The in-process limiter: the whole story without Redis, the fallback
    /// with it.
    local: Arc<Local>,
    #[cfg(feature = "redis")]
    redis: Option<redis::RedisBackend>,
}

/// What a Redis-backed [`RateLimiter`] does when Redis fails or does not answer
/// within
#[cfg_attr(feature = "redis", doc = "[`RateLimiter::redis_timeout`].")]
#[cfg_attr(
    not(feature = "redis"),
    doc = "`RateLimiter::redis_timeout` (feature `redis`)."
)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnRedisError {
    /// Decide with the in-process limiter for that request (each replica then
    /// enforces the limit on its own), count it in
    /// `tower_api_keys_ratelimit_fallbacks_total` and log a warning, at most
    /// one per 10 s.
    #[default]
    FallBack,
    /// Return [`RateLimitUnavailable`]; the host decides (typically a `503`).
    Refuse,
}

/// Redis failed or timed out and the limiter was told to
/// [`OnRedisError::Refuse`] rather than fall back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit store unavailable")]
pub struct RateLimitUnavailable;

/// Building a Redis-backed [`RateLimiter`] failed. The message never contains
/// a password: URLs in it are shown without `user:password@`.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimiterError {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid Redis URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, redacted.
        url: String,
        /// Why it was refused (passwords removed).
        reason: String,
    },
    /// Redis could not be reached or refused the connection.
    #[error("could not connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL, redacted.
        url: String,
        /// Why the connection failed (passwords removed).
        reason: String,
    },
}

impl RateLimiter {
    /// An in-process limiter tracking up to [`DEFAULT_MAX_KEYS`] (100 000)
    /// keys. Each replica counts on its own.
    pub fn in_process() -> Self {
        Self::in_process_with_capacity(DEFAULT_MAX_KEYS)
    }

    /// An in-process limiter tracking up to `max_keys` keys. Past `max_keys`,
    /// the least useful keys (those seen once, then the least recently used)
    /// are forgotten first and start again with a full budget.
    pub fn in_process_with_capacity(max_keys: u64) -> Self {
        Self {
            local: Arc::new(Local::new(max_keys)),
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    /// A limiter whose budgets live in Redis at `url` and are shared by every
    /// replica using the same Redis and [`key_prefix`](Self::key_prefix).
    ///
    /// `url` names one Redis server, or any one node of a Redis Cluster (cluster
    /// mode is detected at start with `INFO cluster`), or is a comma-separated
    /// list of a cluster's nodes, each a full `redis://` URL (see
    /// [`redis_cluster`](Self::redis_cluster); `rediss://` needs the `redis`
    /// crate's TLS support, which this crate does not enable). On a cluster, each key's
    /// budget lives on the master holding its slot and holds once for the whole
    /// cluster; the client follows `MOVED` redirects and reads the slot map
    /// again after a failover.
    ///
    /// Connects now, so a wrong URL or an unreachable server is reported at
    /// start-up (within about a second) rather than at the first request;
    /// later outages are handled per request as
    /// [`on_redis_error`](Self::on_redis_error) says, and the connection is
    /// re-established on demand. Needs Redis 5 or later (the script reads the
    /// server's clock with `TIME` before writing). To start without Redis being up,
    /// build a lazy manager (`ConnectionManager::new_lazy_with_config`) and
    /// pass it to [`redis_with`](Self::redis_with).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_api_keys::RateLimiterError> {
    /// use tower_api_keys::RateLimiter;
    ///
    /// let single = RateLimiter::redis("redis://127.0.0.1:6379").await?;
    /// // Any node of a cluster, or several:
    /// let cluster = RateLimiter::redis("redis://10.0.0.1:6379").await?;
    /// let cluster = RateLimiter::redis("redis://10.0.0.1:6379,redis://10.0.0.2:6379").await?;
    /// # let _ = (single, cluster);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`RateLimiterError`] when a URL is invalid or the connection fails.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn redis(url: &str) -> Result<Self, RateLimiterError> {
        let nodes = crate::telemetry::redact::url_list(url);
        if nodes.len() > 1 {
            return Self::redis_cluster(nodes).await;
        }
        let invalid = |e: ::redis::RedisError| {
            let mut reason = crate::telemetry::redact::redact_secrets(&e.to_string(), url);
            if url.contains(',') {
                reason.push_str(
                    "; a list of cluster nodes is comma-separated, each a full \
                     redis:// or rediss:// URL",
                );
            }
            RateLimiterError::InvalidUrl {
                url: crate::telemetry::redact::redact_url(url),
                reason,
            }
        };
        let connect = |e: ::redis::RedisError| RateLimiterError::Connect {
            url: crate::telemetry::redact::redact_url(url),
            reason: crate::telemetry::redact::redact_secrets(&e.to_string(), url),
        };
        let client = ::redis::Client::open(url.trim()).map_err(invalid)?;
        let config = ::redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(redis::CONNECT_TIMEOUT))
            .set_number_of_retries(1);
        let mut manager = ::redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(connect)?;
        if redis::is_cluster_node(&mut manager)
            .await
            .map_err(connect)?
        {
            drop(manager);
            return Self::redis_cluster([url]).await;
        }
        Ok(Self::redis_with(manager))
    }

    /// A limiter whose budgets live on the Redis Cluster that `nodes` belong
    /// to: any of its nodes, each a full `redis://` URL (with the same user
    /// and password); the client reads the rest of the
    /// topology from them. [`redis`](Self::redis) comes here for a node list
    /// or a node that says it is in cluster mode.
    ///
    /// Do not put a hash tag (`{…}`) in the [`key_prefix`](Self::key_prefix):
    /// every key would then hash to one slot, on one master.
    ///
    /// # Errors
    ///
    /// [`RateLimiterError`] when a URL is invalid, no node can be reached, or
    /// the nodes are not in cluster mode.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub async fn redis_cluster<I>(nodes: I) -> Result<Self, RateLimiterError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().trim().to_owned())
            .collect();
        let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
        let shown = nodes
            .iter()
            .map(|node| crate::telemetry::redact::redact_url(node))
            .collect::<Vec<_>>()
            .join(",");
        let reason = |e: ::redis::RedisError| {
            let message = format!("Redis Cluster: {e}");
            nodes.iter().fold(message, |m, node| {
                crate::telemetry::redact::redact_secrets(&m, node)
            })
        };
        let client = redis::cluster_client(&nodes).map_err(|e| RateLimiterError::InvalidUrl {
            url: shown.clone(),
            reason: reason(e),
        })?;
        let connection =
            client
                .get_async_connection()
                .await
                .map_err(|e| RateLimiterError::Connect {
                    url: shown.clone(),
                    reason: reason(e),
                })?;
        tracing::info!(nodes = %shown, "rate limits on a Redis Cluster");
        Ok(Self::redis_cluster_with(connection))
    }

    /// A limiter whose budgets live in Redis behind `manager` (see
    /// [`redis`](Self::redis)). The fallback in-process limiter tracks up to
    /// [`DEFAULT_MAX_KEYS`] keys.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_with(manager: ::redis::aio::ConnectionManager) -> Self {
        Self::with_redis(redis::Connection::Single(manager))
    }

    /// A limiter whose budgets live on the Redis Cluster behind `connection`
    /// (see [`redis_cluster`](Self::redis_cluster)), for a cluster client
    /// configured by the host. Keep its overall response timeout at least the
    /// [`redis_timeout`](Self::redis_timeout), or unset.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis_cluster_with(connection: ::redis::cluster_async::ClusterConnection) -> Self {
        Self::with_redis(redis::Connection::Cluster(connection))
    }

    #[cfg(feature = "redis")]
    fn with_redis(connection: redis::Connection) -> Self {
        Self {
            local: Arc::new(Local::new(DEFAULT_MAX_KEYS)),
            redis: Some(redis::RedisBackend::new(connection)),
        }
    }

    /// Prefix of the Redis keys (`<prefix><key id>`); default
    /// `"tower_api_keys:rl:"`. Replicas that share a budget must use the same
    /// prefix. No effect on an in-process limiter.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        if let Some(redis) = &mut self.redis {
            redis.prefix = Arc::from(prefix.into());
        }
        self
    }

    /// Longest wait for Redis on one request, after which
    /// [`on_redis_error`](Self::on_redis_error) applies; default 50 ms. No
    /// effect on an in-process limiter.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        if let Some(redis) = &mut self.redis {
            redis.timeout = timeout;
        }
        self
    }

    /// What to do when Redis fails or times out; default
    /// [`OnRedisError::FallBack`]. No effect on an in-process limiter.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    #[must_use]
    pub fn on_redis_error(mut self, policy: OnRedisError) -> Self {
        if let Some(redis) = &mut self.redis {
            redis.policy = policy;
        }
        self
    }

    /// Counts one request of `key_id` against `limit`.
    ///
    /// A key whose limit changed since its last request is held to the new
    /// one (in process, it starts again with the full new budget; in Redis,
    /// its debt carries over).
    ///
    /// # Errors
    ///
    /// [`RateLimitUnavailable`] only from a Redis-backed limiter set to
    /// [`OnRedisError::Refuse`], when Redis fails or times out.
    pub async fn check(
        &self,
        key_id: Uuid,
        limit: RateLimit,
    ) -> Result<Decision, RateLimitUnavailable> {
        self.check_rated(key_id, limit)
            .await
            .map(|rated| rated.decision)
    }

    /// [`check`](Self::check), with the limit's `RateLimit-Policy` value.
    pub(crate) async fn check_rated(
        &self,
        key_id: Uuid,
        limit: RateLimit,
    ) -> Result<Rated, RateLimitUnavailable> {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return match redis.check(key_id, limit).await {
                Ok(decision) => Ok(decision.into()),
                Err(failure) => match redis.policy {
                    OnRedisError::Refuse => Err(RateLimitUnavailable),
                    OnRedisError::FallBack => {
                        redis.fell_back(&failure);
                        Ok(self.local.check_rated(key_id, limit))
                    }
                },
            };
        }
        Ok(self.local.check_rated(key_id, limit))
    }

    /// The same as [`check`](Self::check) for an in-process limiter, without a
    /// future: `None` when the limiter is Redis-backed (call `check` then).
    /// Once the key is tracked, allocates nothing of its own: a read-locked
    /// map lookup and one compare-and-swap.
    pub fn check_local(&self, key_id: Uuid, limit: RateLimit) -> Option<Decision> {
        self.check_local_rated(key_id, limit)
            .map(|rated| rated.decision)
    }

    /// [`check_local`](Self::check_local), with the limit's
    /// `RateLimit-Policy` value (made once per tracked key, not per call).
    pub(crate) fn check_local_rated(&self, key_id: Uuid, limit: RateLimit) -> Option<Rated> {
        if self.is_cluster_wide() {
            return None;
        }
        Some(self.local.check_rated(key_id, limit))
    }

    /// Whether budgets are shared by every replica (Redis-backed).
    pub fn is_cluster_wide(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.redis.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }
}

impl Default for RateLimiter {
    /// [`RateLimiter::in_process`].
    fn default() -> Self {
        Self::in_process()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RateLimiter");
        d.field("local", &self.local);
        #[cfg(feature = "redis")]
        d.field("redis", &self.redis);
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_check_and_check_local_agree() {
        let limiter = RateLimiter::in_process();
        assert!(!limiter.is_cluster_wide());
        let key = Uuid::new_v4();
        let three = RateLimit::new(3, 60).unwrap();
        let mut remaining = Vec::new();
        for _ in 0..3 {
            let decision = limiter.check(key, three).await.unwrap();
            assert!(decision.allowed);
            remaining.push(decision.remaining);
        }
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check_local(key, three).unwrap();
        assert!(!refused.allowed);
        let retry = refused.retry_after.unwrap();
        assert!(retry > std::time::Duration::from_secs(19), "{retry:?}");
        assert!(refused.retry_after_seconds().unwrap() >= 1);
    }

    #[tokio::test]
    async fn clones_share_budgets() {
        let limiter = RateLimiter::in_process_with_capacity(10);
        let clone = limiter.clone();
        let key = Uuid::new_v4();
        let one = RateLimit::new(1, 3_600).unwrap();
        assert!(limiter.check(key, one).await.unwrap().allowed);
        assert!(!clone.check(key, one).await.unwrap().allowed);
        assert!(clone.check(Uuid::new_v4(), one).await.unwrap().allowed);
    }
}
