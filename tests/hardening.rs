//! Hardening (issue 5): secret hygiene in logs, `Debug` and errors; identical
//! refusals whatever the header form and cache state; over-long credentials
//! refused before any store lookup.
//!
//! This test binary installs one **global** `tracing` subscriber at TRACE level
//! that writes into a shared buffer, so that events from every thread (tokio
//! workers, the SQLite worker threads, the flusher) are captured, and `log`
//! records are bridged in too.

mod common;

use std::{
    io,
    sync::{Arc, Mutex, MutexGuard, OnceLock},
    time::Duration,
};

use chrono::{TimeDelta, Utc};
use common::{Harness, Probe, TestDb, pepper};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, CreatedKey, Credential, KeyManager, KeyPair,
    ManagerError, NewApiKey, Pepper, PepperFileError, Rejection, entity,
    hash::{KeyHasher, SecretHash},
    store::{ApiKeyRecord, ApiKeyRepository, MemoryRepository, StoreError},
};
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Log capture

/// Everything every subscriber event of this test binary printed.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }
}

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The binary-wide capture, installed on first use.
fn captured() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(captured.clone())
            .try_init()
            .expect("no other global subscriber in this test binary");
        captured
    })
}

/// The longest run of consecutive ASCII hex digits in `text`.
fn longest_hex_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}

fn assert_absent(haystack: &str, needle: &str, what: &str, context: &str) {
    assert!(!needle.is_empty());
    if let Some(at) = haystack.find(needle) {
        let start = haystack[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = haystack[at..].find('\n').map_or(haystack.len(), |i| at + i);
        panic!("{what} found in {context}: {}", &haystack[start..end]);
    }
}

/// Every form of a key pair's secret that must never be printed.
fn secret_forms(public_key: &str, secret_key: &str) -> Vec<(String, &'static str)> {
    vec![
        (secret_key.to_owned(), "a secret key"),
        (secret_key[3..].to_owned(), "a secret key body"),
        (format!("{public_key}:{secret_key}"), "a full credential"),
        (
            KeyHasher::new(&pepper()).hash(secret_key).to_hex(),
            "a secret_key_hash",
        ),
        (
            KeyHasher::new(&pepper())
                .hash(secret_key)
                .to_hex()
                .to_uppercase(),
            "a secret_key_hash (upper case)",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Secret hygiene in logs

async fn send(request: reqwest::RequestBuilder) -> reqwest::Response {
    request.send().await.unwrap()
}

/// Drives create, validate, every rejection, revoke, delete and flush, through
/// the key manager, the validator and HTTP, and checks what was logged.
async fn nothing_secret_is_ever_logged(db: &TestDb) {
    let logs = captured();
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_flush_interval(Duration::from_secs(3600))
        .with_positive_ttl(Duration::from_millis(300))
        .build();
    let h = Harness::start(validator).await;
    let account = AccountId::new(Uuid::new_v4());
    let mut forbidden: Vec<(String, &'static str)> =
        vec![(common::PEPPER.to_owned(), "the pepper")];
    let keys = h.url("/v1/api-keys");
    let as_owner =
        |request: reqwest::RequestBuilder| request.header("x-account-id", account.to_string());

    // Create through the manager and through the HTTP router.
    let by_manager = h
        .manager
        .create(
            account,
            NewApiKey::new("hygiene").with_description("made by KeyManager"),
        )
        .await
        .unwrap();
    forbidden.extend(secret_forms(
        &by_manager.key.public_key,
        by_manager.secret_key.expose(),
    ));
    let response = send(as_owner(h.client.post(&keys)).json(&json!({
        "title": "hygiene over http",
        "description": null,
        "expires_in_days": 30,
    })))
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let by_http: Value = response.json().await.unwrap();
    let http_public = by_http["public_key"].as_str().unwrap().to_owned();
    let http_secret = by_http["secret_key"].as_str().unwrap().to_owned();
    let http_key_id = by_http["key_id"].as_str().unwrap().to_owned();
    let http_credential = format!("{http_public}:{http_secret}");
    forbidden.extend(secret_forms(&http_public, &http_secret));

    // Validate: success over X-API-Key, Bearer, and directly.
    assert_eq!(
        h.whoami(&by_manager.credential()).await.status(),
        StatusCode::OK
    );
    let bearer = send(
        h.client
            .get(h.url("/v1/whoami"))
            .header("authorization", format!("Bearer {http_credential}")),
    )
    .await;
    assert_eq!(bearer.status(), StatusCode::OK);
    h.validator
        .validate(&by_manager.credential())
        .await
        .unwrap();
    // Past the positive TTL: a fresh store lookup that succeeds.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        h.whoami(&by_manager.credential()).await.status(),
        StatusCode::OK
    );

    // Missing.
    let response = send(h.client.get(h.url("/v1/whoami"))).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Malformed, each carrying a real secret a careless log line would print.
    let credential = by_manager.credential();
    for malformed in [
        format!("{credential}x"),
        format!("{credential}:"),
        credential.replacen(':', " : ", 1),
        credential.replacen("pk_", "PK_", 1),
        format!("{}:{}", &credential[..35], "x".repeat(40)),
        format!("{credential}{}", "a".repeat(2048)),
    ] {
        let response = h.whoami(&malformed).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "{malformed:.80}"
        );
    }
    let response = send(
        h.client
            .get(h.url("/v1/whoami"))
            .header("authorization", format!("Bearer {credential}x")),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        h.validator
            .validate(&format!("{credential}x"))
            .await
            .is_err()
    );
    // Unknown key (cold, then from the negative cache).
    let unknown = KeyPair::generate().unwrap();
    forbidden.extend(secret_forms(
        unknown.public_key.as_str(),
        unknown.secret_key.expose(),
    ));
    for _ in 0..2 {
        assert_eq!(
            h.whoami(&unknown.credential()).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // Wrong secret for a known key.
    let wrong = format!(
        "{}:{}",
        by_manager.key.public_key,
        unknown.secret_key.expose()
    );
    assert_eq!(h.whoami(&wrong).await.status(), StatusCode::UNAUTHORIZED);
    assert!(h.validator.validate(&wrong).await.is_err());
    // Expired, as another process may have written it.
    let expired = KeyPair::generate().unwrap();
    forbidden.extend(secret_forms(
        expired.public_key.as_str(),
        expired.secret_key.expose(),
    ));
    db.repo
        .insert(common::row(
            &expired,
            account.into_inner(),
            Some(Utc::now() - TimeDelta::hours(1)),
        ))
        .await
        .unwrap();
    assert_eq!(
        h.whoami(&expired.credential()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A row whose stored hash is corrupt (63 hex characters and a `z`): the
    // warning names the key id, never the stored value.
    let corrupt = KeyPair::generate().unwrap();
    let corrupt_hash = format!(
        "{}z",
        &KeyHasher::new(&pepper())
            .hash(corrupt.secret_key.expose())
            .to_hex()[..63]
    );
    forbidden.extend(secret_forms(
        corrupt.public_key.as_str(),
        corrupt.secret_key.expose(),
    ));
    forbidden.push((corrupt_hash[..63].to_owned(), "a corrupt stored hash"));
    db.repo
        .insert(ApiKeyRecord {
            secret_key_hash: corrupt_hash.clone().into(),
            ..common::row(&corrupt, account.into_inner(), None)
        })
        .await
        .unwrap();
    assert_eq!(
        h.whoami(&corrupt.credential()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Revoke: through the router, then use the key; and through the manager.
    let response = send(as_owner(
        h.client.patch(format!("{keys}/{http_key_id}/revoke")),
    ))
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        h.whoami(&http_credential).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let second = h
        .manager
        .create(account, NewApiKey::new("revoked by the manager"))
        .await
        .unwrap();
    forbidden.extend(secret_forms(
        &second.key.public_key,
        second.secret_key.expose(),
    ));
    assert_eq!(
        h.whoami(&second.credential()).await.status(),
        StatusCode::OK
    );
    h.manager.revoke(account, second.key.key_id).await.unwrap();
    assert_eq!(
        h.whoami(&second.credential()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Listing and reading keys.
    let response = send(as_owner(h.client.get(&keys))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed = response.text().await.unwrap();
    let response = send(as_owner(h.client.get(format!("{keys}/{http_key_id}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let one = response.text().await.unwrap();
    for (needle, what) in &forbidden {
        assert_absent(&listed, needle, what, "the key list");
        assert_absent(&one, needle, what, "a key read back");
    }

    // Store unavailable: validation of an uncached key, a stale cached key, a
    // management call, and a flush.
    probe.set_failing(true);
    let never_seen = KeyPair::generate().unwrap();
    forbidden.extend(secret_forms(
        never_seen.public_key.as_str(),
        never_seen.secret_key.expose(),
    ));
    assert_eq!(
        h.whoami(&never_seen.credential()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        h.whoami(&by_manager.credential()).await.status(),
        StatusCode::OK,
        "stale-if-error"
    );
    let response =
        send(as_owner(h.client.post(&keys)).json(&json!({"title": "during outage"}))).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.validator.flush().await.is_err());
    probe.set_failing(false);
    h.validator.flush().await.unwrap();

    // A store error from the database itself (a duplicate row) carries no hash.
    let duplicate = ApiKeyRecord {
        key_id: by_manager.key.key_id.into_inner(),
        title: "duplicate".into(),
        ..common::record(
            &by_manager.key.public_key,
            &KeyHasher::new(&pepper())
                .hash(by_manager.secret_key.expose())
                .to_hex(),
            account.into_inner(),
        )
    };
    let err = db.repo.insert(duplicate.clone()).await.unwrap_err();
    let manager_err = ManagerError::from(err);
    let err_text = format!("{manager_err} {manager_err:?}");
    tracing::error!(error = %manager_err, debug = ?manager_err, "duplicate insert, as a host would log it");
    for (needle, what) in &forbidden {
        assert_absent(&err_text, needle, what, "a store error");
    }

    // Delete: through the manager and through the router.
    h.manager.delete(account, second.key.key_id).await.unwrap();
    let response = send(as_owner(h.client.delete(format!("{keys}/{http_key_id}")))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        h.whoami(&http_credential).await.status(),
        StatusCode::UNAUTHORIZED
    );
    h.validator.shutdown().await;

    let text = logs.text();
    // The capture works and saw this test: TRACE-level events and the
    // manager's lines naming the key id (not secret).
    assert!(text.contains("API key created"), "{text}");
    assert!(text.contains("API key rejected"), "{text}");
    assert!(text.contains("API key lookup failed"), "{text}");
    assert!(text.contains(&by_manager.key.key_id.to_string()), "{text}");
    for (needle, what) in &forbidden {
        assert_absent(&text, needle, what, "the captured logs");
    }
    let run = longest_hex_run(&text);
    assert!(run < 64, "a run of {run} hex characters was logged");
}

// ---------------------------------------------------------------------------
// Debug and Display of every public type that holds a secret

#[tokio::test]
async fn debug_and_errors_redact_every_secret() {
    let pepper_text = "a-debug-test-pepper-value-0123456789";
    let pepper = Pepper::try_from(pepper_text).unwrap();
    let hasher = KeyHasher::new(&pepper);
    let repository = MemoryRepository::new();
    let validator = ApiKeyValidator::builder(repository.clone(), pepper.clone())
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let created: CreatedKey = manager
        .create(account, NewApiKey::new("debug"))
        .await
        .unwrap();
    let credential_text = created.credential();
    let credential = Credential::parse(&credential_text).unwrap();
    let secret = created.secret_key.expose();
    let hash = hasher.hash(secret);
    let hash_hex = hash.to_hex();
    let hash_bytes: Vec<u8> = (0..4)
        .map(|i| u8::from_str_radix(&hash_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let pair = KeyPair::generate().unwrap();
    let record = repository
        .find_by_public_key(&created.key.public_key)
        .await
        .unwrap()
        .unwrap();
    let model = entity::Model {
        key_id: record.key_id,
        public_key: record.public_key.clone(),
        secret_key_hash: record.secret_key_hash.clone(),
        account_id: record.account_id,
        title: record.title.clone(),
        description: None,
        status: Some("active".into()),
        expires_at: None,
        last_used_at: None,
        created_at: record.created_at,
        pepper_id: record.pepper_id.clone(),
        scopes: None,
        metadata: None,
        rotated_from: None,
        rate_limit_requests: None,
        rate_limit_period_seconds: None,
        allowed_cidrs: None,
    };
    let active_model = entity::ActiveModel::from(model.clone());
    assert_eq!(record.secret_key_hash, hash_hex);

    let printed = [
        ("KeyPair", format!("{pair:?}")),
        ("SecretKey", format!("{:?}", pair.secret_key)),
        ("CreatedKey", format!("{created:?}")),
        (
            "SecretKey of CreatedKey",
            format!("{:?}", created.secret_key),
        ),
        ("Credential", format!("{credential:?}")),
        ("Pepper", format!("{pepper:?}")),
        ("SecretHash", format!("{hash:?}")),
        (
            "SecretHash::from_hex",
            format!("{:?}", SecretHash::from_hex(&hash_hex).unwrap()),
        ),
        ("KeyHasher", format!("{hasher:?}")),
        ("ApiKeyRecord", format!("{record:?}")),
        ("entity::Model", format!("{model:?}")),
        ("entity::ActiveModel", format!("{active_model:?}")),
        ("ApiKeyValidator", format!("{validator:?}")),
        (
            "ValidatorBuilder",
            format!(
                "{:?}",
                ApiKeyValidator::builder(MemoryRepository::new(), pepper.clone())
            ),
        ),
        ("KeyManager", format!("{manager:?}")),
        (
            "ApiKeyAuthLayer",
            format!("{:?}", ApiKeyAuthLayer::new(validator.clone())),
        ),
        ("MemoryRepository", format!("{repository:?}")),
        (
            "AuthenticatedKey",
            format!("{:?}", validator.validate(&credential_text).await.unwrap()),
        ),
        (
            "Rejection",
            format!(
                "{:?}",
                validator.validate(&format!("{credential_text}x")).await
            ),
        ),
        (
            "MalformedCredential",
            format!(
                "{0} {0:?}",
                Credential::parse(&format!("{credential_text}x")).unwrap_err()
            ),
        ),
    ];
    let pair_secret = pair.secret_key.expose();
    for (ty, text) in &printed {
        for (needle, what) in [
            (secret, "the secret key"),
            (&secret[3..], "the secret key body"),
            (pair_secret, "the secret key"),
            (&pair_secret[3..], "the secret key body"),
            (credential_text.as_str(), "the credential"),
            (pepper_text, "the pepper"),
            (&pepper_text[..12], "part of the pepper"),
            (hash_hex.as_str(), "the hash"),
            (&hash_hex[..16], "part of the hash"),
            (&hash_hex.to_uppercase()[..16], "part of the hash"),
        ] {
            assert_absent(text, needle, what, &format!("Debug of {ty}"));
        }
        // The hash's raw bytes, as a derived `Debug` of `[u8; 32]` would print them.
        let raw = format!(
            "{}, {}, {}, {}",
            hash_bytes[0], hash_bytes[1], hash_bytes[2], hash_bytes[3]
        );
        assert_absent(text, &raw, "the hash bytes", &format!("Debug of {ty}"));
        assert!(longest_hex_run(text) < 64, "Debug of {ty}: {text}");
    }
    // What is not secret stays useful.
    assert!(format!("{pair:?}").contains(pair.public_key.as_str()));
    assert!(format!("{created:?}").contains(&created.key.public_key));

    // Errors carry no copy of what was refused.
    let errors = [
        format!("{0} {0:?}", ManagerError::Store(StoreError::Conflict)),
        format!(
            "{0} {0:?}",
            ManagerError::Store(StoreError::Timeout(Duration::from_secs(2)))
        ),
        format!(
            "{0} {0:?}",
            ManagerError::Store(StoreError::Database("connection reset".into()))
        ),
        format!(
            "{0} {0:?}",
            manager
                .create(
                    account,
                    NewApiKey::new(format!("{credential_text}{}", "t".repeat(300)))
                        .with_description(format!("{credential_text}{}", "d".repeat(5000)))
                        .with_expires_in_days(9999),
                )
                .await
                .unwrap_err()
        ),
        format!("{0} {0:?}", Rejection::InvalidCredential),
        format!(
            "{0} {0:?}",
            Pepper::try_from(&pepper_text[..12]).unwrap_err()
        ),
    ];
    for text in &errors {
        for (needle, what) in [
            (secret, "the secret key"),
            (credential_text.as_str(), "the credential"),
            (&pepper_text[..12], "part of the pepper"),
            (hash_hex.as_str(), "the hash"),
        ] {
            assert_absent(text, needle, what, "an error");
        }
    }

    // A pepper file that is refused: its content is not in the error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api-keys.pepper");
    std::fs::write(&path, "tiny-secret\n").unwrap();
    let err = Pepper::load_or_generate(&path).unwrap_err();
    assert!(matches!(err, PepperFileError::Invalid(_)));
    assert_absent(
        &format!("{err} {err:?}"),
        "tiny-secret",
        "the pepper",
        "a pepper file error",
    );
    std::fs::write(&path, b"not-utf8-\xff-secret-pepper\n").unwrap();
    let err = Pepper::load_or_generate(&path).unwrap_err();
    assert_absent(
        &format!("{err} {err:?}"),
        "secret-pepper",
        "the pepper",
        "a pepper file error",
    );
    validator.shutdown().await;
}

// ---------------------------------------------------------------------------
// Identical refusals over `Authorization: Bearer`, cold and warm

/// `tests/layer.rs` checks that unknown / wrong secret / revoked / expired get
/// byte-identical answers over `X-API-Key`, once each. This extends it: over
/// `Authorization: Bearer` too, and both on a cold cache (store lookup, dummy
/// HMAC for the unknown key) and a warm one (positive and negative cache hits),
/// all of which must be indistinguishable from each other and from `X-API-Key`.
async fn bearer_refusals_are_byte_identical_cold_and_warm(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let (h, account, live) =
        Harness::with_key(ApiKeyValidator::new(probe.clone(), pepper()), "live").await;
    let revoked = h
        .manager
        .create(account, NewApiKey::new("revoked"))
        .await
        .unwrap();
    h.manager.revoke(account, revoked.key.key_id).await.unwrap();
    let expired = KeyPair::generate().unwrap();
    db.repo
        .insert(common::row(
            &expired,
            account.into_inner(),
            Some(Utc::now() - TimeDelta::minutes(5)),
        ))
        .await
        .unwrap();
    let unknown = KeyPair::generate().unwrap();
    let cases = [
        ("unknown", unknown.credential()),
        (
            "unknown public key with a real secret",
            format!(
                "{}:{}",
                unknown.public_key.as_str(),
                live.secret_key.expose()
            ),
        ),
        (
            "wrong secret",
            format!("{}:{}", live.key.public_key, unknown.secret_key.expose()),
        ),
        ("revoked", revoked.credential()),
        ("expired", expired.credential()),
    ];

    let mut seen = Vec::new();
    // Cold over Bearer (each public key's first request asks the store), then
    // warm over Bearer (answered from the cache), then warm over X-API-Key.
    for pass in ["cold bearer", "warm bearer", "warm x-api-key"] {
        let before = probe.lookups();
        for (case, credential) in &cases {
            let request = h.client.get(h.url("/v1/whoami"));
            let request = if pass.ends_with("bearer") {
                request.header("authorization", format!("Bearer {credential}"))
            } else {
                request.header("x-api-key", credential.as_str())
            };
            let response = request.send().await.unwrap();
            let status = response.status();
            let mut headers: Vec<_> = response
                .headers()
                .iter()
                .filter(|(name, _)| *name != "date")
                .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
                .collect();
            headers.sort();
            let body = response.bytes().await.unwrap();
            seen.push((format!("{pass}: {case}"), (status, headers, body)));
        }
        if pass == "cold bearer" {
            // Four distinct public keys reached the store (the two unknown-key
            // cases share one, remembered as unknown after the first).
            assert_eq!(probe.lookups() - before, 4, "{pass}");
        } else {
            // Answered from the cache, the expired key included.
            assert_eq!(probe.lookups() - before, 0, "{pass}");
        }
    }
    let (first_case, first) = &seen[0];
    assert_eq!(first.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        &first.2[..],
        br#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Invalid API key"}"#
    );
    for (case, other) in &seen[1..] {
        assert_eq!(other, first, "{case} differs from {first_case}");
    }
    // The live key itself still works over Bearer.
    let response = h
        .whoami_with("authorization", format!("Bearer {}", live.credential()))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Limits

/// A credential header over 1 KiB is a malformed credential (or a 431 from the
/// server), and never costs a store lookup.
async fn oversized_credentials_never_reach_the_store(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let (h, _, live) =
        Harness::with_key(ApiKeyValidator::new(probe.clone(), pepper()), "live").await;
    let credential = live.credential();
    let unknown = KeyPair::generate().unwrap().credential();
    let before = probe.lookups();

    let mut values = Vec::new();
    for size in [1025, 2048, 65_536] {
        values.push(("a".repeat(size), "x-api-key"));
        // A real, valid credential followed by padding.
        values.push((
            format!("{credential}{}", "A".repeat(size - credential.len())),
            "x-api-key",
        ));
        // An unknown but well-formed-looking prefix, padded.
        values.push((
            format!("{unknown}{}", "0".repeat(size - unknown.len())),
            "x-api-key",
        ));
        // The credential repeated, `:`-joined.
        values.push((
            std::iter::repeat_n(credential.as_str(), size / 72 + 1)
                .collect::<Vec<_>>()
                .join(":"),
            "x-api-key",
        ));
        values.push((
            format!("Bearer {credential}{}", "9".repeat(size - credential.len())),
            "authorization",
        ));
        values.push((format!("Bearer pk_{}", "b".repeat(size)), "authorization"));
    }
    for (value, header) in &values {
        let response = h
            .client
            .get(h.url("/v1/whoami"))
            .header(*header, value.as_str())
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
            continue;
        }
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{header}: {} bytes",
            value.len()
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["detail"],
            "Invalid API key format. Expected format: pk_xxx:sk_xxx",
            "{header}: {} bytes",
            value.len()
        );
        // And directly through the validator.
        if *header == "x-api-key" {
            assert_eq!(
                h.validator.validate(value).await.unwrap_err(),
                Rejection::MalformedCredential
            );
        }
    }
    assert_eq!(
        probe.lookups(),
        before,
        "an over-long credential reached the store"
    );
    // The exact credential still validates.
    assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    assert_eq!(probe.lookups(), before + 1);
}

// ---------------------------------------------------------------------------
// Stored values out of bounds

/// A row whose scopes, metadata or rate limit the crate would refuse on input
/// (written by another program, or by hand) fails closed: the key is refused
/// as invalid, a warning names its key id (never the value), and the
/// management API reads it as revoked. Writing valid values brings it back.
async fn stored_values_out_of_bounds_fail_closed(db: &TestDb) {
    use sea_orm::ConnectionTrait;
    let logs = captured();
    let h = Harness::start(
        ApiKeyValidator::builder(db.repo.clone(), pepper())
            .with_change_feed(false)
            .build(),
    )
    .await;
    let account = AccountId::new(Uuid::new_v4());
    let nested = |levels: usize| {
        let mut json = "1".to_owned();
        for _ in 0..levels {
            json = format!(r#"{{"k":{json}}}"#);
        }
        json
    };
    let mut cases = vec![
        "rate_limit_requests = 0, rate_limit_period_seconds = 60".to_owned(),
        "rate_limit_requests = 1000001, rate_limit_period_seconds = 60".to_owned(),
        "rate_limit_requests = -1, rate_limit_period_seconds = 60".to_owned(),
        "rate_limit_requests = 5, rate_limit_period_seconds = 86401".to_owned(),
        "rate_limit_requests = 5, rate_limit_period_seconds = NULL".to_owned(),
        "rate_limit_requests = NULL, rate_limit_period_seconds = 60".to_owned(),
        r#"scopes = '"stored-marker"'"#.to_owned(),
        r#"scopes = '["Stored Marker"]'"#.to_owned(),
        r#"scopes = '["a", "a"]'"#.to_owned(),
        r#"metadata = '["stored-marker"]'"#.to_owned(),
        r#"metadata = '"stored-marker"'"#.to_owned(),
        format!("metadata = '{}'", nested(17)),
        format!(r#"metadata = '{{"k":"{}"}}'"#, "m".repeat(4_096)),
    ];
    // PostgreSQL's jsonb cannot hold U+0000; MySQL string literals need the
    // backslash doubled.
    match db.backend {
        "sqlite" => cases.push(r#"metadata = '{"k":"a\u0000b"}'"#.to_owned()),
        "mysql" => cases.push(r#"metadata = '{"k":"a\\u0000b"}'"#.to_owned()),
        _ => {}
    }
    let connection = db.repo.connection();
    for case in cases {
        let created = h
            .manager
            .create(account, NewApiKey::new("stored out of bounds"))
            .await
            .unwrap();
        let key_id = created.key.key_id.to_string();
        connection
            .execute_unprepared(&format!(
                "UPDATE api_keys SET {case} WHERE public_key = '{}'",
                created.key.public_key
            ))
            .await
            .unwrap_or_else(|err| panic!("{case}: {err}"));

        let refused = h.whoami(&created.credential()).await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{case}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["detail"], "Invalid API key", "{case}");
        let warned = logs.text().lines().any(|line| {
            line.contains("WARN") && line.contains(&key_id) && line.contains("refused")
        });
        assert!(warned, "{case}: no warning names {key_id}");
        let shown = h.manager.get(account, created.key.key_id).await.unwrap();
        assert_eq!(
            shown.status,
            tower_api_keys::store::EffectiveStatus::Revoked,
            "{case}"
        );

        // Valid values again: the key validates.
        connection
            .execute_unprepared(&format!(
                "UPDATE api_keys SET scopes = NULL, metadata = NULL, rate_limit_requests = NULL, \
                 rate_limit_period_seconds = NULL WHERE public_key = '{}'",
                created.key.public_key
            ))
            .await
            .unwrap();
        h.validator.invalidate(&created.key.public_key);
        assert_eq!(
            h.whoami(&created.credential()).await.status(),
            StatusCode::OK,
            "{case}"
        );
    }
    let text = logs.text();
    assert_absent(&text, "stored-marker", "a stored value", "the logs");
    assert_absent(&text, "Stored Marker", "a stored value", "the logs");
    assert_absent(&text, "mmmmmmmm", "a stored value", "the logs");
}

backend_tests!(
    nothing_secret_is_ever_logged,
    stored_values_out_of_bounds_fail_closed,
    bearer_refusals_are_byte_identical_cold_and_warm,
    oversized_credentials_never_reach_the_store,
);
