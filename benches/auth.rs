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
//!   validator was built (its counters then really count).
//!
//! Run with `cargo bench --bench auth`.

use std::time::Duration;

use axum::{Router, body::Body, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use tower::ServiceExt;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, KeyPair, NewApiKey, Pepper, RateLimit,
    RequireScopesLayer, Scopes, store::SeaOrmRepository,
};

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

criterion_group!(benches, bench_auth);
criterion_main!(benches);
