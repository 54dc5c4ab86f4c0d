//! Usage metering over real HTTP, on every backend: requests counted by the
//! authentication layer, written by the batched flusher, read through
//! `GET /v1/api-keys/{key_id}/usage`.

mod common;

use std::time::Duration;

use chrono::{NaiveDate, TimeDelta, Utc};
use common::{Harness, Probe, TestDb, pepper};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, ManagerError,
    store::{ApiKeyRepository, UsageCount},
};
use uuid::Uuid;

backend_tests!(
    requests_let_through_count_after_a_flush,
    two_replicas_add_up,
    days_out_of_range_or_not_a_number_is_400,
    another_accounts_key_is_404,
    a_request_refused_with_429_is_not_counted,
    counts_outlive_their_cache_entry_and_reach_the_store_at_shutdown,
    the_store_adds_counts_over_chunks,
    a_hundred_thousand_requests_over_a_thousand_keys_count_exactly,
);

/// A validator that flushes only when told to (or at shutdown).
fn validator(repo: impl ApiKeyRepository) -> ApiKeyValidator {
    ApiKeyValidator::builder(repo, pepper())
        .with_flush_interval(Duration::from_secs(3600))
        .build()
}

/// Creates a key over HTTP; returns its id and credential.
async fn create(h: &Harness, account: Uuid, body: Value) -> (String, String) {
    let response = h
        .client
        .post(h.url("/v1/api-keys"))
        .header("x-account-id", account.to_string())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    (
        created["key_id"].as_str().unwrap().to_owned(),
        format!(
            "{}:{}",
            created["public_key"].as_str().unwrap(),
            created["secret_key"].as_str().unwrap()
        ),
    )
}

async fn get_usage(h: &Harness, account: Uuid, key_id: &str, query: &str) -> reqwest::Response {
    h.client
        .get(h.url(&format!("/v1/api-keys/{key_id}/usage{query}")))
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap()
}

/// `GET …/usage{query}`, checked: `200`, the key's id, exactly `days`
/// consecutive days ending today, newest first. Returns the counts.
async fn usage(h: &Harness, account: Uuid, key_id: &str, query: &str, days: usize) -> Vec<u64> {
    let response = get_usage(h, account, key_id, query).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    let body: Value = response.json().await.unwrap();
    let mut fields: Vec<_> = body.as_object().unwrap().keys().cloned().collect();
    fields.sort();
    assert_eq!(fields, ["days", "key_id"]);
    assert_eq!(body["key_id"], key_id);
    let entries = body["days"].as_array().unwrap();
    assert_eq!(entries.len(), days, "{query}");
    let today = Utc::now().date_naive();
    entries
        .iter()
        .enumerate()
        .map(|(back, entry)| {
            assert_eq!(entry.as_object().unwrap().len(), 2, "{entry}");
            let date = entry["date"].as_str().unwrap();
            assert_eq!(date.len(), 10, "YYYY-MM-DD: {date}");
            let date: NaiveDate = date.parse().unwrap();
            assert_eq!(date, today - TimeDelta::days(back as i64), "{body}");
            entry["requests"].as_u64().unwrap()
        })
        .collect()
}

/// `today`'s count, then zeros.
fn only_today(today: u64, days: usize) -> Vec<u64> {
    let mut expected = vec![0; days];
    expected[0] = today;
    expected
}

async fn requests_let_through_count_after_a_flush(db: &TestDb) {
    let h = Harness::start(validator(db.repo.clone())).await;
    let account = Uuid::new_v4();
    let (key_id, credential) = create(&h, account, json!({"title": "metered"})).await;
    let (other_id, _) = create(&h, account, json!({"title": "unused"})).await;

    const K: u64 = 7;
    for _ in 0..K {
        assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    }
    // A wrong secret for the same public key is refused and not counted.
    let (public_key, _) = credential.split_once(':').unwrap();
    let wrong = format!("{public_key}:sk_{}", "A".repeat(32));
    assert_eq!(h.whoami(&wrong).await.status(), StatusCode::UNAUTHORIZED);

    // Still in memory: the store has nothing yet.
    assert_eq!(usage(&h, account, &key_id, "?days=7", 7).await, [0; 7]);

    h.validator.flush().await.unwrap();
    assert_eq!(
        usage(&h, account, &key_id, "?days=7", 7).await,
        only_today(K, 7)
    );
    assert_eq!(usage(&h, account, &key_id, "", 30).await, only_today(K, 30));
    assert_eq!(usage(&h, account, &key_id, "?days=1", 1).await, [K]);
    assert_eq!(
        usage(&h, account, &key_id, "?days=90", 90).await,
        only_today(K, 90)
    );
    assert_eq!(usage(&h, account, &other_id, "?days=3", 3).await, [0; 3]);

    // Counts on earlier days (written as another replica's flush would) land
    // on their own dates, and only within the window asked for.
    let today = Utc::now().date_naive();
    db.repo
        .record_usage(&[
            UsageCount {
                key_id: key_id.parse().unwrap(),
                day: today - TimeDelta::days(1),
                requests: 5,
            },
            UsageCount {
                key_id: key_id.parse().unwrap(),
                day: today - TimeDelta::days(10),
                requests: 3,
            },
        ])
        .await
        .unwrap();
    // More requests: the next flush adds to today's row.
    for _ in 0..2 {
        assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    }
    h.validator.flush().await.unwrap();
    let mut week = only_today(K + 2, 7);
    week[1] = 5;
    assert_eq!(usage(&h, account, &key_id, "?days=7", 7).await, week);
    let month = usage(&h, account, &key_id, "?days=30", 30).await;
    assert_eq!((month[0], month[1], month[10]), (K + 2, 5, 3));
    assert_eq!(month.iter().sum::<u64>(), K + 2 + 5 + 3);
    // Unknown query parameters are ignored.
    assert_eq!(
        usage(&h, account, &key_id, "?days=2&x=1", 2).await,
        [K + 2, 5]
    );

    // The manager offers the same; its days serialize as `YYYY-MM-DD`.
    let manager = KeyManager::new(h.validator.clone());
    let account_id = AccountId::new(account);
    let from_manager = manager
        .usage(account_id, key_id.parse().unwrap(), 2)
        .await
        .unwrap();
    assert_eq!(from_manager.days.len(), 2);
    assert_eq!(from_manager.days[0].date, today);
    assert_eq!(from_manager.days[1].requests, 5);
    let serialized = serde_json::to_value(&from_manager).unwrap();
    assert_eq!(
        serialized["days"][1]["date"],
        (today - TimeDelta::days(1)).to_string()
    );
    for days in [0, 91] {
        match manager
            .usage(account_id, key_id.parse().unwrap(), days)
            .await
        {
            Err(ManagerError::Invalid(errors)) => assert_eq!(errors[0].field, "days"),
            other => panic!("days={days}: {other:?}"),
        }
    }
}

async fn two_replicas_add_up(db: &TestDb) {
    let a = Harness::start(validator(db.repo.clone())).await;
    let b = Harness::start(validator(db.connect_again().await)).await;
    let account = Uuid::new_v4();
    let (key_id, credential) = create(&a, account, json!({"title": "shared"})).await;
    for (h, n) in [(&a, 4), (&b, 6)] {
        for _ in 0..n {
            assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
        }
    }
    // Both replicas flush at once: their upserts add up.
    let (flushed_a, flushed_b) = tokio::join!(a.validator.flush(), b.validator.flush());
    flushed_a.unwrap();
    flushed_b.unwrap();
    assert_eq!(usage(&a, account, &key_id, "?days=3", 3).await, [10, 0, 0]);
    assert_eq!(usage(&b, account, &key_id, "?days=3", 3).await, [10, 0, 0]);

    // Counts made since are written at shutdown.
    assert_eq!(b.whoami(&credential).await.status(), StatusCode::OK);
    b.validator.shutdown().await;
    assert_eq!(usage(&a, account, &key_id, "?days=3", 3).await, [11, 0, 0]);
}

async fn days_out_of_range_or_not_a_number_is_400(db: &TestDb) {
    let h = Harness::start(validator(db.repo.clone())).await;
    let account = Uuid::new_v4();
    let (key_id, _) = create(&h, account, json!({"title": "k"})).await;
    for query in [
        "?days=0",
        "?days=91",
        "?days=x",
        "?days=",
        "?days",
        "?days=-1",
        "?days=1.5",
        "?days=+5",
        "?days=%35",
        "?days=99999999999999999999",
        "?days=5&days=6",
        "?days=5&days=5",
    ] {
        let response = get_usage(&h, account, &key_id, query).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 400);
        assert_eq!(body["type"], "about:blank");
        assert!(body["detail"].as_str().unwrap().contains("days"), "{body}");
        assert_eq!(body["errors"][0]["field"], "days", "{query}");
    }
    // A key id that is not a UUID.
    let response = get_usage(&h, account, "not-a-uuid", "").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Without the host's login.
    let response = h
        .client
        .get(h.url(&format!("/v1/api-keys/{key_id}/usage")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn another_accounts_key_is_404(db: &TestDb) {
    let h = Harness::start(validator(db.repo.clone())).await;
    let (owner, stranger) = (Uuid::new_v4(), Uuid::new_v4());
    let (key_id, credential) = create(&h, owner, json!({"title": "mine"})).await;
    assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    h.validator.flush().await.unwrap();
    for (account, key) in [
        (stranger, key_id.clone()),
        (owner, Uuid::new_v4().to_string()),
    ] {
        let response = get_usage(&h, account, &key, "?days=5").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "API key not found");
    }
    assert_eq!(
        usage(&h, owner, &key_id, "?days=5", 5).await,
        [1, 0, 0, 0, 0]
    );
    // Once deleted, the key's usage is not found either.
    let response = h
        .client
        .delete(h.url(&format!("/v1/api-keys/{key_id}")))
        .header("x-account-id", owner.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = get_usage(&h, owner, &key_id, "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn a_request_refused_with_429_is_not_counted(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let h = Harness::start(validator(probe.clone())).await;
    let account = Uuid::new_v4();
    let (key_id, credential) = create(
        &h,
        account,
        json!({"title": "limited", "rate_limit": {"requests": 2, "period_seconds": 3600}}),
    )
    .await;
    for expected in [
        StatusCode::OK,
        StatusCode::OK,
        StatusCode::TOO_MANY_REQUESTS,
        StatusCode::TOO_MANY_REQUESTS,
    ] {
        assert_eq!(h.whoami(&credential).await.status(), expected);
    }
    h.validator.flush().await.unwrap();
    assert_eq!(probe.usage_writes().len(), 1);
    assert_eq!(usage(&h, account, &key_id, "?days=2", 2).await, [2, 0]);
}

/// Requests count in the cache entry their key was checked against. An update
/// replaces the key's entry (the next request asks the store again); the
/// counts of both entries add up, and shutdown writes them without a flush
/// being asked for.
async fn counts_outlive_their_cache_entry_and_reach_the_store_at_shutdown(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let h = Harness::start(validator(probe.clone())).await;
    let account = Uuid::new_v4();
    let (key_id, credential) = create(&h, account, json!({"title": "before"})).await;
    let (public_key, _) = credential.split_once(':').unwrap();
    for _ in 0..3 {
        assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    }
    let response = h
        .client
        .patch(h.url(&format!("/v1/api-keys/{key_id}")))
        .header("x-account-id", account.to_string())
        .json(&json!({"title": "after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for _ in 0..4 {
        assert_eq!(h.whoami(&credential).await.status(), StatusCode::OK);
    }
    assert_eq!(
        probe.lookups_of(public_key),
        2,
        "the update replaced the cached entry"
    );
    h.validator.shutdown().await;
    let today = Utc::now().date_naive();
    let stored = db
        .repo
        .usage(key_id.parse().unwrap(), today - TimeDelta::days(7))
        .await
        .unwrap();
    assert_eq!(stored, [(today, 3 + 4)]);
}

/// The store itself: more rows than one statement writes, duplicates within
/// a batch summed, and a second batch added to the first.
async fn the_store_adds_counts_over_chunks(db: &TestDb) {
    let today = Utc::now().date_naive();
    let keys: Vec<Uuid> = (0..6_000).map(|_| Uuid::new_v4()).collect();
    let mut batch: Vec<UsageCount> = keys
        .iter()
        .map(|key_id| UsageCount {
            key_id: *key_id,
            day: today,
            requests: 2,
        })
        .collect();
    batch.push(UsageCount {
        key_id: keys[0],
        day: today,
        requests: 40,
    });
    batch.push(UsageCount {
        key_id: keys[1],
        day: today - TimeDelta::days(3),
        requests: u64::from(u32::MAX) + 1,
    });
    db.repo.record_usage(&batch).await.unwrap();
    db.repo.record_usage(&batch[..10]).await.unwrap();
    db.repo.record_usage(&[]).await.unwrap();

    let since = today - TimeDelta::days(89);
    assert_eq!(db.repo.usage(keys[0], since).await.unwrap(), [(today, 44)]);
    assert_eq!(
        db.repo.usage(keys[1], since).await.unwrap(),
        [
            (today, 4),
            (today - TimeDelta::days(3), u64::from(u32::MAX) + 1)
        ]
    );
    assert_eq!(
        db.repo.usage(keys[1], today).await.unwrap(),
        [(today, 4)],
        "since is inclusive, older days left out"
    );
    assert_eq!(
        db.repo.usage(keys[5_999], since).await.unwrap(),
        [(today, 2)]
    );
    assert!(
        db.repo
            .usage(Uuid::new_v4(), since)
            .await
            .unwrap()
            .is_empty()
    );
}

/// 100,000 requests over 1,000 keys through the layer (in process: the real
/// `ApiKeyAuth` service, driven with `oneshot`), then one flush: every key's
/// count is exact, and the counts went out in one `record_usage` call (one
/// statement: 1,000 rows are under one chunk).
async fn a_hundred_thousand_requests_over_a_thousand_keys_count_exactly(db: &TestDb) {
    use tower::ServiceExt;

    let probe = Probe::new(db.repo.clone());
    let validator = validator(probe.clone());
    let account = Uuid::new_v4();
    let pairs: Vec<_> = (0..1_000)
        .map(|_| tower_api_keys::KeyPair::generate().unwrap())
        .collect();
    let rows: Vec<_> = pairs
        .iter()
        .map(|pair| common::row(pair, account, None))
        .collect();
    let key_ids: Vec<Uuid> = rows.iter().map(|row| row.key_id).collect();
    KeyManager::new(validator.clone())
        .import(rows)
        .await
        .unwrap();
    let service = tower_api_keys::ApiKeyAuth::new(
        tower::service_fn(|_: http::Request<String>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
        }),
        validator.clone(),
    );
    let credentials: Vec<String> = pairs.iter().map(|pair| pair.credential()).collect();
    for round in 0..100 {
        for credential in &credentials {
            let request = http::Request::builder()
                .header("x-api-key", credential)
                .body(String::new())
                .unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "round {round}");
        }
    }
    let writes_before = probe.usage_writes().len();
    validator.flush().await.unwrap();
    assert_eq!(
        probe.usage_writes().len() - writes_before,
        1,
        "one record_usage call for the whole flush"
    );
    let today = Utc::now().date_naive();
    for key_id in key_ids {
        let counts = db.repo.usage(key_id, today).await.unwrap();
        assert_eq!(counts, [(today, 100)], "{key_id}");
    }
    validator.shutdown().await;
}
