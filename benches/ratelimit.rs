//! One rate-limit check: in process on a hot key and across 100,000 distinct
//! keys, and in Redis (one script round trip) when `TEST_REDIS_URL` is set and
//! the `redis` feature is on.
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

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    use std::time::Duration;

    let Ok(url) = std::env::var("TEST_REDIS_URL") else {
        eprintln!("TEST_REDIS_URL not set; the Redis check not measured");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let limiter = runtime
        .block_on(RateLimiter::redis(&url))
        .expect("connect to TEST_REDIS_URL")
        .key_prefix(format!("tower_api_keys_bench:{}:", Uuid::new_v4()))
        .redis_timeout(Duration::from_secs(1))
        .on_redis_error(tower_api_keys::OnRedisError::Refuse);
    let limit = RateLimit::new(1_000_000, 1).unwrap();
    let hot = Uuid::new_v4();
    let mut group = c.benchmark_group("ratelimit/redis");
    group.bench_function("hot_key/check", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(limiter.check(hot, limit).await.expect("Redis answers")) });
    });
    group.finish();

    // The latency distribution of one round trip, which criterion's mean hides.
    let mut samples: Vec<Duration> = runtime.block_on(async {
        let mut samples = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let started = std::time::Instant::now();
            black_box(limiter.check(hot, limit).await.expect("Redis answers"));
            samples.push(started.elapsed());
        }
        samples
    });
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "ratelimit/redis one check over 10,000 sequential calls: p50 {:?}, p99 {:?}, max {:?}",
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
