//! The cost of authentication per request, through a real axum `Router` driven
//! with `tower::ServiceExt::oneshot`:
//!
//! - (a) no authentication at all (the baseline);
//! - (b) tower-http's static bearer check (`ValidateRequestHeaderLayer::bearer`);
//! - (c) `ApiKeyAuthLayer`, cache hit; (c2) the same key presented as a token
//!   `P_…` (the layer's validator has a key prefix, so both run through it);
//! - (d) `ApiKeyAuthLayer`, cache miss on a SQLite file;
//! - (e) `ApiKeyAuthLayer`, malformed credential; (e2) a token of the right
//!   prefix and length whose checksum is wrong (malformed: no lookup, no HMAC);
//! - (f) `ApiKeyAuthLayer`, unknown well-formed key answered from the negative cache;
//! - (g) `ApiKeyAuthLayer` and a `RequireScopesLayer` inside it, cache hit of a
//!   key with three scopes (the route requires one of them);
//! - (h) `ApiKeyAuthLayer`, cache hit of a key with a rate limit (in-process
//!   GCRA, never exhausted: 1,000,000 per second), its headers added;
//! - (l) `ApiKeyAuthLayer`, cache hit of a key with a 64-entry address
//!   allowlist whose last entry holds the client (the whole list is scanned);
//!   (c3) the key of (c), no allowlist, in the same request, which carries
//!   axum's `ConnectInfo` as a server with connect info gives every request;
//! - (i) as (c), with a Prometheus metrics recorder installed when the
//!   validator was built (its counters then really count);
//! - (j) a cache hit on a key drawn uniformly at random from 1,000 cached keys;
//! - (k) the same with 1,000,000 cached keys, so that the cache's memory is
//!   far larger than the CPU's caches.
//!
//! For (j) and (k) the rows are made in the benchmark (HMAC of a generated
//! secret, no store round trip) and served from a `MemoryRepository`. Each
//! key's credential is computed from its index, in the fill and in each timed
//! request, never read from a table. The cache is
//! filled by validating every key once, then the batch writer is flushed
//! (and not again while requests are timed: on this one-threaded runtime its
//! batches would be timed as if they were requests). Filling the million
//! takes a few seconds, and is skipped when a run is filtered to other cases.
//!
//! The `parts` group times pieces of a hit on their own: the pre-keyed HMAC,
//! its verification, the credential's and the token's parse, the clock reading, and the
//! three extensions a hit inserts into a request that axum's router has
//! already given two.
//!
//! Run with `cargo bench --bench auth`.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, body::Body, extract::ConnectInfo, routing::get};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use tower_api_keys::{
    AccountId, AllowedNetworks, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, KeyPair, KeyPrefix,
    NewApiKey, Pepper, RateLimit, RequireScopesLayer, Scopes,
    hash::KeyHasher,
    key::PublicKey,
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

/// A request as a server with connect info gives it: axum's `ConnectInfo`
/// holds the peer, an address inside the allowlisted key's last network.
fn connected_request(credential: &str) -> Request<Body> {
    let mut request = request(Some(("x-api-key", credential)));
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 77], 40_000))));
    request
}

fn bench_auth(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let pepper = || Pepper::try_from("benchmark-pepper-0123456789").unwrap();
    let prefix = KeyPrefix::new("bench").unwrap();
    let (repo, credential, token, scoped_credential, limited_credential, allowlisted_credential) =
        rt.block_on(async {
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
                    NewApiKey::new("limited")
                        .with_rate_limit(RateLimit::new(1_000_000, 1).unwrap()),
                )
                .await
                .unwrap();
            // 63 networks that miss, then the client's.
            let mut networks: Vec<String> = (0..63).map(|i| format!("10.{i}.0.0/16")).collect();
            networks.push("192.0.2.0/24".to_owned());
            let allowlisted = manager
                .create(
                    account,
                    NewApiKey::new("allowlisted")
                        .with_allowed_cidrs(AllowedNetworks::new(&networks).unwrap()),
                )
                .await
                .unwrap();
            let token = prefix.token(
                &PublicKey::parse(&created.key.public_key).unwrap(),
                &created.secret_key,
            );
            (
                repo,
                created.credential(),
                token.expose().to_owned(),
                scoped.credential(),
                limited.credential(),
                allowlisted.credential(),
            )
        });
    let unknown = KeyPair::generate().unwrap().credential();
    let bad_checksum = {
        let pair = KeyPair::generate().unwrap();
        let token = prefix.token(&pair.public_key, &pair.secret_key);
        let (head, last) = token.expose().split_at(token.expose().len() - 1);
        format!("{head}{}", if last == "0" { "1" } else { "0" })
    };

    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let recorded = rt.block_on(async {
        metrics::with_local_recorder(&recorder, || ApiKeyValidator::new(repo.clone(), pepper()))
    });
    let keyed_recorded = app().layer(ApiKeyAuthLayer::new(recorded));
    let (hit, miss) = rt.block_on(async {
        let cached = ApiKeyValidator::builder(repo.clone(), pepper())
            .with_key_prefix(prefix)
            .build();
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
    let keyed_validator = hit.clone();
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
        let response = keyed
            .clone()
            .oneshot(request(Some(("x-api-key", &token))))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the token is a hit");
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
        let response = keyed
            .clone()
            .oneshot(connected_request(&allowlisted_credential))
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the client is in the allowlist");
        let response = keyed
            .clone()
            .oneshot(request(Some(("x-api-key", &allowlisted_credential))))
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "an unknown address is refused");
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
    group.bench_function("c2_api_key_cache_hit_token", |b| {
        b.to_async(&rt)
            .iter(|| keyed.clone().oneshot(request(Some(("x-api-key", &token)))))
    });
    group.bench_function("c3_cache_hit_connect_info", |b| {
        b.to_async(&rt)
            .iter(|| keyed.clone().oneshot(connected_request(&credential)))
    });
    group.bench_function("l_allowlist_64_cache_hit", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(connected_request(&allowlisted_credential))
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
    group.bench_function("e2_malformed_bad_checksum", |b| {
        b.to_async(&rt).iter(|| {
            keyed
                .clone()
                .oneshot(request(Some(("x-api-key", &bad_checksum))))
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
        // Filled on first use, so that a run filtered to other cases skips it.
        let mut state = None;
        let mut rng = SplitMix(0x5eed);
        group.bench_function(name, |b| {
            let service = state.get_or_insert_with(|| rt.block_on(filled(keys, pepper())));
            b.to_async(&rt).iter(|| {
                let credential = nth_credential(rng.below(keys));
                service
                    .clone()
                    .oneshot(request(Some(("x-api-key", as_text(&credential)))))
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
    // What a hit must do whatever the implementation: the three extensions
    // hosts read, inserted into a request's map that already holds the two
    // axum's router puts there (its matched path and URL parameters), against
    // the same map without them; and the one clock reading.
    let key = rt.block_on(keyed_validator.validate(&credential)).unwrap();
    #[derive(Clone)]
    struct RouterPath(#[allow(dead_code)] &'static str);
    #[derive(Clone)]
    struct RouterParams(#[allow(dead_code)] u64);
    let router_extensions = || {
        let mut extensions = http::Extensions::new();
        extensions.insert(RouterPath("/"));
        extensions.insert(RouterParams(0));
        extensions
    };
    parts.bench_function("extensions_router_two", |b| {
        b.iter(|| drop(std::hint::black_box(router_extensions())))
    });
    parts.bench_function("extensions_router_two_and_key_three", |b| {
        b.iter(|| {
            let mut extensions = router_extensions();
            extensions.insert(key.account_id());
            extensions.insert(key.key_id());
            extensions.insert(key.clone());
            drop(std::hint::black_box(extensions))
        })
    });
    parts.bench_function("instant_now", |b| b.iter(std::time::Instant::now));
    parts.bench_function("generate_key_pair", |b| b.iter(KeyPair::generate));
    parts.bench_function("parse_credential", |b| {
        b.iter(|| tower_api_keys::Credential::parse(std::hint::black_box(&credential)).is_ok())
    });
    parts.bench_function("parse_token", |b| {
        b.iter(|| {
            tower_api_keys::Credential::parse_with_prefix(
                std::hint::black_box(&token),
                Some(&prefix),
            )
            .is_ok()
        })
    });
    parts.finish();
}

/// A layer over a validator whose cache holds `keys` distinct keys, each
/// already used once (so that its `last_used_at` throttle and usage count are
/// warm too). Key `i`'s credential is [`nth_credential`]`(i)`.
async fn filled(keys: usize, pepper: Pepper) -> Router {
    let hasher = KeyHasher::new(&pepper);
    let account = Uuid::new_v4();
    let mut rows = Vec::with_capacity(keys);
    let now = Utc::now();
    for index in 0..keys {
        let credential = nth_credential(index);
        let (public_key, secret_key) = as_text(&credential).split_once(':').unwrap();
        let record = ApiKeyRecord {
            key_id: Uuid::new_v4(),
            public_key: public_key.to_owned(),
            secret_key_hash: StoredHash::new(hasher.hash(secret_key).to_hex()),
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
            allowed_cidrs: None,
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
        // The writer's batches run on this benchmark's one thread: flushed
        // once after the fill, and not again while requests are timed.
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    let service = app().layer(ApiKeyAuthLayer::new(validator.clone()));
    // Through the layer, so that the usage counts hold every key as well.
    for index in 0..keys {
        let response = service
            .clone()
            .oneshot(request(Some((
                "x-api-key",
                as_text(&nth_credential(index)),
            ))))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(validator.cached_entries().known, keys as u64);
    // The fill's `last_used_at` values and counts, written before timing starts.
    validator.flush().await.unwrap();
    service
}

/// Key `index`'s credential, computed rather than stored: reading it from a
/// table of a million would cost each timed request a cache miss of the
/// benchmark's own that a table of a thousand does not, and the comparison
/// is of the layer's cost. Both cases compute it, the same way.
fn nth_credential(index: usize) -> [u8; CREDENTIAL_LEN] {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut credential =
        *b"pk_--------------------------------:sk_--------------------------------";
    let mut rng = SplitMix(index as u64);
    let mut bits = 0;
    let mut left = 0;
    for (position, byte) in credential.iter_mut().enumerate() {
        if (3..35).contains(&position) || position >= 39 {
            if left == 0 {
                bits = rng.next();
                left = 10;
            }
            // Six random bits a character; the slight bias of `% 62` is harmless here.
            *byte = ALPHABET[(bits & 63) as usize % ALPHABET.len()];
            bits >>= 6;
            left -= 1;
        }
    }
    credential
}

/// A credential's bytes as text.
fn as_text(credential: &[u8; CREDENTIAL_LEN]) -> &str {
    std::str::from_utf8(credential).unwrap()
}

/// `pk_<32>:sk_<32>`.
const CREDENTIAL_LEN: usize = 71;

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
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
