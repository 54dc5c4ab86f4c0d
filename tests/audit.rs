//! The audit log (CONTRACT §16.1) on every backend: each change through the
//! management API, the holder's revocation and an import writes its audit row
//! and its outbox event in the change's transaction; `GET /v1/api-keys/audit`
//! pages through them; bad queries are refused; retention runs once a day.

mod common;

use axum::{
    Router,
    extract::Request,
    middleware::{self, Next},
    response::Response,
};
use chrono::{NaiveDate, TimeDelta, Utc};
use common::{TestDb, pepper};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::{Value, json};
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, KeyPair, NewApiKey,
    audit::{Actor, ChangeRecord},
    router::{ManagementRouter, RevocationRouter},
    store::{ApiKeyRepository, UsageCount},
};
use uuid::Uuid;

backend_tests!(
    every_change_writes_its_audit_row_and_its_event,
    pages_follow_next_before_and_stay_in_the_account,
    bad_queries_are_400_and_name_the_parameter,
    a_refused_change_writes_no_audit_row,
    retention_runs_once_a_day_on_one_replica,
);

/// The host's login stand-in: `X-Account-Id` becomes the `AccountId`,
/// `X-Actor` the `Actor`.
async fn host_auth(mut request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    if let Some(account) = headers
        .get("x-account-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<AccountId>().ok())
    {
        request.extensions_mut().insert(account);
    }
    if let Some(actor) = headers.get("x-actor").and_then(|v| v.to_str().ok()) {
        request.extensions_mut().insert(Actor::new(actor));
    }
    next.run(request).await
}

struct App {
    base: String,
    client: reqwest::Client,
    manager: KeyManager,
}

impl App {
    /// The management and revocation routers served on loopback with the
    /// connection's address (`ConnectInfo`), as a host serves them.
    async fn start(db: &TestDb) -> Self {
        let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
        let manager = KeyManager::new(validator).with_max_keys_per_account(3);
        let router = Router::new()
            .nest(
                "/v1/api-keys/revocations",
                RevocationRouter::new(manager.clone()).build(),
            )
            .nest(
                "/v1/api-keys",
                ManagementRouter::new(manager.clone())
                    .build()
                    .layer(middleware::from_fn(host_auth)),
            );
        let addr = common::serve_with_connect_info(router, "127.0.0.1").await;
        Self {
            base: format!("http://{addr}/v1/api-keys"),
            client: reqwest::Client::new(),
            manager,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        account: AccountId,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-account-id", account.to_string())
            .header("x-actor", "user:42")
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        account: AccountId,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path, account);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, account: AccountId, title: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "",
                account,
                Some(json!({"title": title})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    async fn audit(&self, account: AccountId, query: &str) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::GET,
            &format!("/audit{query}"),
            account,
            None,
        )
        .await
    }
}

/// The outbox's events, oldest first: `(event_type, payload)`.
async fn outbox(db: &TestDb) -> Vec<(String, Value)> {
    let backend = db.repo.connection().get_database_backend();
    let rows = db
        .repo
        .executor()
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT event_type, payload FROM tower_api_keys_outbox ORDER BY id",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|row| {
            let kind: String = row.try_get("", "event_type").unwrap();
            let payload: String = row.try_get("", "payload").unwrap();
            (kind, serde_json::from_str(&payload).unwrap())
        })
        .collect()
}

async fn every_change_writes_its_audit_row_and_its_event(db: &TestDb) {
    let app = App::start(db).await;
    let account = AccountId::new(Uuid::new_v4());
    let first = app.create(account, "first").await;
    let first_id = first["key_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/{first_id}"),
            account,
            Some(json!({"title": "renamed", "scopes": ["a:b"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, successor) = app
        .call(
            reqwest::Method::POST,
            &format!("/{first_id}/rotate"),
            account,
            Some(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let successor_id = successor["key_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/{first_id}/revoke"),
            account,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // A second revoke changes nothing and records nothing.
    app.call(
        reqwest::Method::PATCH,
        &format!("/{first_id}/revoke"),
        account,
        None,
    )
    .await;
    // The holder revokes the successor with its credential.
    let response = app
        .client
        .post(format!("{}/revocations", app.base))
        .json(&json!({"credential": successor["token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/{first_id}"),
            account,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // An import, as the CLI makes it.
    let pair = KeyPair::generate().unwrap();
    let imported = common::row(&pair, account.into_inner(), None);
    app.manager
        .clone()
        .acting(ChangeRecord::by(Actor::cli()))
        .import(vec![imported.clone()])
        .await
        .unwrap();

    let (status, page) = app.audit(account, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["next_before"], Value::Null);
    let entries = page["entries"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["key_id"].as_str().unwrap()))
        .collect();
    let imported_id = imported.key_id.to_string();
    assert_eq!(
        actions,
        [
            ("imported", imported_id.as_str()),
            ("deleted", first_id.as_str()),
            ("revoked_by_holder", successor_id.as_str()),
            ("revoked", first_id.as_str()),
            ("created", successor_id.as_str()),
            ("rotated", first_id.as_str()),
            ("updated", first_id.as_str()),
            ("created", first_id.as_str()),
        ]
    );
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|pair| pair[0] > pair[1]), "{ids:?}");
    let by_action = |action: &str| entries.iter().find(|e| e["action"] == action).unwrap();
    assert_eq!(by_action("created")["actor"], "user:42");
    assert_eq!(by_action("created")["source"], "127.0.0.1");
    assert_eq!(by_action("revoked_by_holder")["actor"], "holder");
    assert_eq!(by_action("revoked_by_holder")["source"], "127.0.0.1");
    assert_eq!(by_action("imported")["actor"], "cli");
    assert_eq!(by_action("imported")["source"], Value::Null);
    assert_eq!(
        by_action("updated")["detail"],
        json!({"fields": ["title", "scopes"]})
    );
    assert_eq!(
        by_action("rotated")["detail"],
        json!({"successor_key_id": successor_id, "grace_period_seconds": 60})
    );
    let at = by_action("deleted")["at"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(at).is_ok(), "{at}");
    // The same rows through the SeaORM entities.
    {
        use sea_orm::{EntityTrait, QueryOrder};
        use tower_api_keys::audit::entity::{audit, outbox};
        let rows = audit::Entity::find()
            .order_by_desc(audit::Column::Id)
            .all(db.repo.connection())
            .await
            .unwrap();
        assert_eq!(rows.len(), entries.len());
        assert_eq!(rows[0].action, "imported");
        assert_eq!(rows[0].id, entries[0]["id"].as_i64().unwrap());
        assert_eq!(rows[1].key_id.to_string(), first_id);
        let events = outbox::Entity::find()
            .all(db.repo.connection())
            .await
            .unwrap();
        assert_eq!(events.len(), 7);
        assert!(
            events
                .iter()
                .all(|e| e.state == "pending" && e.attempts == 0)
        );
    }
    // No secret, hash or token anywhere in the log.
    let text = page.to_string();
    for secret in [
        &first["secret_key"],
        &successor["secret_key"],
        &successor["token"],
    ] {
        assert!(!text.contains(secret.as_str().unwrap()));
    }

    // One event per change but the import, in commit order, without secrets.
    let events = outbox(db).await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|(kind, payload)| {
            assert_eq!(payload["type"], kind.as_str());
            (kind.as_str(), payload["data"]["key_id"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("key.created", first_id.as_str()),
            ("key.updated", first_id.as_str()),
            ("key.rotated", first_id.as_str()),
            ("key.created", successor_id.as_str()),
            ("key.revoked", first_id.as_str()),
            ("key.revoked", successor_id.as_str()),
            ("key.deleted", first_id.as_str()),
        ]
    );
    assert_eq!(
        events[2].1["data"]["successor_key_id"],
        successor_id.as_str()
    );
    assert_eq!(events[4].1["data"]["reason"], "owner");
    assert_eq!(events[5].1["data"]["reason"], "holder");
    assert_eq!(events[1].1["data"]["title"], "renamed");
    assert_eq!(events[0].1["data"]["account_id"], account.to_string());
    let text = format!("{events:?}");
    assert!(!text.contains(first["secret_key"].as_str().unwrap()));
}

async fn pages_follow_next_before_and_stay_in_the_account(db: &TestDb) {
    let app = App::start(db).await;
    let account = AccountId::new(Uuid::new_v4());
    let mut made = Vec::new();
    for title in ["a", "b", "c"] {
        made.push(app.create(account, title).await["key_id"].clone());
    }
    let other = AccountId::new(Uuid::new_v4());
    app.create(other, "elsewhere").await;

    let mut seen = Vec::new();
    let mut query = "?limit=2".to_owned();
    loop {
        let (status, page) = app.audit(account, &query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 2);
        seen.extend(entries.iter().map(|e| e["key_id"].clone()));
        match page["next_before"].as_i64() {
            Some(next) => query = format!("?limit=2&before={next}"),
            None => break,
        }
    }
    made.reverse();
    assert_eq!(seen, made);

    // One key's entries only.
    let key = made[1].as_str().unwrap();
    let (_, page) = app.audit(account, &format!("?key_id={key}")).await;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["key_id"], key);
    // Another account's key: nothing, not its entries.
    let (status, page) = app.audit(other, &format!("?key_id={key}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["entries"], json!([]));
}

async fn bad_queries_are_400_and_name_the_parameter(db: &TestDb) {
    let app = App::start(db).await;
    let account = AccountId::new(Uuid::new_v4());
    app.create(account, "a").await;
    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=501", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=", "limit"),
        ("?limit=1&limit=2", "limit"),
        ("?before=0", "before"),
        ("?before=-5", "before"),
        ("?before=abc", "before"),
        ("?before=99999999999999999999", "before"),
        ("?key_id=not-a-uuid", "key_id"),
    ] {
        let (status, body) = app.audit(account, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["errors"][0]["field"], field, "{query}");
    }
    // Without the host's account: 401, as every route.
    let response = app
        .client
        .get(format!("{}/audit", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // The long actor is cut and its control characters escaped.
    let long = format!("tab\there{}", "x".repeat(300));
    let response = app
        .client
        .post(&app.base)
        .header("x-account-id", account.to_string())
        .header("x-actor", long)
        .json(&json!({"title": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let (_, page) = app.audit(account, "?limit=1").await;
    let actor = page["entries"][0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("tab\\there"), "{actor}");
    assert_eq!(actor.chars().count(), 128);
}

async fn a_refused_change_writes_no_audit_row(db: &TestDb) {
    let app = App::start(db).await;
    let account = AccountId::new(Uuid::new_v4());
    let key = app.create(account, "a").await;
    let key_id = key["key_id"].as_str().unwrap();
    app.call(
        reqwest::Method::PATCH,
        &format!("/{key_id}/revoke"),
        account,
        None,
    )
    .await;
    let (_, before) = app.audit(account, "").await;
    let events_before = outbox(db).await.len();
    // Rotating a revoked key: 409; a bad PATCH: 422; over the key limit: 409;
    // another account's key: 404.
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            &format!("/{key_id}/rotate"),
            account,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = app
        .call(
            reqwest::Method::PATCH,
            &format!("/{key_id}"),
            account,
            Some(json!({"title": ""})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    app.create(account, "b").await;
    app.create(account, "c").await;
    let (status, _) = app
        .call(
            reqwest::Method::POST,
            "",
            account,
            Some(json!({"title": "d"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let stranger = AccountId::new(Uuid::new_v4());
    let (status, _) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/{key_id}"),
            stranger,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, after) = app.audit(account, "").await;
    let after = after["entries"].as_array().unwrap();
    // Only the two creates that succeeded were added.
    assert_eq!(after.len(), before["entries"].as_array().unwrap().len() + 2);
    assert!(after[..2].iter().all(|e| e["action"] == "created"));
    assert_eq!(outbox(db).await.len(), events_before + 2);
}

async fn retention_runs_once_a_day_on_one_replica(db: &TestDb) {
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = KeyManager::new(validator);
    let account = AccountId::new(Uuid::new_v4());
    let created = manager
        .create(account, NewApiKey::new("old"))
        .await
        .unwrap();
    let key_id = created.key.key_id.into_inner();
    let today = Utc::now().date_naive();
    let old_day = today - TimeDelta::days(500);
    db.repo
        .record_usage(&[
            UsageCount {
                key_id,
                day: old_day,
                requests: 3,
            },
            UsageCount {
                key_id,
                day: today,
                requests: 5,
            },
        ])
        .await
        .unwrap();
    // Retention of 0 days for the audit log: the row just written goes.
    let pruned = manager.prune(0, 400).await.unwrap().unwrap();
    assert_eq!((pruned.audit_rows, pruned.usage_rows), (1, 1));
    let usage: Vec<(NaiveDate, u64)> = db.repo.usage(key_id, old_day).await.unwrap();
    assert_eq!(usage, [(today, 5)]);
    // Within the day, neither this replica nor another runs it again.
    let other = KeyManager::new(ApiKeyValidator::new(db.connect_again().await, pepper()));
    assert_eq!(other.prune(0, 0).await.unwrap(), None);
    assert_eq!(manager.prune(0, 0).await.unwrap(), None);
    assert_eq!(db.repo.usage(key_id, old_day).await.unwrap(), [(today, 5)]);
}
