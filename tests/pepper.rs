//! CONTRACT §11: pepper rotation. Rows made with a previous pepper keep
//! validating (one HMAC with that pepper), are re-hashed under the current one
//! after their first use, and the finish line is visible.

mod common;

use chrono::{TimeDelta, Utc};
use common::{Harness, Probe, TestDb};
use reqwest::StatusCode;
use serde_json::Value;
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, KeyPair, NewApiKey, Pepper, PepperId, PepperRing,
    PepperRole,
    hash::KeyHasher,
    store::{ApiKeyRecord, ApiKeyRepository, KeyStatus},
};
use uuid::Uuid;

const NEW: &str = "the-new-current-pepper-after-rotation";
const OLD: &str = "the-old-pepper-every-key-had-before";

fn pepper(text: &str) -> Pepper {
    Pepper::try_from(text).unwrap()
}

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seed_hmac.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A row as the reference service writes it: no `pepper_id`.
fn reference_row(public_key: &str, hash: &str, account: Uuid) -> ApiKeyRecord {
    ApiKeyRecord {
        title: "reference".into(),
        ..common::record(public_key, hash, account)
    }
}

/// A row for `pair` made with `made_with`, naming it unless `named` is false.
fn row_with(pair: &KeyPair, made_with: &Pepper, named: bool, account: Uuid) -> ApiKeyRecord {
    let hash = KeyHasher::new(made_with)
        .hash(pair.secret_key.expose())
        .to_hex();
    ApiKeyRecord {
        pepper_id: named.then(|| PepperId::of(made_with).to_string()),
        ..reference_row(pair.public_key.as_str(), &hash, account)
    }
}

async fn stored(db: &TestDb, row: &ApiKeyRecord) -> ApiKeyRecord {
    db.repo
        .get(row.account_id, row.key_id)
        .await
        .unwrap()
        .unwrap()
}

async fn reference_rows_keep_validating_and_move_to_the_new_pepper(db: &TestDb) {
    let vectors = vectors();
    for case in vectors["cases"].as_array().unwrap() {
        let old = pepper(case["pepper"].as_str().unwrap());
        let secret = case["secret_key"].as_str().unwrap();
        let header = case["header"].as_str().unwrap();
        let row = reference_row(
            case["public_key"].as_str().unwrap(),
            case["secret_key_hash"].as_str().unwrap(),
            Uuid::new_v4(),
        );
        db.repo.insert(row.clone()).await.unwrap();

        // The new pepper is current, the reference service's is the legacy one.
        let rotating = ApiKeyValidator::builder(
            db.repo.clone(),
            PepperRing::new(pepper(NEW)).with_previous(old.clone()),
        )
        .with_change_feed(false)
        .build();
        assert!(rotating.validate(header).await.is_ok(), "{header}");
        // Nothing is written per request.
        assert_eq!(stored(db, &row).await.pepper_id, None);
        rotating.flush().await.unwrap();
        let rewritten = stored(db, &row).await;
        assert_eq!(
            rewritten.pepper_id.as_deref(),
            Some(PepperId::of(&pepper(NEW)).as_str())
        );
        assert_eq!(
            rewritten.secret_key_hash.as_str(),
            KeyHasher::new(&pepper(NEW)).hash(secret).to_hex()
        );
        assert_eq!(rewritten.status, KeyStatus::Active);

        // Now the new pepper alone validates it, and the old one alone does not.
        let new_only = ApiKeyValidator::builder(db.repo.clone(), pepper(NEW))
            .with_change_feed(false)
            .build();
        assert!(new_only.validate(header).await.is_ok());
        let old_only = ApiKeyValidator::builder(db.repo.clone(), old)
            .with_change_feed(false)
            .build();
        assert!(old_only.validate(header).await.is_err());
    }
}

async fn unused_keys_are_counted_until_retired(db: &TestDb) {
    let (new, old) = (pepper(NEW), pepper(OLD));
    let ring = PepperRing::new(new.clone()).with_previous(old.clone());
    let validator = ApiKeyValidator::builder(db.repo.clone(), ring)
        .with_change_feed(false)
        .build();
    let manager = KeyManager::new(validator.clone()).acting(
        tower_api_keys::audit::ChangeRecord::by(tower_api_keys::audit::Actor::new("ops:retire")),
    );
    let account = Uuid::new_v4();
    let (used, unused, named) = (
        KeyPair::generate().unwrap(),
        KeyPair::generate().unwrap(),
        KeyPair::generate().unwrap(),
    );
    // Two rows of the reference service (no pepper id) and one the crate made
    // before the rotation (naming the old pepper); one key created since.
    db.repo
        .insert(row_with(&used, &old, false, account))
        .await
        .unwrap();
    db.repo
        .insert(row_with(&unused, &old, false, account))
        .await
        .unwrap();
    db.repo
        .insert(row_with(&named, &old, true, account))
        .await
        .unwrap();
    manager
        .create(AccountId::new(account), NewApiKey::new("since"))
        .await
        .unwrap();

    let keys_of = |status: &[tower_api_keys::PepperStatus], role: PepperRole| {
        status
            .iter()
            .find(|line| line.role == role)
            .map(|line| line.keys)
    };
    let status = manager.pepper_status().await.unwrap();
    assert_eq!(keys_of(&status, PepperRole::Current), Some(1));
    assert_eq!(keys_of(&status, PepperRole::Legacy), Some(3));

    assert!(validator.validate(&used.credential()).await.is_ok());
    validator.flush().await.unwrap();
    let status = manager.pepper_status().await.unwrap();
    assert_eq!(keys_of(&status, PepperRole::Current), Some(2));
    assert_eq!(keys_of(&status, PepperRole::Legacy), Some(2));

    // The current pepper cannot be retired; the old one's rest is revoked.
    assert!(manager.retire_pepper(&PepperId::of(&new)).await.is_err());
    assert_eq!(manager.retire_pepper(&PepperId::of(&old)).await.unwrap(), 2);
    let status = manager.pepper_status().await.unwrap();
    assert_eq!(keys_of(&status, PepperRole::Legacy), Some(0));
    assert!(validator.validate(&unused.credential()).await.is_err());
    assert!(validator.validate(&named.credential()).await.is_err());
    assert!(validator.validate(&used.credential()).await.is_ok());

    // Each key the retirement revoked is audited, with the acting operator.
    let page = manager
        .audit(AccountId::new(account), None, None, 100)
        .await
        .unwrap();
    let mut revoked: Vec<Uuid> = page
        .entries
        .iter()
        .filter(|entry| entry.action == "revoked")
        .inspect(|entry| assert_eq!(entry.actor.as_deref(), Some("ops:retire")))
        .map(|entry| entry.key_id)
        .collect();
    revoked.sort_unstable();
    let mut expected = Vec::new();
    for pair in [&unused, &named] {
        let row = db.repo.find_by_public_key(pair.public_key.as_str()).await;
        expected.push(row.unwrap().unwrap().key_id);
    }
    expected.sort_unstable();
    assert_eq!(revoked, expected, "one audit row per retired key");
}

async fn a_pepper_missing_from_the_ring_refuses_its_keys(db: &TestDb) {
    let (new, old) = (pepper(NEW), pepper(OLD));
    let account = Uuid::new_v4();
    let pair = KeyPair::generate().unwrap();
    db.repo
        .insert(row_with(&pair, &old, true, account))
        .await
        .unwrap();
    let validator = ApiKeyValidator::builder(db.repo.clone(), new)
        .with_change_feed(false)
        .build();
    assert!(validator.validate(&pair.credential()).await.is_err());
    let status = KeyManager::new(validator).pepper_status().await.unwrap();
    let missing = status
        .iter()
        .find(|line| line.role == PepperRole::Missing)
        .expect("the missing pepper is reported");
    assert_eq!(missing.pepper_id, Some(PepperId::of(&old)));
    assert_eq!(missing.keys, 1);
    assert!(!missing.in_ring);
}

async fn refusals_are_byte_identical_whatever_pepper_a_row_names(db: &TestDb) {
    let (new, old) = (pepper(NEW), pepper(OLD));
    let ring = PepperRing::new(new.clone()).with_previous(old.clone());
    let validator = ApiKeyValidator::builder(db.repo.clone(), ring)
        .with_change_feed(false)
        .build();
    let h = Harness::start(validator).await;
    let account = Uuid::new_v4();
    let unknown = KeyPair::generate().unwrap();
    let old_key = KeyPair::generate().unwrap();
    db.repo
        .insert(row_with(&old_key, &old, false, account))
        .await
        .unwrap();
    let revoked = KeyPair::generate().unwrap();
    db.repo
        .insert(ApiKeyRecord {
            status: KeyStatus::Revoked,
            ..row_with(&revoked, &old, true, account)
        })
        .await
        .unwrap();
    let expired = KeyPair::generate().unwrap();
    db.repo
        .insert(ApiKeyRecord {
            expires_at: Some(Utc::now() - TimeDelta::hours(1)),
            created_at: Some(Utc::now() - TimeDelta::days(1)),
            ..row_with(&expired, &old, true, account)
        })
        .await
        .unwrap();
    let foreign = KeyPair::generate().unwrap();
    db.repo
        .insert(row_with(
            &foreign,
            &pepper("a-pepper-nobody-configured-here"),
            true,
            account,
        ))
        .await
        .unwrap();
    let cases = [
        unknown.credential(),
        format!("{}:{}", old_key.public_key, unknown.secret_key.expose()),
        revoked.credential(),
        expired.credential(),
        foreign.credential(),
    ];
    let mut seen = Vec::new();
    for _ in 0..2 {
        // Cold, then warm.
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
            seen.push((status, headers, response.bytes().await.unwrap()));
        }
    }
    assert_eq!(seen[0].0, StatusCode::UNAUTHORIZED);
    for other in &seen[1..] {
        assert_eq!(other, &seen[0]);
    }
    assert_eq!(
        h.whoami(&old_key.credential()).await.status(),
        StatusCode::OK
    );
}

async fn concurrent_uses_of_an_old_pepper_key_rewrite_it_once(db: &TestDb) {
    let (new, old) = (pepper(NEW), pepper(OLD));
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(
        probe.clone(),
        PepperRing::new(new).with_previous(old.clone()),
    )
    .build();
    let pair = KeyPair::generate().unwrap();
    db.repo
        .insert(row_with(&pair, &old, false, Uuid::new_v4()))
        .await
        .unwrap();
    let results = common::concurrently(64, |_| {
        let (validator, credential) = (validator.clone(), pair.credential());
        async move { validator.validate(&credential).await.is_ok() }
    })
    .await;
    assert!(results.iter().all(|ok| *ok));
    validator.flush().await.unwrap();
    for _ in 0..10 {
        assert!(validator.validate(&pair.credential()).await.is_ok());
    }
    validator.flush().await.unwrap();
    assert_eq!(probe.rewrites(), 1);
}

async fn a_rewrite_racing_a_revoke_never_revives_the_key(db: &TestDb) {
    let (new, old) = (pepper(NEW), pepper(OLD));
    let validator = ApiKeyValidator::builder(
        db.repo.clone(),
        PepperRing::new(new.clone()).with_previous(old.clone()),
    )
    .with_change_feed(false)
    .build();
    let manager = KeyManager::new(validator.clone());
    let pair = KeyPair::generate().unwrap();
    let row = row_with(&pair, &old, false, Uuid::new_v4());
    db.repo.insert(row.clone()).await.unwrap();
    // Used (the re-hash is queued), then revoked before the flush.
    assert!(validator.validate(&pair.credential()).await.is_ok());
    manager
        .revoke(AccountId::new(row.account_id), row.key_id.into())
        .await
        .unwrap();
    validator.flush().await.unwrap();
    let after = stored(db, &row).await;
    assert_eq!(after.status, KeyStatus::Revoked);
    assert!(validator.validate(&pair.credential()).await.is_err());
    let fresh = ApiKeyValidator::builder(db.repo.clone(), new)
        .with_change_feed(false)
        .build();
    assert!(fresh.validate(&pair.credential()).await.is_err());
}

backend_tests!(
    reference_rows_keep_validating_and_move_to_the_new_pepper,
    unused_keys_are_counted_until_retired,
    a_pepper_missing_from_the_ring_refuses_its_keys,
    refusals_are_byte_identical_whatever_pepper_a_row_names,
    concurrent_uses_of_an_old_pepper_key_rewrite_it_once,
    a_rewrite_racing_a_revoke_never_revives_the_key,
);
