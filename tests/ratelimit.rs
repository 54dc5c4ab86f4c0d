//! CONTRACT §9.1–§9.3 over real HTTP, on every backend: a key's own rate limit
//! and the validator's default, `429` with `Retry-After` and the RateLimit
//! headers, a limit changed through `PATCH` taking effect at once, and limits
//! that hold for the whole cluster when kept in Redis.

mod common;

use common::{Harness, TestDb, pepper};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tower_api_keys::{AccountId, ApiKeyValidator, RateLimit, RateLimiter};
use uuid::Uuid;

backend_tests!(
    a_keys_own_limit_counts_down_then_refuses_with_429,
    a_limited_key_recovers_after_its_period,
    a_limit_changed_through_patch_takes_effect_on_the_next_request,
    the_default_limit_applies_to_keys_without_one,
    in_process_limits_multiply_with_replicas,
);

#[cfg(feature = "redis")]
backend_tests!(redis: redis_limits_hold_for_the_replicas_together);

/// Creates a key over HTTP with `body` and returns its credential and id.
async fn create(h: &Harness, account: AccountId, body: Value) -> (String, String) {
    let response = h
        .client
        .post(h.url("/v1/api-keys"))
        .header("x-account-id", account.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    (credential, created["key_id"].as_str().unwrap().to_owned())
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// `r` of the `RateLimit` header.
fn remaining(response: &reqwest::Response) -> Option<u32> {
    let value = header(response, "ratelimit")?;
    let r = value.split(';').find_map(|part| part.strip_prefix("r="))?;
    Some(r.parse().unwrap())
}

async fn a_keys_own_limit_counts_down_then_refuses_with_429(db: &TestDb) {
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = AccountId::new(Uuid::new_v4());
    let (limited, _) = create(
        &h,
        account,
        json!({"title": "limited", "rate_limit": {"requests": 3, "period_seconds": 60}}),
    )
    .await;
    let (free, _) = create(&h, account, json!({"title": "free"})).await;

    for expected in [2, 1, 0] {
        let response = h.whoami(&limited).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("\"key\";q=3;w=60")
        );
        assert_eq!(remaining(&response), Some(expected));
        let reset: u32 = header(&response, "ratelimit")
            .unwrap()
            .split(';')
            .find_map(|part| part.strip_prefix("t="))
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset), "t={reset}");
    }
    let refused = h.whoami(&limited).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&refused, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(remaining(&refused), Some(0));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["status"], 429);
    assert_eq!(body["detail"], "Rate limit exceeded");

    // Another key of the same account is not limited, and says nothing of limits.
    for _ in 0..5 {
        let response = h.whoami(&free).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "ratelimit"), None);
        assert_eq!(header(&response, "ratelimit-policy"), None);
    }
    // The limit is part of the key object.
    let listed: Value = h
        .client
        .get(h.url("/v1/api-keys"))
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let limits: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|key| &key["rate_limit"])
        .collect();
    assert!(limits.contains(&&json!({"requests": 3, "period_seconds": 60})));
    assert!(limits.contains(&&Value::Null));
}

async fn a_limit_changed_through_patch_takes_effect_on_the_next_request(db: &TestDb) {
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = AccountId::new(Uuid::new_v4());
    let (credential, key_id) = create(
        &h,
        account,
        json!({"title": "k", "rate_limit": {"requests": 1, "period_seconds": 3600}}),
    )
    .await;
    assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    assert_eq!(
        h.whoami(&credential).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    let patch = |body: Value| {
        h.client
            .request(Method::PATCH, h.url(&format!("/v1/api-keys/{key_id}")))
            .header("x-account-id", account.to_string())
            .json(&body)
            .send()
    };
    let response = patch(json!({"rate_limit": {"requests": 5, "period_seconds": 60}}))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let key: Value = response.json().await.unwrap();
    assert_eq!(
        key["rate_limit"],
        json!({"requests": 5, "period_seconds": 60})
    );
    let response = h.whoami(&credential).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "ratelimit-policy").as_deref(),
        Some("\"key\";q=5;w=60")
    );

    // Bad limits are refused, naming the field, and change nothing.
    for (bad, field) in [
        (
            json!({"requests": 0, "period_seconds": 60}),
            "rate_limit.requests",
        ),
        (
            json!({"requests": 5, "period_seconds": 86_401}),
            "rate_limit.period_seconds",
        ),
        (json!("5/60"), "rate_limit"),
    ] {
        let response = patch(json!({ "rate_limit": bad })).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], field, "{body}");
    }
    let response = h.whoami(&credential).await;
    assert_eq!(
        header(&response, "ratelimit-policy").as_deref(),
        Some("\"key\";q=5;w=60")
    );

    // `null` removes the limit.
    assert_eq!(
        patch(json!({"rate_limit": null})).await.unwrap().status(),
        StatusCode::OK
    );
    for _ in 0..10 {
        let response = h.whoami(&credential).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "ratelimit"), None);
    }
}

async fn the_default_limit_applies_to_keys_without_one(db: &TestDb) {
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_default_rate_limit(RateLimit::new(2, 60).unwrap())
        .build();
    let h = Harness::start(validator).await;
    let account = AccountId::new(Uuid::new_v4());
    let (plain, _) = create(&h, account, json!({"title": "default"})).await;
    let (own, _) = create(
        &h,
        account,
        json!({"title": "own", "rate_limit": {"requests": 4, "period_seconds": 60}}),
    )
    .await;
    let statuses = |credential: String| {
        let h = &h;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                statuses.push(h.whoami(&credential).await.status().as_u16());
            }
            statuses
        }
    };
    assert_eq!(statuses(plain).await, [200, 200, 429, 429, 429]);
    assert_eq!(statuses(own).await, [200, 200, 200, 200, 429]);
}

/// The budget every replica test gives its key.
fn replica_limit() -> Value {
    json!({"requests": 4, "period_seconds": 3600})
}

/// Two replicas on one database: with in-process limits each allows the whole
/// budget.
async fn in_process_limits_multiply_with_replicas(db: &TestDb) {
    let account = AccountId::new(Uuid::new_v4());
    let limit = replica_limit();

    let mut local = Vec::new();
    for _ in 0..2 {
        let validator = ApiKeyValidator::builder(db.connect_again().await, pepper())
            .with_rate_limiter(RateLimiter::in_process())
            .build();
        local.push(Harness::start(validator).await);
    }
    let (credential, _) = create(
        &local[0],
        account,
        json!({"title": "local", "rate_limit": limit}),
    )
    .await;
    assert_eq!(allowed(&local, &credential).await, 8, "4 per replica");
}

/// Two replicas on one database with their limits in Redis: the budget holds
/// for both together.
#[cfg(feature = "redis")]
async fn redis_limits_hold_for_the_replicas_together(db: &TestDb) {
    let account = AccountId::new(Uuid::new_v4());
    let limit = replica_limit();
    let url = common::provision::required("TEST_REDIS_URL", "a Redis server");
    let mut shared = Vec::new();
    // One key prefix per test run, shared by both replicas.
    let prefix = format!("tower_api_keys_test:{}:", Uuid::new_v4());
    for _ in 0..2 {
        let limiter = RateLimiter::redis(&url)
            .await
            .unwrap()
            .key_prefix(prefix.clone());
        let validator = ApiKeyValidator::builder(db.connect_again().await, pepper())
            .with_rate_limiter(limiter)
            .build();
        shared.push(Harness::start(validator).await);
    }
    let (credential, _) = create(
        &shared[0],
        account,
        json!({"title": "shared", "rate_limit": limit}),
    )
    .await;
    let first = shared[0].whoami(&credential).await;
    assert_eq!(remaining(&first), Some(3));
    let second = shared[1].whoami(&credential).await;
    assert_eq!(remaining(&second), Some(2), "the other replica counts on");
    assert_eq!(allowed(&shared, &credential).await, 2, "4 for the cluster");
}

/// How many of 6 rounds of one request to each replica are let through.
async fn allowed(replicas: &[Harness], credential: &str) -> usize {
    let mut allowed = 0;
    for _ in 0..6 {
        for replica in replicas {
            if replica.whoami(credential).await.status() == StatusCode::OK {
                allowed += 1;
            }
        }
    }
    allowed
}

async fn a_limited_key_recovers_after_its_period(db: &TestDb) {
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = AccountId::new(Uuid::new_v4());
    let (credential, _) = create(
        &h,
        account,
        json!({"title": "five per second", "rate_limit": {"requests": 5, "period_seconds": 1}}),
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(h.whoami(&credential).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    // Within the period plus a margin, the key is let through again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let response = h.whoami(&credential).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            std::time::Instant::now() < deadline,
            "still refused after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The resident set size of this process, in kB (Linux).
fn rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// 200,000 distinct keys through the in-process limiter (default capacity
/// 100,000): memory stays bounded by the capacity, not the keys seen.
#[tokio::test]
async fn a_flood_of_distinct_keys_keeps_the_limiter_bounded() {
    let limiter = RateLimiter::in_process();
    let limit = RateLimit::new(10, 60).unwrap();
    let before = rss_kb();
    for _ in 0..2 {
        for _ in 0..200_000 {
            let decision = limiter.check_local(Uuid::new_v4(), limit).unwrap();
            assert!(decision.allowed);
        }
    }
    if let (Some(before), Some(after)) = (before, rss_kb()) {
        let grown_mb = after.saturating_sub(before) / 1024;
        eprintln!("limiter: 400,000 distinct keys, RSS grew by {grown_mb} MB");
        // 100,000 tracked limiters of a few hundred bytes each, not 400,000.
        assert!(grown_mb < 150, "RSS grew by {grown_mb} MB");
    }
}

/// Redis is cut mid-test (a TCP forwarder between the limiter and Redis stops):
/// with `FallBack` the layer keeps limiting in process, with `Refuse` it answers
/// `503`; no request waits past the Redis timeout.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_REDIS_URL"]
async fn redis_cut_mid_test_falls_back_or_refuses_as_configured() {
    use std::time::Duration;

    use tower_api_keys::OnRedisError;

    let url = common::provision::required("TEST_REDIS_URL", "a Redis server");
    let target = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let db = common::sqlite().await;
    for (policy, after_cut) in [
        (OnRedisError::FallBack, StatusCode::OK),
        (OnRedisError::Refuse, StatusCode::SERVICE_UNAVAILABLE),
    ] {
        let (addr, cut) = forwarder(target.clone()).await;
        let limiter = RateLimiter::redis(&format!("redis://{addr}"))
            .await
            .unwrap()
            .key_prefix(format!("tower_api_keys_test:{}:", Uuid::new_v4()))
            .redis_timeout(Duration::from_millis(300))
            .on_redis_error(policy);
        let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
            .with_rate_limiter(limiter)
            .build();
        let h = Harness::start(validator).await;
        let account = AccountId::new(Uuid::new_v4());
        let (credential, _) = create(
            &h,
            account,
            json!({"title": "k", "rate_limit": {"requests": 3, "period_seconds": 3600}}),
        )
        .await;
        let bounded = |credential: String| {
            let h = &h;
            async move {
                tokio::time::timeout(Duration::from_secs(3), h.whoami(&credential))
                    .await
                    .expect("a request waited past the Redis timeout")
            }
        };
        assert_eq!(remaining(&bounded(credential.clone()).await), Some(2));
        cut.send(true).unwrap();
        let response = bounded(credential.clone()).await;
        assert_eq!(response.status(), after_cut, "{policy:?}");
        if policy == OnRedisError::FallBack {
            // The in-process limiter counts from here: it still limits.
            let mut statuses = Vec::new();
            for _ in 0..4 {
                statuses.push(bounded(credential.clone()).await.status().as_u16());
            }
            assert!(statuses.contains(&429), "{statuses:?}");
        }
    }
    db.cleanup().await;
}

/// A TCP forwarder to `target` on an ephemeral port; sending `true` closes
/// the listener and every forwarded connection.
#[cfg(feature = "redis")]
async fn forwarder(target: String) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, cut_seen) = tokio::sync::watch::channel(false);
    let mut accept_cut = cut_seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut down, _)) = accepted else { break };
                    let target = target.clone();
                    let mut cut = cut_seen.clone();
                    tokio::spawn(async move {
                        let Ok(mut up) = tokio::net::TcpStream::connect(&target).await else { return };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
                _ = accept_cut.changed() => break,
            }
        }
    });
    (addr, cut)
}
