//! The cluster-wide limiter: the same GCRA, evaluated atomically in Redis by
//! one Lua script per request, on one Redis server or on a Redis Cluster (the
//! script touches one key, so the cluster client sends it to the master that
//! holds that key's slot).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use metrics::{Counter, counter};
use redis::{
    Cmd, ErrorKind, Pipeline, RedisFuture, RedisResult, Script, Value,
    aio::{ConnectionLike, ConnectionManager},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
};
use uuid::Uuid;

use super::{Decision, OnRedisError, RateLimit};
use crate::telemetry::RATELIMIT_FALLBACKS;

/// The default prefix of every key the limiter writes.
pub(crate) const DEFAULT_PREFIX: &str = "tower_api_keys:rl:";
/// The default bound on one Redis call.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// At most one fallback warning per this long.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The bound on connecting to a node, and on one reply to the cluster
/// client's own commands (the slot map it reads after a `MOVED` or a failover).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// GCRA in microseconds on the Redis server's clock, so replicas with skewed
/// clocks agree. `KEYS[1]` holds the theoretical arrival time (TAT);
/// `ARGV[1]` is the emission interval `t`, `ARGV[2]` the burst (`requests`).
/// A missing key is a full bucket, so the key expires when its bucket is full
/// again (at most one period after the last request).
///
/// Returns `{allowed, remaining, reset_after_us, retry_after_us}`.
const GCRA_LUA: &str = r"
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tau = t * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local allow_at = tat - tau
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local new_tat = tat + t
local ttl_ms = math.ceil((new_tat - now) / 1000)
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl_ms)
local remaining = math.floor((now + tau + t - new_tat) / t)
if remaining > burst - 1 then
  remaining = burst - 1
end
return {1, remaining, new_tat - now, 0}
";

/// One Redis server, or a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Connection {
    /// One server (or a proxy in front of several) behind a reconnecting manager.
    Single(ConnectionManager),
    /// The `redis` crate's cluster client: routes each command by its key's
    /// slot, follows `MOVED`/`ASK` and reads the slot map again when the
    /// cluster changes (a failover, a resharding).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(manager) => manager.req_packed_command(cmd),
            Self::Cluster(cluster) => cluster.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(manager) => manager.req_packed_commands(pipeline, offset, count),
            Self::Cluster(cluster) => cluster.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(manager) => manager.get_db(),
            Self::Cluster(cluster) => cluster.get_db(),
        }
    }
}

/// Whether the server behind `manager` is a node of a Redis Cluster
/// (`INFO cluster` says `cluster_enabled:1`). A server that refuses `INFO`
/// (an ACL without it) is taken for a single server, with a warning.
pub(crate) async fn is_cluster_node(manager: &mut ConnectionManager) -> RedisResult<bool> {
    let info = tokio::time::timeout(
        CONNECT_TIMEOUT,
        redis::cmd("INFO")
            .arg("cluster")
            .query_async::<String>(manager),
    )
    .await
    .map_err(|_| redis::RedisError::from((ErrorKind::Io, "no answer to INFO cluster")))?;
    match info {
        Ok(info) => Ok(info.lines().any(|line| line.trim() == "cluster_enabled:1")),
        Err(err) if matches!(err.kind(), ErrorKind::Server(_) | ErrorKind::Extension) => {
            tracing::warn!(
                error = %err,
                "INFO cluster refused; taking the Redis URL for a single server \
                 (for a Redis Cluster, list two or more nodes, comma-separated, \
                 or use RateLimiter::redis_cluster)"
            );
            Ok(false)
        }
        Err(err) => Err(err),
    }
}

/// A cluster client on `nodes` (any nodes of the cluster; it reads the rest of
/// the topology from them). A call is bounded by the limiter's own timeout, so
/// the client's retries only matter within it: a redirect is followed at once,
/// a `TRYAGAIN` or `CLUSTERDOWN` retried after 10–80 ms.
pub(crate) fn cluster_client(nodes: &[&str]) -> RedisResult<ClusterClient> {
    ClusterClient::builder(nodes.iter().copied())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(CONNECT_TIMEOUT)
        .overall_response_timeout(None)
        .retries(3)
        .min_retry_wait(10)
        .max_retry_wait(80)
        .build()
}

/// The Redis side of a [`RateLimiter`](super::RateLimiter).
#[derive(Clone)]
pub(crate) struct RedisBackend {
    connection: Connection,
    script: Arc<Script>,
    pub(crate) prefix: Arc<str>,
    pub(crate) timeout: Duration,
    pub(crate) policy: OnRedisError,
    warnings: Arc<WarnEvery>,
    /// `tower_api_keys_ratelimit_fallbacks_total`, registered once.
    fallbacks: Counter,
}

impl RedisBackend {
    pub(crate) fn new(connection: Connection) -> Self {
        Self {
            connection,
            script: Arc::new(Script::new(GCRA_LUA)),
            prefix: Arc::from(DEFAULT_PREFIX),
            timeout: DEFAULT_TIMEOUT,
            policy: OnRedisError::FallBack,
            warnings: Arc::new(WarnEvery::new(WARN_EVERY)),
            fallbacks: counter!(RATELIMIT_FALLBACKS),
        }
    }

    /// Whether the budgets live on a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// One script call, bounded by the timeout.
    pub(crate) async fn check(
        &self,
        key_id: Uuid,
        limit: RateLimit,
    ) -> Result<Decision, RedisFailure> {
        let mut key = String::with_capacity(self.prefix.len() + 36);
        key.push_str(&self.prefix);
        key.push_str(key_id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        // The interval in whole microseconds (at least 1 given the bounds).
        let t = (limit.emission_interval_nanos() / 1_000).max(1);
        let mut connection = self.connection.clone();
        let mut invocation = self.script.key(key);
        invocation.arg(t).arg(limit.requests());
        // `EVALSHA`; on `NOSCRIPT` (a server restarted or flushed, a node that
        // joined later) `SCRIPT LOAD`, which a cluster client sends to every
        // node, replicas included, and `EVALSHA` again.
        let reply: Vec<i64> =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
                .await
                .map_err(|_| RedisFailure::Timeout(self.timeout))?
                .map_err(RedisFailure::Redis)?;
        decision_from_reply(limit, &reply).ok_or(RedisFailure::Reply)
    }

    /// Counts a request limited in process because Redis failed, and logs
    /// it at most once per [`WARN_EVERY`].
    pub(crate) fn fell_back(&self, failure: &RedisFailure) {
        self.fallbacks.increment(1);
        if self.warnings.should_warn() {
            tracing::warn!(
                error = %failure,
                "Redis rate limiting unavailable; limiting in this process only"
            );
        }
    }
}

fn decision_from_reply(limit: RateLimit, reply: &[i64]) -> Option<Decision> {
    let &[allowed, remaining, reset_us, retry_us] = reply else {
        return None;
    };
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    let allowed = allowed == 1;
    Some(Decision {
        allowed,
        limit,
        remaining: u32::try_from(remaining.max(0))
            .unwrap_or(0)
            .min(limit.requests()),
        reset_after: micros(reset_us),
        retry_after: (!allowed).then(|| micros(retry_us)),
    })
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Why a Redis check did not give a decision.
#[derive(Debug)]
pub(crate) enum RedisFailure {
    Timeout(Duration),
    Redis(redis::RedisError),
    Reply,
}

impl fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(d) => write!(f, "no answer within {d:?}"),
            Self::Redis(e) => write!(f, "{e}"),
            Self::Reply => f.write_str("unexpected reply from the rate-limit script"),
        }
    }
}

/// Lets one caller through per period, without a lock.
struct WarnEvery {
    anchor: Instant,
    every: Duration,
    /// Milliseconds since `anchor` before which nobody warns.
    next_ms: AtomicU64,
}

impl WarnEvery {
    fn new(every: Duration) -> Self {
        Self {
            anchor: Instant::now(),
            every,
            next_ms: AtomicU64::new(0),
        }
    }

    fn should_warn(&self) -> bool {
        let now = u64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let every = u64::try_from(self.every.as_millis()).unwrap_or(u64::MAX);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(every),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_throttled() {
        let w = WarnEvery::new(Duration::from_secs(3_600));
        assert!(w.should_warn());
        assert!(!w.should_warn());
        assert!(!w.should_warn());
    }

    #[test]
    fn replies_become_decisions() {
        let limit = RateLimit::new(5, 60).unwrap();
        let allowed = decision_from_reply(limit, &[1, 4, 12_000_000, 0]).unwrap();
        assert!(allowed.allowed);
        assert_eq!(allowed.remaining, 4);
        assert_eq!(allowed.reset_after, Duration::from_secs(12));
        assert_eq!(allowed.retry_after, None);
        let refused = decision_from_reply(limit, &[0, 0, 60_000_000, 1_500_000]).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(1_500)));
        assert_eq!(refused.retry_after_seconds(), Some(2));
        assert!(decision_from_reply(limit, &[1, 2]).is_none());
        let odd = decision_from_reply(limit, &[1, 99, -5, 0]).unwrap();
        assert_eq!((odd.remaining, odd.reset_after), (5, Duration::ZERO));
    }
}
