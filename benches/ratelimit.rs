//! One rate-limit check: in process on a hot key and across 100,000 distinct
//! keys, and in Redis (one script round trip) when the `redis` feature is on:
//! on a single Redis when `TEST_REDIS_URL` is set, on a Redis Cluster when
//! `TEST_REDIS_CLUSTER_URL` (its node list) is set, both in the same run.
//!
//! Run with `cargo bench --bench ratelimit --all-features`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_api_keys::{RateLimit, RateLimiter};
use uuid::Uuid;

const DISTINCT_KEYS: usize = 100_000;

fn in_process(c: &mut Criterion) {
    let limit = RateLimit::new(1_000_000, 1).unwrap();
    let mut group = c.benchmark_group("ratelimit/in_process");

    let limiter = RateLimiter::in_process();
    let hot = Uuid::new_v4();
    group.bench_function("hot_key/check_local", |b| {
        b.iter(|| black_box(limiter.check_local(black_box(hot), limit)));
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    group.bench_function("hot_key/check", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(limiter.check(black_box(hot), limit).await) });
    });

    // Every key is tracked (the default capacity is 100,000), so after the
    // first round this measures lookups spread over a large cache.
    let keys: Vec<Uuid> = (0..DISTINCT_KEYS).map(|_| Uuid::new_v4()).collect();
    let limiter = RateLimiter::in_process();
    let mut next = 0;
    group.bench_function("100k_keys/check_local", |b| {
        b.iter(|| {
            next = (next + 1) % DISTINCT_KEYS;
            black_box(limiter.check_local(keys[next], limit))
        });
    });

    // Twice as many keys as tracked: eviction on most checks.
    let keys: Vec<Uuid> = (0..2 * DISTINCT_KEYS).map(|_| Uuid::new_v4()).collect();
    let limiter = RateLimiter::in_process_with_capacity(DISTINCT_KEYS as u64);
    let mut next = 0;
    group.bench_function("200k_keys_over_capacity/check_local", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            black_box(limiter.check_local(keys[next], limit))
        });
    });
    group.finish();
}

/// One Redis check, on a single Redis (`TEST_REDIS_URL`) and on a Redis
/// Cluster (`TEST_REDIS_CLUSTER_URL`, its node list) in the same run: a hot
/// key (one master on the cluster) and 1,000 keys (spread over every master),
/// criterion's mean, then p50/p99 of 10,000 sequential checks over the 1,000
/// keys, which the mean hides.
#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut measured = false;
    for (name, variable) in [
        ("redis", "TEST_REDIS_URL"),
        ("redis_cluster", "TEST_REDIS_CLUSTER_URL"),
    ] {
        let Ok(url) = std::env::var(variable) else {
            eprintln!("{variable} not set; ratelimit/{name} not measured");
            continue;
        };
        let limiter = runtime
            .block_on(RateLimiter::redis(&url))
            .unwrap_or_else(|e| panic!("connect to {variable}: {e}"));
        assert_eq!(
            format!("{limiter:?}").contains("cluster: true"),
            name == "redis_cluster",
            "{limiter:?}"
        );
        measure_redis(c, &runtime, name, limiter);
        measured = true;
    }
    if !measured {
        eprintln!("no Redis to measure");
    }
}

#[cfg(feature = "redis")]
fn measure_redis(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    limiter: RateLimiter,
) {
    use std::time::{Duration, Instant};

    let limiter = limiter
        .key_prefix(format!("tower_api_keys_bench:{}:", Uuid::new_v4()))
        .redis_timeout(Duration::from_secs(1))
        .on_redis_error(tower_api_keys::OnRedisError::Refuse);
    let limit = RateLimit::new(1_000_000, 1).unwrap();
    let hot = Uuid::new_v4();
    let keys: Vec<Uuid> = (0..1_000).map(|_| Uuid::new_v4()).collect();
    let mut group = c.benchmark_group(format!("ratelimit/{name}"));
    group.bench_function("hot_key/check", |b| {
        b.to_async(runtime)
            .iter(|| async { black_box(limiter.check(hot, limit).await.expect("Redis answers")) });
    });
    let mut next = 0;
    group.bench_function("1k_keys/check", |b| {
        b.to_async(runtime).iter(|| {
            next = (next + 1) % keys.len();
            let key = keys[next];
            let limiter = &limiter;
            async move { black_box(limiter.check(key, limit).await.expect("Redis answers")) }
        });
    });
    group.finish();

    let mut samples: Vec<Duration> = runtime.block_on(async {
        let mut samples = Vec::with_capacity(10_000);
        for i in 0..10_000 {
            let started = Instant::now();
            black_box(
                limiter
                    .check(keys[i % keys.len()], limit)
                    .await
                    .expect("Redis answers"),
            );
            samples.push(started.elapsed());
        }
        samples
    });
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "ratelimit/{name} one check over 10,000 sequential calls on 1,000 keys: \
         p50 {:?}, p99 {:?}, max {:?}",
        at(0.50),
        at(0.99),
        samples[samples.len() - 1]
    );
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {
    eprintln!("feature `redis` off; the Redis check not measured");
}

criterion_group!(benches, in_process, redis);
criterion_main!(benches);
