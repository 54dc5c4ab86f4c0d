//! The authentication layer through a real axum server and a real database.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{Harness, Probe, TestDb, pepper};
use reqwest::StatusCode;
use serde_json::Value;
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, NewApiKey, Pepper,
    hash::KeyHasher,
    store::{ApiKeyRecord, ApiKeyRepository},
};
use uuid::Uuid;

async fn assert_problem(
    response: reqwest::Response,
    status: u16,
    detail: &str,
) -> reqwest::header::HeaderMap {
    assert_eq!(response.status().as_u16(), status);
    let headers = response.headers().clone();
    assert_eq!(headers["content-type"], "application/problem+json");
    if status == 401 {
        assert!(headers.contains_key("www-authenticate"));
    }
    if status == 503 {
        assert!(headers.contains_key("retry-after"));
    }
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], detail, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(body["title"].is_string());
    headers
}

async fn valid_key_reaches_the_handler_with_its_ids(db: &TestDb) {
    let (h, account, created) =
        Harness::with_key(ApiKeyValidator::new(db.repo.clone(), pepper()), "ci").await;

    let response = h.whoami(&created.credential()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["account_id"], account.to_string());
    assert_eq!(body["key_id"], created.key.key_id.to_string());

    // Bearer works too, case-insensitively.
    let response = h
        .whoami_with("authorization", format!("bEaRer {}", created.credential()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

async fn every_rejection_class_has_its_status_and_detail(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let (h, _, created) =
        Harness::with_key(ApiKeyValidator::new(probe.clone(), pepper()), "ci").await;

    // Missing: no header, or a foreign Authorization scheme.
    let response = h.client.get(h.url("/v1/whoami")).send().await.unwrap();
    assert_problem(response, 401, "Missing API key").await;
    for foreign in [
        "Basic dXNlcjpwYXNz",
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        &format!("Bearer PK_{}", &created.credential()[3..]),
    ] {
        let response = h
            .client
            .get(h.url("/v1/whoami"))
            .header("authorization", foreign)
            .send()
            .await
            .unwrap();
        assert_problem(response, 401, "Missing API key").await;
    }

    // Malformed: refused before any lookup.
    let before = probe.lookups();
    let credential = created.credential();
    let malformed = [
        "".to_owned(),
        credential[..70].to_owned(),
        format!("{credential}x"),
        credential.replacen(':', " : ", 1),
        credential.replacen("pk_", "PK_", 1),
        credential.replacen("pk_", "pk-", 1),
        format!("{credential}:"),
        "a".repeat(4096),
    ];
    for value in &malformed {
        let response = h.whoami(value).await;
        assert_problem(
            response,
            401,
            "Invalid API key format. Expected format: pk_xxx:sk_xxx",
        )
        .await;
    }
    let response = h
        .client
        .get(h.url("/v1/whoami"))
        .header("x-api-key", &credential)
        .header("x-api-key", &credential)
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        401,
        "Invalid API key format. Expected format: pk_xxx:sk_xxx",
    )
    .await;
    let response = h
        .client
        .get(h.url("/v1/whoami"))
        .header(
            "x-api-key",
            reqwest::header::HeaderValue::from_bytes(b"pk_\xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_problem(
        response,
        401,
        "Invalid API key format. Expected format: pk_xxx:sk_xxx",
    )
    .await;
    assert_eq!(
        probe.lookups(),
        before,
        "malformed credentials must not reach the store"
    );

    // Invalid: unknown key and wrong secret.
    let unknown = tower_api_keys::KeyPair::generate().unwrap().credential();
    assert_problem(h.whoami(&unknown).await, 401, "Invalid API key").await;
    let wrong_secret = format!("{}:{}", created.key.public_key, &unknown[36..]);
    assert_problem(h.whoami(&wrong_secret).await, 401, "Invalid API key").await;

    // Store down and nothing cached: 503, never 401.
    h.validator.invalidate_all();
    probe.set_failing(true);
    assert_problem(
        h.whoami(&unknown).await,
        503,
        "Authentication temporarily unavailable",
    )
    .await;
    probe.set_failing(false);
    assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
}

async fn refusals_are_byte_identical(db: &TestDb) {
    let (h, account, live) =
        Harness::with_key(ApiKeyValidator::new(db.repo.clone(), pepper()), "live").await;
    let revoked = h
        .manager
        .create(account, NewApiKey::new("revoked"))
        .await
        .unwrap();
    h.manager.revoke(account, revoked.key.key_id).await.unwrap();
    // An expired row, as another process might have written it.
    let expired = tower_api_keys::KeyPair::generate().unwrap();
    db.repo
        .insert(common::row(
            &expired,
            account.into_inner(),
            Some(Utc::now() - TimeDelta::hours(1)),
        ))
        .await
        .unwrap();
    let unknown = tower_api_keys::KeyPair::generate().unwrap();
    let cases = [
        unknown.credential(),
        format!("{}:{}", live.key.public_key, unknown.secret_key.expose()),
        revoked.credential(),
        expired.credential(),
    ];
    let mut seen = Vec::new();
    for credential in &cases {
        let response = h.whoami(credential).await;
        let status = response.status();
        let mut headers: Vec<_> = response
            .headers()
            .iter()
            .filter(|(name, _)| *name != "date")
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect();
        headers.sort();
        let body = response.bytes().await.unwrap();
        seen.push((status, headers, body));
    }
    assert_eq!(seen[0].0, StatusCode::UNAUTHORIZED);
    for other in &seen[1..] {
        assert_eq!(other, &seen[0]);
    }
}

async fn cache_hit_does_not_touch_the_store(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let (h, _, created) =
        Harness::with_key(ApiKeyValidator::new(probe.clone(), pepper()), "ci").await;

    assert_eq!(
        h.whoami(&created.credential()).await.status(),
        StatusCode::OK
    );
    let after_first = probe.lookups();
    assert_eq!(after_first, 1);
    for _ in 0..20 {
        assert_eq!(
            h.whoami(&created.credential()).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        probe.lookups(),
        after_first,
        "cache hits must not query the store"
    );

    // A hit still checks the whole secret.
    let mut wrong = created.credential();
    wrong.pop();
    wrong.push(if created.credential().ends_with('A') {
        'B'
    } else {
        'A'
    });
    assert_eq!(h.whoami(&wrong).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(probe.lookups(), after_first);

    // Unknown well-formed keys are remembered too.
    let unknown = tower_api_keys::KeyPair::generate().unwrap().credential();
    h.whoami(&unknown).await;
    h.whoami(&unknown).await;
    assert_eq!(probe.lookups(), after_first + 1);
}

async fn cached_key_is_refused_after_it_expires(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let h = Harness::start(ApiKeyValidator::new(probe.clone(), pepper())).await;
    let pair = tower_api_keys::KeyPair::generate().unwrap();
    db.repo
        .insert(common::row(
            &pair,
            Uuid::new_v4(),
            Some(Utc::now() + TimeDelta::milliseconds(1500)),
        ))
        .await
        .unwrap();
    assert_eq!(h.whoami(&pair.credential()).await.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let response = h.whoami(&pair.credential()).await;
    assert_problem(response, 401, "Invalid API key").await;
}

async fn revoked_key_is_refused_right_after_invalidate(db: &TestDb) {
    // Without the change feed, which would evict the key by itself.
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_change_feed(false)
        .build();
    let (h, account, created) = Harness::with_key(validator, "ci").await;
    assert_eq!(
        h.whoami(&created.credential()).await.status(),
        StatusCode::OK
    );

    // Revoked behind the cache's back (another process): still cached...
    db.repo
        .revoke(
            account.into_inner(),
            created.key.key_id.into_inner(),
            &Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        h.whoami(&created.credential()).await.status(),
        StatusCode::OK
    );
    // ...until the entry is invalidated.
    h.validator.invalidate(&created.key.public_key);
    assert_problem(
        h.whoami(&created.credential()).await,
        401,
        "Invalid API key",
    )
    .await;
}

async fn last_used_at_lands_in_one_batch_after_flush(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    let h = Harness::start(validator).await;
    let account = AccountId::new(Uuid::new_v4());
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(
            h.manager
                .create(account, NewApiKey::new(format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    let before = Utc::now() - TimeDelta::seconds(1);
    for key in &keys {
        for _ in 0..5 {
            assert_eq!(h.whoami(&key.credential()).await.status(), StatusCode::OK);
        }
    }
    // Nothing written per request.
    assert_eq!(probe.flushes(), 0);
    for key in &keys {
        assert!(
            h.manager
                .get(account, key.key.key_id)
                .await
                .unwrap()
                .last_used_at
                .is_none()
        );
    }
    assert_eq!(h.validator.flush().await.unwrap(), 3);
    assert_eq!(probe.flushes(), 1, "one batched write for all keys");
    for key in &keys {
        let used = h
            .manager
            .get(account, key.key.key_id)
            .await
            .unwrap()
            .last_used_at;
        assert!(used.is_some_and(|at| at >= before), "{used:?}");
    }
    // Throttled: more uses within the interval record nothing new.
    h.whoami(&keys[0].credential()).await;
    assert_eq!(h.validator.flush().await.unwrap(), 0);
}

async fn failed_flush_is_retried_not_dropped(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    let (h, account, key) = Harness::with_key(validator, "k").await;
    assert_eq!(h.whoami(&key.credential()).await.status(), StatusCode::OK);
    probe.set_failing(true);
    assert!(h.validator.flush().await.is_err());
    probe.set_failing(false);
    assert_eq!(h.validator.flush().await.unwrap(), 1);
    assert!(
        h.manager
            .get(account, key.key.key_id)
            .await
            .unwrap()
            .last_used_at
            .is_some()
    );
}

async fn cached_key_survives_a_store_outage_within_the_grace(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_positive_ttl(Duration::from_millis(200))
        .with_stale_if_error(Duration::from_secs(60))
        .build();
    let (h, _, key) = Harness::with_key(validator, "k").await;
    assert_eq!(h.whoami(&key.credential()).await.status(), StatusCode::OK);
    probe.set_failing(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Stale, the store fails: the cached answer still serves.
    assert_eq!(h.whoami(&key.credential()).await.status(), StatusCode::OK);
    // A key never seen: 503.
    let other = tower_api_keys::KeyPair::generate().unwrap().credential();
    assert_eq!(
        h.whoami(&other).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    probe.set_failing(false);
    assert_eq!(h.whoami(&key.credential()).await.status(), StatusCode::OK);
}

async fn reference_vectors_validate_from_stored_rows(db: &TestDb) {
    let vectors = common_vectors();
    for case in vectors["cases"].as_array().unwrap() {
        let pepper = Pepper::try_from(case["pepper"].as_str().unwrap()).unwrap();
        let validator = ApiKeyValidator::new(db.repo.clone(), pepper);
        let h = Harness::start(validator).await;
        let account = Uuid::new_v4();
        let key_id = Uuid::new_v4();
        // The row as the reference service wrote it: its hash, from the vector file.
        db.repo
            .insert(ApiKeyRecord {
                key_id,
                title: "reference".into(),
                ..common::record(
                    case["public_key"].as_str().unwrap(),
                    case["secret_key_hash"].as_str().unwrap(),
                    account,
                )
            })
            .await
            .unwrap();
        let response = h.whoami(case["header"].as_str().unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK, "{}", case["public_key"]);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["account_id"], account.to_string());
        assert_eq!(body["key_id"], key_id.to_string());
    }
}

/// The reference service's vectors: a copy of the contract's
/// `vectors/seed_hmac.json` kept in this repository (`.ci/run` checks that the
/// copy is current).
fn common_vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_hmac.json");
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// On MySQL a case-insensitive collation finds a row by any spelling of its
/// public key; only the exact spelling may validate (and be cached), so that a
/// revoke, which evicts the stored spelling, leaves no other spelling usable.
async fn only_the_exact_public_key_validates_under_a_case_insensitive_collation(db: &TestDb) {
    use sea_orm::ConnectionTrait;
    if db.backend == "mysql" {
        // As an adopted table with the server's default collation would be.
        db.repo
            .connection()
            .execute_unprepared(
                "ALTER TABLE api_keys MODIFY public_key VARCHAR(64) \
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL",
            )
            .await
            .unwrap();
    }
    let (h, account, created) =
        Harness::with_key(ApiKeyValidator::new(db.repo.clone(), pepper()), "ci").await;
    let credential = created.credential();
    let swapped_public: String = credential[3..35]
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    let swapped = format!("pk_{swapped_public}{}", &credential[35..]);
    assert_problem(h.whoami(&swapped).await, 401, "Invalid API key").await;
    assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    h.manager.revoke(account, created.key.key_id).await.unwrap();
    assert_problem(h.whoami(&credential).await, 401, "Invalid API key").await;
    assert_problem(h.whoami(&swapped).await, 401, "Invalid API key").await;
}

backend_tests!(
    only_the_exact_public_key_validates_under_a_case_insensitive_collation,
    valid_key_reaches_the_handler_with_its_ids,
    every_rejection_class_has_its_status_and_detail,
    refusals_are_byte_identical,
    cache_hit_does_not_touch_the_store,
    cached_key_is_refused_after_it_expires,
    revoked_key_is_refused_right_after_invalidate,
    last_used_at_lands_in_one_batch_after_flush,
    failed_flush_is_retried_not_dropped,
    cached_key_survives_a_store_outage_within_the_grace,
    reference_vectors_validate_from_stored_rows,
    migrations_keep_their_own_history_table,
);

#[test]
fn every_reference_vector_reproduces() {
    let vectors = common_vectors();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let pepper = Pepper::try_from(case["pepper"].as_str().unwrap()).unwrap();
        let hash = KeyHasher::new(&pepper).hash(case["secret_key"].as_str().unwrap());
        assert_eq!(hash.to_hex(), case["secret_key_hash"].as_str().unwrap());
        let credential =
            tower_api_keys::Credential::parse(case["header"].as_str().unwrap()).unwrap();
        assert_eq!(
            credential.public_key(),
            case["public_key"].as_str().unwrap()
        );
        assert_eq!(
            credential.secret_key(),
            case["secret_key"].as_str().unwrap()
        );
    }
}

#[tokio::test]
async fn anonymous_mode_passes_requests_without_a_credential_only() {
    use axum::{Router, routing::get};
    use tower_api_keys::ApiKeyAuthLayer;
    let validator = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let created = manager.create(account, NewApiKey::new("k")).await.unwrap();
    let router = Router::new()
        .route(
            "/",
            get(|account: Option<AccountId>| async move {
                account.map_or_else(|| "anonymous".to_owned(), |a| a.to_string())
            }),
        )
        .layer(ApiKeyAuthLayer::new(validator).allow_anonymous(true));
    let addr = common::serve(router).await;
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/");
    assert_eq!(
        client.get(&url).send().await.unwrap().text().await.unwrap(),
        "anonymous"
    );
    let with_key = client
        .get(&url)
        .header("x-api-key", created.credential())
        .send()
        .await
        .unwrap();
    assert_eq!(with_key.text().await.unwrap(), account.to_string());
    let bad = client
        .get(&url)
        .header("x-api-key", "pk_bad")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    let unknown = tower_api_keys::KeyPair::generate().unwrap().credential();
    let bad = client
        .get(&url)
        .header("x-api-key", unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn extractor_without_the_layer_says_so() {
    use axum::{Router, routing::get};
    let router = Router::new().route(
        "/",
        get(|account: AccountId| async move { account.to_string() }),
    );
    let addr = common::serve(router).await;
    let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().contains("ApiKeyAuthLayer"),
        "{body}"
    );
}

#[tokio::test]
async fn custom_rejection_replaces_the_response() {
    use axum::{Router, routing::get};
    use tower_api_keys::{ApiKeyAuthLayer, Rejection, RejectionBody};
    let validator = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    let layer = ApiKeyAuthLayer::new(validator).with_rejection(|rejection: Rejection| {
        let mut response = http::Response::new(RejectionBody::from(format!("nope: {rejection:?}")));
        *response.status_mut() = http::StatusCode::IM_A_TEAPOT;
        response
    });
    let router = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(layer);
    let addr = common::serve(router).await;
    let response = reqwest::get(format!("http://{addr}/")).await.unwrap();
    assert_eq!(response.status().as_u16(), 418);
    assert_eq!(response.text().await.unwrap(), "nope: MissingCredential");
}

/// CONTRACT §3: the crate's own migration history table, never `seaql_migrations`.
async fn migrations_keep_their_own_history_table(db: &TestDb) {
    use sea_orm::{ConnectionTrait, Statement};
    let conn = db.repo.connection();
    let backend = conn.get_database_backend();
    let count =
        |table: &str| Statement::from_string(backend, format!("SELECT COUNT(*) AS n FROM {table}"));
    let applied = conn
        .query_one_raw(count(tower_api_keys::migration::MIGRATION_TABLE))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        applied.try_get::<i64>("", "n").unwrap(),
        tower_api_keys::migration::migrations().len() as i64
    );
    assert!(
        conn.query_one_raw(count("seaql_migrations")).await.is_err(),
        "the host's seaql_migrations must not be created"
    );
}

/// CONTRACT §3: on SQLite, timestamps are RFC 3339 text beginning with the
/// four-digit year, with at least millisecond precision.
#[tokio::test]
async fn sqlite_stores_timestamps_as_rfc3339_text_with_milliseconds() {
    let db = common::sqlite().await;
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    for i in 0..200 {
        let created = manager
            .create(
                account,
                NewApiKey::new(format!("k{i}")).with_expires_in_days(30),
            )
            .await
            .unwrap();
        if i < 5 {
            validator.validate(&created.credential()).await.unwrap();
        }
    }
    validator.flush().await.unwrap();
    let rows: Vec<(String, String, String, Option<String>)> = sea_orm::sqlx::query_as(
        "SELECT typeof(created_at), created_at, expires_at, last_used_at FROM api_keys",
    )
    .fetch_all(db.repo.connection().get_sqlite_connection_pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 200);
    let is_rfc3339_ms = |text: &str| {
        let b = text.as_bytes();
        b.len() >= 24
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && b[20..23].iter().all(u8::is_ascii_digit)
            && chrono::DateTime::parse_from_rfc3339(text).is_ok()
    };
    let mut used = 0;
    for (kind, created_at, expires_at, last_used_at) in &rows {
        assert_eq!(kind, "text");
        assert!(is_rfc3339_ms(created_at), "{created_at}");
        assert!(is_rfc3339_ms(expires_at), "{expires_at}");
        if let Some(last_used_at) = last_used_at {
            assert!(is_rfc3339_ms(last_used_at), "{last_used_at}");
            used += 1;
        }
    }
    assert_eq!(used, 5);
}
