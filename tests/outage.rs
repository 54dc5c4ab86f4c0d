//! A real database outage: a TCP forwarder on loopback sits between the pool and
//! PostgreSQL, and the test cuts it, hangs it and restores it.
//! Needs `TEST_POSTGRES_URL`: ignored unless run with `--include-ignored` (CI does).

mod common;

use std::time::Duration;

use common::faults::{Forwarder, upstream_of};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use tower_api_keys::{
    ApiKeyValidator, NewApiKey,
    store::{SeaOrmRepository, connect_options},
};
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn postgres_outage_degrades_to_503_and_recovers() {
    let url = common::provision::required("TEST_POSTGRES_URL", "a PostgreSQL server");
    if !cfg!(feature = "postgres") {
        panic!("the `postgres` feature is off; the outage test needs it");
    }
    let forwarder = Forwarder::start(upstream_of(&url)).await;
    let through = forwarder.url_for(&url);

    let schema = format!("tak_outage_{}", Uuid::new_v4().simple());
    let admin = Database::connect(url.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let mut options = connect_options(&through);
    options
        .set_schema_search_path(schema.clone())
        .acquire_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1));
    let repo = SeaOrmRepository::connect_with(options).await.unwrap();

    let validator = ApiKeyValidator::builder(repo, common::pepper())
        .with_positive_ttl(Duration::from_millis(300))
        .with_stale_if_error(Duration::from_secs(60))
        .with_store_timeout(Duration::from_millis(700))
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    // The feed empties the cache when it connects: wait for that first.
    let started = std::time::Instant::now();
    while !validator.change_feed().is_some_and(|feed| feed.connected) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change feed did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (h, account, cached) = common::Harness::with_key(validator, "cached").await;
    let uncached = h
        .manager
        .create(account, NewApiKey::new("uncached"))
        .await
        .unwrap();
    // The feed also evicts a key when its row changes: wait until it has seen
    // both inserts, so that the key cached below stays cached.
    let started = std::time::Instant::now();
    while !h
        .validator
        .change_feed()
        .is_some_and(|feed| feed.connected && feed.events >= 2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change feed did not report both inserts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.whoami(&cached.credential()).await.status(),
        StatusCode::OK
    );

    // Cut: existing connections die, new ones are refused.
    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = h.whoami(&cached.credential()).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a cached key rides out the outage within the grace"
    );
    let response = h.whoami(&uncached.credential()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let unknown = tower_api_keys::KeyPair::generate().unwrap().credential();
    assert_eq!(
        h.whoami(&unknown).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never 401 on a store failure"
    );
    // The recorded use of the cached key cannot be written now; it is kept.
    assert!(h.validator.flush().await.is_err());

    // Hang: the database accepts connections and never answers. The store timeout
    // answers for it (the outer timeout only keeps a broken build from hanging CI).
    forwarder.hang();
    let response = tokio::time::timeout(Duration::from_secs(20), h.whoami(&uncached.credential()))
        .await
        .expect("a hung database must not hang requests");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.whoami(&cached.credential()).await.status(),
        StatusCode::OK
    );

    // Restore: validation recovers without a restart, and the kept write lands.
    forwarder.restore();
    let mut recovered = false;
    for _ in 0..50 {
        if h.whoami(&uncached.credential()).await.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "validation must recover once the database is back"
    );
    let mut flushed = false;
    for _ in 0..20 {
        if h.validator.flush().await.is_ok() {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(flushed);
    let key = h.manager.get(account, cached.key.key_id).await.unwrap();
    assert!(
        key.last_used_at.is_some(),
        "the write that failed during the outage was retried"
    );

    admin
        .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .ok();
}
