//! The Redis-backed rate limiter: one budget shared by replicas, and what
//! happens when Redis is away.
//!
//! The shared-budget tests need `TEST_REDIS_URL`: they are ignored unless run
//! with `--include-ignored` (CI does); the unreachable-Redis tests need no
//! server and always run.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tower_api_keys::{OnRedisError, RateLimit, RateLimitUnavailable, RateLimiter};
use uuid::Uuid;

/// A port nothing listens on.
const DEAD_URL: &str = "redis://127.0.0.1:1";

/// `TEST_REDIS_URL`; panics when it is unset.
fn redis_url() -> String {
    match std::env::var("TEST_REDIS_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "TEST_REDIS_URL is not set: this test needs a Redis server; set it (see `.ci/run`) \
             or run without `--include-ignored`"
        ),
    }
}

/// Two limiters on separate connections, as two replicas would have, under a
/// prefix of their own so tests never share keys.
async fn two_replicas(url: &str) -> (RateLimiter, RateLimiter) {
    let prefix = format!("tower_api_keys_test:{}:", Uuid::new_v4());
    let a = RateLimiter::redis(url)
        .await
        .expect("connect to TEST_REDIS_URL")
        .key_prefix(prefix.clone())
        .redis_timeout(Duration::from_secs(2))
        .on_redis_error(OnRedisError::Refuse);
    let b = RateLimiter::redis(url)
        .await
        .expect("connect to TEST_REDIS_URL")
        .key_prefix(prefix)
        .redis_timeout(Duration::from_secs(2))
        .on_redis_error(OnRedisError::Refuse);
    (a, b)
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_URL"]
async fn replicas_share_one_budget() {
    let url = redis_url();
    let (a, b) = two_replicas(&url).await;
    assert!(a.is_cluster_wide() && b.is_cluster_wide());
    assert_eq!(
        a.check_local(Uuid::new_v4(), RateLimit::new(1, 1).unwrap()),
        None
    );

    let key = Uuid::new_v4();
    let five = RateLimit::new(5, 60).unwrap();
    let mut allowed = 0;
    let mut remaining = Vec::new();
    for i in 0..12 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let decision = replica.check(key, five).await.expect("Redis answers");
        assert_eq!(decision.limit, five);
        if decision.allowed {
            allowed += 1;
            remaining.push(decision.remaining);
            assert_eq!(decision.retry_after, None);
        } else {
            assert_eq!(decision.remaining, 0);
            let retry = decision.retry_after.expect("a refusal says when to retry");
            // One request comes back every 12 s.
            assert!(retry > Duration::from_secs(10) && retry <= Duration::from_secs(12));
            assert!(decision.retry_after_seconds().unwrap() >= 1);
            assert!(decision.reset_seconds() > 50 && decision.reset_seconds() <= 60);
        }
    }
    assert_eq!(allowed, 5);
    // Counted down across both replicas.
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_URL"]
async fn first_request_reports_the_contract_headers() {
    let url = redis_url();
    let (a, _) = two_replicas(&url).await;
    let three = RateLimit::new(3, 60).unwrap();
    let decision = a.check(Uuid::new_v4(), three).await.unwrap();
    assert!(decision.allowed);
    assert_eq!(decision.policy_header(), r#""key";q=3;w=60"#);
    assert_eq!(decision.ratelimit_header(), r#""key";r=2;t=20"#);
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_URL"]
async fn keys_have_budgets_of_their_own() {
    let url = redis_url();
    let (a, b) = two_replicas(&url).await;
    let one = RateLimit::new(1, 60).unwrap();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(a.check(first, one).await.unwrap().allowed);
    assert!(!b.check(first, one).await.unwrap().allowed);
    assert!(b.check(second, one).await.unwrap().allowed);
    assert!(!a.check(second, one).await.unwrap().allowed);
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_URL"]
async fn concurrent_requests_never_exceed_the_budget() {
    let url = redis_url();
    let (a, b) = two_replicas(&url).await;
    let key = Uuid::new_v4();
    let ten = RateLimit::new(10, 3_600).unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let limiter = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { limiter.check(key, ten).await.unwrap().allowed })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 10);
}

#[tokio::test]
#[ignore = "needs TEST_REDIS_URL"]
async fn the_keys_expire_once_the_budget_is_back() {
    let url = redis_url();
    let prefix = format!("tower_api_keys_test:{}:", Uuid::new_v4());
    let limiter = RateLimiter::redis(&url)
        .await
        .unwrap()
        .key_prefix(prefix.clone())
        .redis_timeout(Duration::from_secs(2));
    let key = Uuid::new_v4();
    limiter
        .check(key, RateLimit::new(2, 60).unwrap())
        .await
        .unwrap();
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}{key}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    // One request of 2 per 60 s takes 30 s to come back.
    assert!(ttl > 25_000 && ttl <= 30_000, "PTTL {ttl}");
}

#[tokio::test]
async fn an_unreachable_redis_fails_fast_at_start_up() {
    let err = RateLimiter::redis(DEAD_URL)
        .await
        .expect_err("nothing listens on port 1");
    let message = err.to_string();
    assert!(
        message.starts_with("could not connect to Redis at redis://127.0.0.1:1"),
        "{message}"
    );

    let err = RateLimiter::redis("redis://admin:hunter2@127.0.0.1:1/0")
        .await
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("redis://***@127.0.0.1:1/0"), "{err}");

    let err = RateLimiter::redis("http://hunter2@example")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

/// A limiter whose Redis goes missing after start-up: a lazy manager that
/// connects on first use, to a port where nothing listens.
fn lost_redis() -> RateLimiter {
    let client = redis::Client::open(DEAD_URL).unwrap();
    let config = ConnectionManagerConfig::new().set_number_of_retries(0);
    let manager = ConnectionManager::new_lazy_with_config(client, config).unwrap();
    RateLimiter::redis_with(manager).redis_timeout(Duration::from_millis(200))
}

#[tokio::test]
async fn without_redis_fall_back_still_limits_in_process() {
    let limiter = lost_redis();
    assert!(limiter.is_cluster_wide());
    let key = Uuid::new_v4();
    let three = RateLimit::new(3, 60).unwrap();
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = limiter.check(key, three).await.expect("falls back");
        assert!(decision.allowed);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let refused = limiter.check(key, three).await.expect("falls back");
    assert!(!refused.allowed);
    assert!(refused.retry_after_seconds().unwrap() >= 1);
}

/// Each request limited in process counts once in
/// `tower_api_keys_ratelimit_fallbacks_total`.
#[tokio::test]
async fn every_fallback_is_counted() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The counter is registered when the limiter is built.
    let limiter = metrics::with_local_recorder(&recorder, lost_redis);
    let three = RateLimit::new(3, 60).unwrap();
    let key = Uuid::new_v4();
    for _ in 0..5 {
        limiter.check(key, three).await.expect("falls back");
    }
    let counted: Vec<u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, _, _, _)| key.key().name() == "tower_api_keys_ratelimit_fallbacks_total")
        .map(|(_, _, _, value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("not a counter: {other:?}"),
        })
        .collect();
    assert_eq!(counted, [5]);

    // Refusing instead of falling back limits nothing in process.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let limiter =
        metrics::with_local_recorder(&recorder, lost_redis).on_redis_error(OnRedisError::Refuse);
    assert!(limiter.check(key, three).await.is_err());
    let snapshot = snapshotter.snapshot().into_vec();
    assert!(
        snapshot
            .iter()
            .all(|(_, _, _, value)| *value == DebugValue::Counter(0)),
        "{snapshot:?}"
    );
}

#[tokio::test]
async fn without_redis_refuse_reports_unavailable() {
    let limiter = lost_redis().on_redis_error(OnRedisError::Refuse);
    let three = RateLimit::new(3, 60).unwrap();
    for _ in 0..2 {
        assert_eq!(
            limiter.check(Uuid::new_v4(), three).await,
            Err(RateLimitUnavailable)
        );
    }
}

#[tokio::test]
async fn a_slow_redis_is_cut_off_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    let manager =
        ConnectionManager::new_lazy_with_config(client, ConnectionManagerConfig::new()).unwrap();
    let limiter = RateLimiter::redis_with(manager)
        .redis_timeout(Duration::from_millis(100))
        .on_redis_error(OnRedisError::Refuse);
    let one = RateLimit::new(1, 60).unwrap();
    assert_eq!(
        limiter.check(Uuid::new_v4(), one).await,
        Err(RateLimitUnavailable)
    );
    let limiter = limiter.on_redis_error(OnRedisError::FallBack);
    let key = Uuid::new_v4();
    assert!(limiter.check(key, one).await.unwrap().allowed);
    assert!(!limiter.check(key, one).await.unwrap().allowed);
    silent.abort();
}
