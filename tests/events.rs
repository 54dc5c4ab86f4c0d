//! The event dispatcher with the webhook sender against a real local HTTP
//! server, on every backend: a redirect is a failure and is not followed;
//! a failing event backs off; one failing past 24 h is kept as failed,
//! counted by `tower_api_keys_webhook_failures_total`, listed, and put back
//! by a retry; order per key holds while an earlier event waits.

mod common;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::post,
};
use chrono::{TimeDelta, Utc};
use common::{TestDb, pepper};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use sea_orm::{ConnectionTrait, Statement, Value};
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, NewApiKey,
    events::{
        EventDispatcher,
        webhook::{WebhookSecret, WebhookSender},
    },
};
use uuid::Uuid;

const SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0yNGJ5dGVz";

/// Requests per path, and the `webhook-id`s that `/ok` accepted.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, Vec<String>>>>);

async fn receiver(hits: Hits) -> SocketAddr {
    let record = |path: &'static str, answer: StatusCode| {
        let hits = hits.clone();
        post(move |headers: axum::http::HeaderMap| async move {
            let id = headers["webhook-id"].to_str().unwrap().to_owned();
            hits.0
                .lock()
                .unwrap()
                .entry(path.to_owned())
                .or_default()
                .push(id);
            if answer == StatusCode::FOUND {
                (answer, [(header::LOCATION, "/ok")]).into_response()
            } else {
                answer.into_response()
            }
        })
    };
    let slow = {
        let hits = hits.clone();
        post(move || async move {
            hits.0
                .lock()
                .unwrap()
                .entry("/slow".to_owned())
                .or_default()
                .push(String::new());
            // Longer than the sender's 10 s timeout.
            tokio::time::sleep(std::time::Duration::from_secs(15)).await;
            StatusCode::OK
        })
    };
    let app = Router::new()
        .route("/slow", slow)
        .route("/gone", record("/gone", StatusCode::GONE))
        .route("/ok", record("/ok", StatusCode::NO_CONTENT))
        .route("/fail", record("/fail", StatusCode::SERVICE_UNAVAILABLE))
        .route("/redirect", record("/redirect", StatusCode::FOUND));
    common::serve(app).await
}

fn sender(addr: SocketAddr, path: &str) -> WebhookSender {
    WebhookSender::new(
        &format!("http://{addr}{path}"),
        WebhookSecret::parse(SECRET).unwrap(),
    )
    .unwrap()
}

/// Every outbox row: `(event_id, event_type, state, attempts)`, oldest first.
async fn outbox(db: &TestDb) -> Vec<(String, String, String, i32)> {
    let backend = db.repo.connection().get_database_backend();
    db.repo
        .executor()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT event_id, event_type, state, attempts FROM tower_api_keys_outbox ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.try_get("", "event_id").unwrap(),
                row.try_get("", "event_type").unwrap(),
                row.try_get("", "state").unwrap(),
                row.try_get("", "attempts").unwrap(),
            )
        })
        .collect()
}

/// Makes every outbox row look a day and an hour old.
async fn age_the_outbox(db: &TestDb) {
    let backend = db.repo.connection().get_database_backend();
    let sql = if backend == sea_orm::DatabaseBackend::Postgres {
        "UPDATE tower_api_keys_outbox SET created_at = $1"
    } else {
        "UPDATE tower_api_keys_outbox SET created_at = ?"
    };
    let old = Utc::now() - TimeDelta::hours(25);
    db.repo
        .executor()
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [Value::from(old)],
        ))
        .await
        .unwrap();
}

async fn an_event_failing_past_a_day_is_kept_as_failed_counted_and_retried(db: &TestDb) {
    let hits = Hits::default();
    let addr = receiver(hits.clone()).await;
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let key = manager.create(account, NewApiKey::new("a")).await.unwrap();
    manager.revoke(account, key.key.key_id).await.unwrap();
    age_the_outbox(db).await;

    // A redirect is a failure, never followed; past 24 h the event is kept
    // as failed, and the key's next event still waits behind it… until the
    // failed one no longer counts as pending.
    let redirecting = EventDispatcher::new(&validator, sender(addr, "/redirect"));
    assert_eq!(redirecting.deliver_due().await.unwrap(), 1);
    assert!(!hits.0.lock().unwrap().contains_key("/ok"));
    let rows = outbox(db).await;
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("failed", 1), "{rows:?}");
    assert_eq!((rows[1].2.as_str(), rows[1].3), ("pending", 0), "{rows:?}");
    let failed = manager.failed_events(10).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].event_type, "key.created");
    let error = failed[0].last_error.as_deref().unwrap();
    assert!(
        error.contains("302") && !error.contains(&addr.to_string()),
        "{error}"
    );

    // The revoke's event now goes (the created one is failed, not pending),
    // to a receiver answering 503: a retry is scheduled, not due at once.
    let failing = EventDispatcher::new(&validator, sender(addr, "/fail"));
    assert_eq!(failing.deliver_due().await.unwrap(), 1);
    // Aged too, so this failure also ends its 24 h.
    let rows = outbox(db).await;
    assert_eq!(rows[1].2, "failed", "{rows:?}");

    // Both put back with a new day: delivered, in order.
    assert_eq!(manager.retry_failed_events(None).await.unwrap(), 2);
    assert_eq!(
        manager.retry_failed_events(Some("msg_none")).await.unwrap(),
        0
    );
    let delivering = EventDispatcher::new(&validator, sender(addr, "/ok"));
    // One per key and round: first the created event, then the revoked one.
    assert_eq!(delivering.deliver_due().await.unwrap(), 1);
    assert_eq!(delivering.deliver_due().await.unwrap(), 1);
    assert_eq!(delivering.deliver_due().await.unwrap(), 0);
    let ok = hits.0.lock().unwrap()["/ok"].clone();
    assert_eq!(ok, [rows[0].0.clone(), rows[1].0.clone()]);
    assert!(manager.failed_events(10).await.unwrap().is_empty());
    assert!(outbox(db).await.iter().all(|row| row.2 == "delivered"));

    // A fresh event failing: retried later (1 s), not again at once.
    manager.create(account, NewApiKey::new("b")).await.unwrap();
    assert_eq!(failing.deliver_due().await.unwrap(), 1);
    assert_eq!(failing.deliver_due().await.unwrap(), 0);
    let rows = outbox(db).await;
    let last = rows.last().unwrap();
    assert_eq!((last.2.as_str(), last.3), ("pending", 1));
}

/// A receiver that answers 4xx, or too slowly, fails the attempt (retried
/// later, nothing lost); while a slow delivery is in flight, changes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_refusing_receiver_fails_the_attempt_and_blocks_no_change() {
    let db = common::sqlite().await;
    let hits = Hits::default();
    let addr = receiver(hits.clone()).await;
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    manager.create(account, NewApiKey::new("a")).await.unwrap();

    let refusing = EventDispatcher::new(&validator, sender(addr, "/gone"));
    assert_eq!(refusing.deliver_due().await.unwrap(), 1);
    let rows = outbox(&db).await;
    assert_eq!((rows[0].2.as_str(), rows[0].3), ("pending", 1));
    assert!(
        last_errors(&db).await[0]
            .as_deref()
            .unwrap()
            .contains("410")
    );

    let slow = EventDispatcher::new(&validator, sender(addr, "/slow"))
        .with_poll_interval(std::time::Duration::from_millis(50))
        .start();
    // A second key's event is delivered by the running loop: wait until the
    // slow receiver holds it, then change keys meanwhile.
    manager.create(account, NewApiKey::new("b")).await.unwrap();
    while !hits.0.lock().unwrap().contains_key("/slow") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for title in ["c", "d"] {
        manager
            .create(account, NewApiKey::new(title))
            .await
            .unwrap();
    }
    assert_eq!(manager.list(account).await.unwrap().len(), 4);
    // The slow attempt ends as a timeout: retried later, the event kept.
    loop {
        let rows = outbox(&db).await;
        if rows[1].3 >= 1 {
            assert_eq!(rows[1].2, "pending");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    slow.shutdown().await;
    assert_eq!(last_errors(&db).await[1].as_deref(), Some("timed out"));
    // Nothing lost: every event still waits for a receiver that answers.
    let rows = outbox(&db).await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|row| row.2 == "pending"), "{rows:?}");
}

/// Every outbox row's `last_error`, oldest first.
async fn last_errors(db: &TestDb) -> Vec<Option<String>> {
    let backend = db.repo.connection().get_database_backend();
    db.repo
        .executor()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT last_error FROM tower_api_keys_outbox ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get("", "last_error").unwrap())
        .collect()
}

/// The metric, on one backend (a local recorder sees only its own thread).
#[test]
fn a_failed_event_counts_in_the_metric() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let db = common::sqlite().await;
                let addr = receiver(Hits::default()).await;
                let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
                let manager = KeyManager::new(validator.clone());
                let account = AccountId::new(Uuid::new_v4());
                manager.create(account, NewApiKey::new("a")).await.unwrap();
                age_the_outbox(&db).await;
                let dispatcher = EventDispatcher::new(&validator, sender(addr, "/fail"));
                assert_eq!(dispatcher.deliver_due().await.unwrap(), 1);
            });
    });
    let failures: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "tower_api_keys_webhook_failures_total")
        .map(|(.., value)| value)
        .collect();
    assert_eq!(failures, [DebugValue::Counter(1)]);
}

/// The clock's events: `key.expiring` for a key due within the notice,
/// `key.expired` for one just past its expiry, each written once however
/// many sweeps (and replicas) find it; none for a revoked key, one far from
/// expiry, or one that expired long ago.
async fn the_clock_writes_expiring_and_expired_once_per_key(db: &TestDb) {
    use tower_api_keys::{
        KeyPair,
        store::{ApiKeyRepository, KeyStatus},
    };
    let hits = Hits::default();
    let addr = receiver(hits.clone()).await;
    let account = Uuid::new_v4();
    let now = Utc::now();
    let mut keys = HashMap::new();
    for (name, expires_in, status) in [
        ("soon", TimeDelta::days(3), KeyStatus::Active),
        ("later", TimeDelta::days(30), KeyStatus::Active),
        ("past", TimeDelta::minutes(-1), KeyStatus::Active),
        ("long past", TimeDelta::days(-10), KeyStatus::Active),
        ("revoked", TimeDelta::days(3), KeyStatus::Revoked),
    ] {
        let pair = KeyPair::generate().unwrap();
        let record = tower_api_keys::store::ApiKeyRecord {
            expires_at: Some(now + expires_in),
            status,
            ..common::record(pair.public_key.as_str(), &"0".repeat(64), account)
        };
        keys.insert(name, record.key_id.simple().to_string());
        db.repo.insert(record).await.unwrap();
    }
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let replica = ApiKeyValidator::new(db.connect_again().await, pepper());
    let notice = std::time::Duration::from_secs(7 * 24 * 60 * 60);
    let here = EventDispatcher::new(&validator, sender(addr, "/ok")).with_expiry_notice(notice);
    let there = EventDispatcher::new(&replica, sender(addr, "/ok")).with_expiry_notice(notice);
    let (a, b) = tokio::join!(here.emit_clock_events(), there.emit_clock_events());
    assert_eq!(
        a.unwrap() + b.unwrap(),
        2,
        "one event per due key, across replicas"
    );
    assert_eq!(here.emit_clock_events().await.unwrap(), 0);
    let rows = outbox(db).await;
    let written: Vec<(&str, &str)> = rows
        .iter()
        .map(|(id, kind, _, _)| (id.as_str(), kind.as_str()))
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    for (name, kind) in [("soon", "key.expiring"), ("past", "key.expired")] {
        assert!(
            written
                .iter()
                .any(|(id, event)| id.contains(&keys[name]) && *event == kind),
            "{name}: {written:?}"
        );
    }
    // Delivered once each.
    while here.deliver_due().await.unwrap() > 0 {}
    let mut delivered = hits.0.lock().unwrap()["/ok"].clone();
    delivered.sort();
    let mut ids: Vec<String> = rows.iter().map(|row| row.0.clone()).collect();
    ids.sort();
    assert_eq!(delivered, ids);
    assert_eq!(here.emit_clock_events().await.unwrap(), 0, "never again");
}

backend_tests!(
    an_event_failing_past_a_day_is_kept_as_failed_counted_and_retried,
    the_clock_writes_expiring_and_expired_once_per_key,
);
