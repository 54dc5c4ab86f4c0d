//! Behaviour under load: single flight, batched writes, floods of unknown keys.
//! (Speed itself is measured in `benches/`, not here.)

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Body, routing::get};
use common::{Probe, pepper};
use http::{Request, StatusCode};
use tokio::sync::{Barrier, Semaphore};
use tower::ServiceExt;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, KeyPair, NewApiKey,
    store::MemoryRepository,
};
use uuid::Uuid;

type Repo = Probe<MemoryRepository>;

fn repo() -> Repo {
    Probe::new(MemoryRepository::new())
}

fn whoami_app(validator: ApiKeyValidator) -> Router {
    Router::new()
        .route(
            "/",
            get(|account: AccountId| async move { account.to_string() }),
        )
        .layer(ApiKeyAuthLayer::new(validator))
}

fn request(credential: &str) -> Request<Body> {
    Request::get("/")
        .header("x-api-key", credential)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_for_one_key_make_one_lookup() {
    // Lookups wait at a gate until every request has arrived.
    let gate = Arc::new(Semaphore::new(0));
    let repo = repo().with_after_lookup({
        let gate = gate.clone();
        move |_| {
            let gate = gate.clone();
            async move { drop(gate.acquire().await.unwrap()) }
        }
    });
    let validator = ApiKeyValidator::new(repo.clone(), pepper());
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let created = manager
        .create(account, NewApiKey::new("hot"))
        .await
        .unwrap();
    let credential = created.credential();
    let app = whoami_app(validator);

    let handles: Vec<_> = (0..256)
        .map(|_| {
            let (app, credential) = (app.clone(), credential.clone());
            tokio::spawn(async move { app.oneshot(request(&credential)).await.unwrap().status() })
        })
        .collect();
    // Let every request reach the store (or its flight) before the store answers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.add_permits(1_000);
    for handle in handles {
        assert_eq!(handle.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(repo.lookups_of(&created.key.public_key), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_for_different_keys_are_not_serialized() {
    const KEYS: usize = 16;
    // Every lookup waits until all KEYS lookups are under way at once: if misses
    // for different keys were serialized, this would never complete.
    let barrier = Arc::new(Barrier::new(KEYS));
    let repo = repo().with_after_lookup(move |_| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
        }
    });
    let validator = ApiKeyValidator::new(repo.clone(), pepper());
    let app = whoami_app(validator);
    let handles: Vec<_> = (0..KEYS)
        .map(|_| {
            let app = app.clone();
            let credential = KeyPair::generate().unwrap().credential();
            tokio::spawn(async move { app.oneshot(request(&credential)).await.unwrap().status() })
        })
        .collect();
    let all = async {
        for handle in handles {
            assert_eq!(handle.await.unwrap(), StatusCode::UNAUTHORIZED);
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("lookups for different keys must run concurrently");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 100,000 requests through the layer"]
async fn a_hundred_thousand_requests_make_one_batched_write_per_flush() {
    let probe = Probe::new(MemoryRepository::new());
    let interval = Duration::from_millis(250);
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_flush_interval(interval)
        .build();
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let mut credentials = Vec::new();
    for i in 0..1_000 {
        credentials.push(
            manager
                .create(account, NewApiKey::new(format!("k{i}")))
                .await
                .unwrap()
                .credential(),
        );
    }
    let app = whoami_app(validator.clone());
    let started = Instant::now();
    for i in 0..100_000 {
        let response = app
            .clone()
            .oneshot(request(&credentials[i % 1_000]))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let elapsed = started.elapsed();
    validator.shutdown().await;
    let flushes = probe.flushes();
    let ticks = (elapsed.as_secs_f64() / interval.as_secs_f64()).ceil() as usize;
    println!(
        "100000 requests over 1000 keys in {elapsed:?}: {flushes} batched writes, {ticks} flush intervals"
    );
    assert!(flushes >= 1);
    assert!(
        flushes <= ticks + 1,
        "{flushes} writes in {ticks} intervals"
    );
    // Every key's use landed, once.
    let keys = manager.list(account).await.unwrap();
    assert_eq!(keys.len(), 1_000);
    assert!(keys.iter().all(|k| k.last_used_at.is_some()));
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: 200,000 requests with unknown keys"]
async fn a_flood_of_unknown_keys_never_evicts_a_valid_one() {
    let repo = repo();
    let validator = ApiKeyValidator::builder(repo.clone(), pepper())
        .with_negative_capacity(10_000)
        .with_cache_capacity(1_000)
        .build();
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let valid = manager
        .create(account, NewApiKey::new("valid"))
        .await
        .unwrap();
    let app = whoami_app(validator.clone());
    assert_eq!(
        app.clone()
            .oneshot(request(&valid.credential()))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(repo.lookups_of(&valid.key.public_key), 1);

    let refused = Arc::new(AtomicUsize::new(0));
    for round in 0..200 {
        let tasks: Vec<_> = (0..1_000)
            .map(|_| {
                let (app, refused) = (app.clone(), refused.clone());
                let credential = KeyPair::generate().unwrap().credential();
                tokio::spawn(async move {
                    if app.oneshot(request(&credential)).await.unwrap().status()
                        == StatusCode::UNAUTHORIZED
                    {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // The valid key is still answered from the cache.
        let status = app
            .clone()
            .oneshot(request(&valid.credential()))
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "round {round}");
        assert_eq!(
            repo.lookups_of(&valid.key.public_key),
            1,
            "round {round}: the valid key was evicted"
        );
    }
    assert_eq!(refused.load(Ordering::Relaxed), 200_000);
    let tower_api_keys::CachedEntries { known, unknown } = validator.cached_entries();
    println!(
        "flood of 200000 unknown keys: cached known={known} unknown={unknown}, peak RSS {} KiB",
        peak_rss_kib().unwrap_or(0)
    );
    assert!(
        unknown <= 10_000 + 1_000,
        "negative cache over its bound: {unknown}"
    );
    assert_eq!(known, 1);
    if let Some(peak) = peak_rss_kib() {
        assert!(peak < 512 * 1024, "peak RSS {peak} KiB");
    }
}
