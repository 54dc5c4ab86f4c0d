//! The cost of authentication per request, through a real axum `Router` driven
//! with `tower::ServiceExt::oneshot`:
//!
//! - (a) no authentication at all (the baseline);
//! - (b) tower-http's static bearer check (`ValidateRequestHeaderLayer::bearer`);
//! - (c) `ApiKeyAuthLayer`, cache hit;
//! - (d) `ApiKeyAuthLayer`, cache miss on a SQLite file;
//! - (e) `ApiKeyAuthLayer`, malformed credential;
//! - (f) `ApiKeyAuthLayer`, unknown well-formed key answered from the negative cache;
//! - (g) `ApiKeyAuthLayer` and a `RequireScopesLayer` inside it, cache hit of a
//!   key with three scopes (the route requires one of them);
//! - (h) `ApiKeyAuthLayer`, cache hit of a key with a rate limit (in-process
//!   GCRA, never exhausted: 1,000,000 per second), its headers added;
//! - (i) as (c), with a Prometheus metrics recorder installed when the
//!   validator was built (its counters then really count);
//! - (j) a cache hit on a key drawn uniformly at random from 1,000 cached keys;
//! - (k) the same with 1,000,000 cached keys, so that the cache's memory is
//!   far larger than the CPU's caches.
//!
//! For (j) and (k) the rows are made in the benchmark (HMAC of a generated
//! secret, no store round trip) and served from a hash map, and the cache is
//! filled by validating every key once: `MemoryRepository` scans a `Vec` and
//! SQLite answers in tens of microseconds, either far too slow for a million
//! lookups. Filling the million takes a few seconds.
//!
//! Run with `cargo bench --bench auth`.

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, KeyPair, NewApiKey, Pepper, RateLimit,
    RequireScopesLayer, Scopes,
    hash::KeyHasher,
    store::{
        ApiKeyRecord, ApiKeyRepository, KeyStatus, MemoryRepository, SeaOrmRepository, StoredHash,
    },
};
use uuid::Uuid;

const BEARER: &str = "static-bearer-token-of-a-realistic-length-0123456789";

fn app() -> Router {
    Router::new().route("/", get(|| async { "ok" }))
}

fn request(header: Option<(&'static str, &str)>) -> Request<Body> {
    let mut builder = Request::get("/");
    if let Some((name, value)) = header {
        builder = builder.header(name, value);
    }
    builder.body(Body::empty()).unwrap()
}

fn bench_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let pepper = || Pepper::try_from("benchmark-pepper-0123456789").unwrap();
    let (repo, credential, scoped_credential, limited_credential) = rt.block_on(async {
        let repo = SeaOrmRepository::connect(&url).await.unwrap();
        let manager = KeyManager::new(ApiKeyValidator::new(repo.clone(), pepper()));
        let account = AccountId::new(uuid::Uuid::new_v4());
        let created = manager
            .create(account, NewApiKey::new("bench"))
            .await
            .unwrap();
        let scopes = Scopes::new(["billing:read", "reports:read", "reports:write"]).unwrap();
        let scoped = manager
            .create(account, NewApiKey::new("scoped").with_scopes(scopes))
            .await
            .unwrap();
        let limited = manager
            .create(
                account,
                NewApiKey::new("limited").with_rate_limit(RateLimit::new(1_000_000, 1).unwrap()),
            )
            .await
            .unwrap();
        (
            repo,
            created.credential(),
            scoped.credential(),
            limited.credential(),
        )
    });
    let unknown = KeyPair::generate().unwrap().credential();

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let recorded = rt.block_on(async {
        metrics::with_local_recorder(&recorder, || ApiKeyValidator::new(repo.clone(), pepper()))
    });
    let keyed_recorded = app().layer(ApiKeyAuthLayer::new(recorded));
    let (hit, miss) = rt.block_on(async {
        let cached = ApiKeyValidator::new(repo.clone(), pepper());
        // TTL zero: every request asks the store.
        let uncached = ApiKeyValidator::builder(repo.clone(), pepper())
            .with_positive_ttl(Duration::ZERO)
            .with_stale_if_error(Duration::ZERO)
            .build();
        (cached, uncached)
    });
    let plain = app();
    // The baseline the performance target names; tower-http deprecates it as too
    // basic for real use, which is the point of comparing against it.
    #[allow(deprecated)]
    let bearer =
        app().layer(tower_http::validate_request::ValidateRequestHeaderLayer::bearer(BEARER));
    let keyed = app().layer(ApiKeyAuthLayer::new(hit.clone()));
    let scoped = Router::new()
        .route(
            "/",
            get(|| async { "ok" }).layer(RequireScopesLayer::new(["reports:read"])),
        )
        .layer(ApiKeyAuthLayer::new(hit));
    let keyed_miss = app().layer(ApiKeyAuthLayer::new(miss));
    let bearer_value = format!("Bearer {BEARER}");

    // Warm: the hit path's cache and the negative cache.
    rt.block_on(async {
        for value in [&credential, &unknown] {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", value))))
                .await
                .unwrap();
        }
        keyed_recorded
            .clone()
            .oneshot(request(Some(("x-api-key", &credential))))
            .await
            .unwrap();
        let response = scoped
            .clone()
            .oneshot(request(Some(("x-api-key", &scoped_credential))))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let response = keyed
            .clone()
            .oneshot(request(Some(("x-api-key", &limited_credential))))
            .await
            .unwrap();
        assert!(response.headers().contains_key("ratelimit"));
    });

    let mut group = c.benchmark_group("auth");
    group.bench_function("a_no_auth", |b| {
        b.to_async(&rt).iter(|| {
            plain
                .clone()
                .oneshot(request(Some(("x-api-key", &credential))))
        })
    });
    group.bench_function("b_tower_http_bearer", |b| {
        b.to_async(&rt).iter(|| {
            bearer
                .clone()
                .oneshot(request(Some(("authorization", &bearer_value))))
        })
    });
    group.bench_function("c_api_key_cache_hit", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", &credential))))
        })
    });
    group.bench_function("d_api_key_cache_miss_sqlite", |b| {
        b.to_async(&rt).iter(|| {
            keyed_miss
                .clone()
                .oneshot(request(Some(("x-api-key", &credential))))
        })
    });
    group.bench_function("e_malformed", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", "pk_short:sk_short"))))
        })
    });
    group.bench_function("f_unknown_negative_cache", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", &unknown))))
        })
    });
    group.bench_function("i_cache_hit_metrics_recorder", |b| {
        b.to_async(&rt).iter(|| {
            keyed_recorded
                .clone()
                .oneshot(request(Some(("x-api-key", &credential))))
        })
    });
    group.bench_function("h_rate_limited_cache_hit", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", &limited_credential))))
        })
    });
    group.bench_function("g_scoped_cache_hit", |b| {
        b.to_async(&rt).iter(|| {
            scoped
                .clone()
                .oneshot(request(Some(("x-api-key", &scoped_credential))))
        })
    });

    // (j) and (k): random hits over many cached keys.
    for (name, keys) in [
        ("j_cache_hit_1k_random", 1_000),
        ("k_cache_hit_1m_random", 1_000_000),
    ] {
        let (service, credentials) = rt.block_on(filled(keys, pepper()));
        let mut rng = SplitMix(0x5eed);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let credential = &credentials[rng.below(credentials.len())];
                service
                    .clone()
                    .oneshot(request(Some(("x-api-key", credential))))
            })
        });
    }
    group.finish();

    // The parts, for reference.
    let hasher = tower_api_keys::hash::KeyHasher::new(&pepper());
    let stored = hasher.hash("sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6");
    let mut parts = c.benchmark_group("parts");
    parts.bench_function("hmac_sha256_prekeyed", |b| {
        b.iter(|| hasher.hash(std::hint::black_box("sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6")))
    });
    parts.bench_function("verify_hmac_and_ct_compare", |b| {
        b.iter(|| {
            hasher.verify(
                std::hint::black_box("sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6"),
                &stored,
            )
        })
    });
    parts.bench_function("generate_key_pair", |b| b.iter(KeyPair::generate));
    parts.bench_function("parse_credential", |b| {
        b.iter(|| tower_api_keys::Credential::parse(std::hint::black_box(&credential)).is_ok())
    });
    parts.finish();
}

/// A layer over a validator whose cache holds `keys` distinct keys, each
/// already used once (so that its `last_used_at` throttle and usage count are
/// warm too), and their credentials.
async fn filled(keys: usize, pepper: Pepper) -> (Router, Vec<String>) {
    let hasher = KeyHasher::new(&pepper);
    let account = Uuid::new_v4();
    let mut rng = SplitMix(keys as u64);
    let mut credentials = Vec::with_capacity(keys);
    let mut rows = Vec::with_capacity(keys);
    let now = Utc::now();
    for _ in 0..keys {
        let public_key = format!("pk_{}", rng.alphanumerics());
        let secret_key = format!("sk_{}", rng.alphanumerics());
        credentials.push(format!("{public_key}:{secret_key}"));
        let record = ApiKeyRecord {
            key_id: Uuid::new_v4(),
            public_key: public_key.clone(),
            secret_key_hash: StoredHash::new(hasher.hash(&secret_key).to_hex()),
            account_id: account,
            title: "bench".to_owned(),
            description: None,
            status: KeyStatus::Active,
            expires_at: None,
            last_used_at: None,
            created_at: Some(now),
            pepper_id: None,
            scopes: None,
            metadata: None,
            rotated_from: None,
            rate_limit: None,
        };
        rows.push(record);
    }
    let repository = MemoryRepository::new();
    repository.insert_many(rows).await.unwrap();
    let validator = ApiKeyValidator::builder(repository, pepper)
        // Room to spare: a cache split in shards may evict before it is full.
        .with_cache_capacity(2 * keys as u64)
        // The whole run stays within one TTL: every measured request is a hit.
        .with_positive_ttl(Duration::from_secs(3600))
        .build();
    let service = app().layer(ApiKeyAuthLayer::new(validator.clone()));
    // Through the layer, so that the usage counts hold every key as well.
    for credential in &credentials {
        let response = service
            .clone()
            .oneshot(request(Some(("x-api-key", credential))))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(validator.cached_entries().known, keys as u64);
    (service, credentials)
}

/// A cheap, seeded random number generator (SplitMix64).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a benchmark (`n` far below 2^32).
    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }

    /// 32 characters of `[A-Za-z0-9]`, the body of a key.
    fn alphanumerics(&mut self) -> String {
        const ALPHABET: &[u8; 62] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..32)
            .map(|_| char::from(ALPHABET[self.below(ALPHABET.len())]))
            .collect()
    }
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
