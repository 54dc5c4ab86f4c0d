//! CONTRACT §8 and §9.2 over real HTTP, on every backend: scopes checked at the
//! route, metadata, `PATCH /{key_id}`, rotation with a grace period, and
//! revocation by the key holder.

mod common;

use std::time::{Duration, Instant};

use axum::{
    Json, Router, middleware,
    routing::{get, post},
};
use chrono::{DateTime, TimeDelta, Utc};
use common::{Gate, Probe, TestDb, concurrently, host_auth, pepper, serve};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use tower_api_keys::{
    ApiKeyAuthLayer, ApiKeyValidator, AuthenticatedKey, KeyManager, RequireScopesLayer,
    router::{ManagementRouter, RevocationRouter},
    store::ApiKeyRepository,
};
use uuid::Uuid;

/// The app under test: `/v1/reports` (GET needs `reports:read`, POST
/// `reports:write`) and `/v1/whoami` behind the layer, key management behind
/// the stand-in host login, revocation by credential without any login.
fn app(validator: &ApiKeyValidator, manager: &KeyManager) -> Router {
    let auth = ApiKeyAuthLayer::new(validator.clone());
    Router::new()
        .route(
            "/v1/whoami",
            get(|key: AuthenticatedKey| async move {
                Json(json!({
                    "account_id": key.account_id(),
                    "key_id": key.key_id(),
                    "scopes": key.scopes(),
                    "metadata": key.metadata(),
                }))
            })
            .route_layer(auth.clone()),
        )
        .route(
            "/v1/reports",
            get(report)
                .layer(RequireScopesLayer::new(["reports:read"]))
                .merge(post(report).layer(RequireScopesLayer::new(["reports:write"])))
                .route_layer(auth),
        )
        .nest(
            "/v1/api-keys/revocations",
            RevocationRouter::new(manager.clone()).build(),
        )
        .nest(
            "/v1/api-keys",
            ManagementRouter::new(manager.clone())
                .build()
                .layer(middleware::from_fn(host_auth)),
        )
}

async fn report(key: AuthenticatedKey) -> Json<Value> {
    Json(json!({"account_id": key.account_id(), "key_id": key.key_id()}))
}

/// A key created over HTTP.
struct Key {
    id: String,
    credential: String,
    created: Value,
}

struct Api {
    base: String,
    client: reqwest::Client,
    account: Uuid,
    validator: ApiKeyValidator,
}

impl Api {
    async fn start(db: &TestDb) -> Self {
        Self::start_on(db.repo.clone()).await
    }

    /// The app over `repository` (a [`common::Probe`] around the test
    /// database, say).
    async fn start_on(repository: impl ApiKeyRepository) -> Self {
        let validator = ApiKeyValidator::new(repository, pepper());
        let manager = KeyManager::new(validator.clone());
        let addr = serve(app(&validator, &manager)).await;
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            account: Uuid::new_v4(),
            validator,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A management request as `account`.
    fn manage_as(&self, account: Uuid, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(&format!("/v1/api-keys{path}")))
            .header("x-account-id", account.to_string())
    }

    fn manage(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.manage_as(self.account, method, path)
    }

    async fn create(&self, body: Value) -> reqwest::Response {
        self.manage(Method::POST, "")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn create_ok(&self, body: Value) -> Key {
        let response = self.create(body.clone()).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{body}");
        key_of(response.json().await.unwrap())
    }

    async fn get_key(&self, id: &str) -> Value {
        let response = self
            .manage(Method::GET, &format!("/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn list(&self) -> Vec<Value> {
        let response = self.manage(Method::GET, "").send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn patch(&self, id: &str, body: Value) -> reqwest::Response {
        self.manage(Method::PATCH, &format!("/{id}"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn rotate(&self, id: &str, body: Option<Value>) -> reqwest::Response {
        let request = self.manage(Method::POST, &format!("/{id}/rotate"));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    /// `GET` or `POST /v1/reports` with `credential` as `X-API-Key`.
    async fn report(&self, method: Method, credential: &str) -> reqwest::Response {
        self.client
            .request(method, self.url("/v1/reports"))
            .header("x-api-key", credential)
            .send()
            .await
            .unwrap()
    }

    async fn report_status(&self, method: Method, credential: &str) -> StatusCode {
        self.report(method, credential).await.status()
    }

    /// `POST /v1/api-keys/revocations` with a JSON body and no login.
    async fn revoke_credential(&self, body: Value) -> reqwest::Response {
        self.client
            .post(self.url("/v1/api-keys/revocations"))
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn key_of(created: Value) -> Key {
    let id = created["key_id"].as_str().unwrap().to_owned();
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    Key {
        id,
        credential,
        created,
    }
}

/// A problem document with this status; returns its body.
async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

/// The fields a 422 problem names, sorted.
async fn invalid_fields(response: reqwest::Response) -> Vec<String> {
    let body = problem(response, 422).await;
    let mut fields: Vec<String> = body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {body}"))
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            e["field"].as_str().unwrap().to_owned()
        })
        .collect();
    fields.sort();
    fields
}

fn time(value: &Value) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is no time"));
    assert!(text.ends_with('Z'), "{text} is not UTC");
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn assert_near(actual: DateTime<Utc>, expected: DateTime<Utc>, slack: TimeDelta) {
    assert!(
        (actual - expected).abs() <= slack,
        "{actual} is not within {slack} of {expected}"
    );
}

fn sorted_keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// Writes `expires_at` (and `created_at`, if given) of a key straight to the
/// store, as another writer would.
async fn set_times(
    db: &TestDb,
    key_id: &str,
    created_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    use tower_api_keys::entity::{Column, Entity};
    let mut update = Entity::update_many().col_expr(Column::ExpiresAt, Expr::value(expires_at));
    if let Some(created_at) = created_at {
        update = update.col_expr(Column::CreatedAt, Expr::value(created_at));
    }
    let result = update
        .filter(Column::KeyId.eq(key_id.parse::<Uuid>().unwrap()))
        .exec(db.repo.connection())
        .await
        .unwrap();
    assert_eq!(result.rows_affected, 1);
}

const INSUFFICIENT: &str = "Insufficient scope";

/// A `403` of the scope guard naming `scope`.
async fn assert_insufficient_scope(response: reqwest::Response, scope: &str) {
    let challenge = response.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        challenge,
        format!(r#"Bearer error="insufficient_scope", scope="{scope}""#)
    );
    let body = problem(response, 403).await;
    assert_eq!(body["title"], "Forbidden");
    assert_eq!(body["detail"], INSUFFICIENT);
    if let Some(required) = body.get("required_scopes") {
        assert_eq!(required, &json!([scope]));
    }
}

// ---------------------------------------------------------------- scopes

async fn guarded_routes_check_scopes(db: &TestDb) {
    let api = Api::start(db).await;
    let unrestricted = api.create_ok(json!({"title": "all"})).await;
    let reader = api
        .create_ok(json!({"title": "reader", "scopes": ["reports:read"]}))
        .await;
    let writer = api
        .create_ok(json!({"title": "both", "scopes": ["reports:write", "reports:read", "x"]}))
        .await;
    let nothing = api.create_ok(json!({"title": "none", "scopes": []})).await;
    assert_eq!(unrestricted.created["scopes"], Value::Null);
    assert_eq!(nothing.created["scopes"], json!([]));

    // Unrestricted and fully scoped keys pass both; twice (store, then cache).
    for key in [&unrestricted, &writer] {
        for _ in 0..2 {
            for method in [Method::GET, Method::POST] {
                let response = api.report(method.clone(), &key.credential).await;
                assert_eq!(response.status(), StatusCode::OK, "{method} {}", key.id);
                let body: Value = response.json().await.unwrap();
                assert_eq!(
                    body,
                    json!({"account_id": api.account.to_string(), "key_id": key.id})
                );
            }
        }
    }

    // `reports:read` only: GET passes, POST is 403 with the challenge.
    for _ in 0..2 {
        assert_eq!(
            api.report_status(Method::GET, &reader.credential).await,
            StatusCode::OK
        );
        assert_insufficient_scope(
            api.report(Method::POST, &reader.credential).await,
            "reports:write",
        )
        .await;
    }

    // `[]` grants nothing.
    for _ in 0..2 {
        assert_insufficient_scope(
            api.report(Method::GET, &nothing.credential).await,
            "reports:read",
        )
        .await;
        assert_insufficient_scope(
            api.report(Method::POST, &nothing.credential).await,
            "reports:write",
        )
        .await;
    }

    // An invalid key is 401 before any scope check, even with a scoped
    // public key; no key at all is 401 too.
    for key in [&nothing, &reader] {
        let public_key = key.credential.split(':').next().unwrap();
        let wrong = format!("{public_key}:sk_{}", "Z".repeat(32));
        for method in [Method::GET, Method::POST] {
            let response = api.report(method, &wrong).await;
            assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
            assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
        }
    }
    let unknown = format!("pk_{}:sk_{}", "Q".repeat(32), "R".repeat(32));
    let response = api.report(Method::POST, &unknown).await;
    assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
    let response = api.client.get(api.url("/v1/reports")).send().await.unwrap();
    assert_eq!(problem(response, 401).await["detail"], "Missing API key");
    let response = api.report(Method::GET, "pk_short:sk_short").await;
    assert_eq!(
        problem(response, 401).await["detail"].as_str().unwrap(),
        "Invalid API key format. Expected format: pk_xxx:sk_xxx"
    );

    // A revoked scoped key is 401, not 403.
    let response = api
        .manage(Method::PATCH, &format!("/{}/revoke", nothing.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = api.report(Method::GET, &nothing.credential).await;
    assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
}

// ---------------------------------------------------- scopes and metadata

async fn scopes_and_metadata_round_trip(db: &TestDb) {
    let api = Api::start(db).await;
    let metadata = json!({
        "名前": "ключ 🔑",
        "plan": "pro",
        "nested": {"list": [1, 2.5, {"deep": null}, "ü"], "flag": true, "empty": {}},
        "count": 42,
    });
    let key = api
        .create_ok(json!({
            "title": "scoped",
            "scopes": ["reports:write", "a.b_c-d:e", "reports:read", "0"],
            "metadata": metadata,
        }))
        .await;
    let sorted = json!(["0", "a.b_c-d:e", "reports:read", "reports:write"]);
    assert_eq!(key.created["scopes"], sorted);
    assert_eq!(key.created["metadata"], metadata);

    let plain = api.create_ok(json!({"title": "plain"})).await;
    assert_eq!(plain.created["scopes"], Value::Null);
    assert_eq!(plain.created["metadata"], Value::Null);

    let shown = api.get_key(&key.id).await;
    assert_eq!(shown["scopes"], sorted);
    assert_eq!(shown["metadata"], metadata);
    let listed = api.list().await;
    assert_eq!(listed.len(), 2);
    let listed_key = listed
        .iter()
        .find(|k| k["key_id"] == key.id.as_str())
        .unwrap();
    assert_eq!(listed_key["scopes"], sorted);
    assert_eq!(listed_key["metadata"], metadata);
    let listed_plain = listed
        .iter()
        .find(|k| k["key_id"] == plain.id.as_str())
        .unwrap();
    assert_eq!(listed_plain["scopes"], Value::Null);
    assert_eq!(listed_plain["metadata"], Value::Null);

    // The handler reads both from the authenticated key.
    for _ in 0..2 {
        let response = api
            .client
            .get(api.url("/v1/whoami"))
            .header("x-api-key", &key.credential)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let me: Value = response.json().await.unwrap();
        assert_eq!(me["scopes"], sorted);
        assert_eq!(me["metadata"], metadata);
    }

    // The bounds themselves are accepted: 32 scopes, a 64-character scope,
    // metadata of exactly 4,096 bytes (non-ASCII counts in bytes).
    let many: Vec<String> = (0..32).map(|i| format!("s{i:02}")).collect();
    let key = api.create_ok(json!({"title": "32", "scopes": many})).await;
    assert_eq!(key.created["scopes"], json!(many));
    let long = "a".repeat(64);
    api.create_ok(json!({"title": "64", "scopes": [long]}))
        .await;
    // {"k":"…"} is 8 bytes around the string.
    let exact = json!({"k": "é".repeat(2044)});
    let key = api
        .create_ok(json!({"title": "4096", "metadata": exact}))
        .await;
    assert_eq!(api.get_key(&key.id).await["metadata"], exact);
    let exact_ascii = json!({"k": "a".repeat(4088)});
    api.create_ok(json!({"title": "4096 ascii", "metadata": exact_ascii}))
        .await;
}

async fn invalid_scopes_and_metadata_are_422_and_create_nothing(db: &TestDb) {
    let api = Api::start(db).await;
    api.create_ok(json!({"title": "existing"})).await;
    let before = api.list().await;

    let too_many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    for scopes in [
        json!(["Reports:read"]),
        json!(["a b"]),
        json!([""]),
        json!(["_a"]),
        json!([":read"]),
        json!(["é"]),
        json!(["a/b"]),
        json!(["a".repeat(65)]),
        json!(too_many),
        json!(["reports:read", "reports:read"]),
        json!("reports:read"),
        json!({"reports:read": true}),
        json!([1]),
        json!([null]),
        json!(true),
        json!(7),
    ] {
        let response = api
            .create(json!({"title": "bad scopes", "scopes": scopes}))
            .await;
        assert_eq!(invalid_fields(response).await, ["scopes"], "{scopes}");
    }
    for metadata in [
        json!([]),
        json!([{"a": 1}]),
        json!("x"),
        json!(1),
        json!(true),
        json!({"k": "a".repeat(4089)}),
        json!({"k": "é".repeat(2045)}),
    ] {
        let response = api
            .create(json!({"title": "bad metadata", "metadata": metadata}))
            .await;
        assert_eq!(invalid_fields(response).await, ["metadata"]);
    }
    // Both at once, with a bad title: every field is named.
    let response = api
        .create(json!({"title": " ", "scopes": ["A"], "metadata": []}))
        .await;
    assert_eq!(
        invalid_fields(response).await,
        ["metadata", "scopes", "title"]
    );
    assert_eq!(api.list().await, before);
}

/// `{"k": … {"k": 1} …}`: `levels` objects, the outermost at level 1, every
/// other one an array when `arrays` is set.
fn nested_metadata(levels: usize, arrays: bool) -> Value {
    let mut value = json!(1);
    for level in (2..=levels).rev() {
        value = if arrays && level % 2 == 0 {
            json!([value])
        } else {
            json!({ "k": value })
        };
    }
    json!({ "k": value })
}

/// Metadata the crate accepts must be metadata every database stores:
/// U+0000 anywhere (PostgreSQL's `jsonb` refuses it) or nesting past 16
/// levels (MariaDB refuses 32) is a `422` naming `metadata` on create and on
/// `PATCH`, never a `503` from the database; 16 levels are stored as given.
async fn metadata_with_nul_or_deep_nesting_is_422_on_every_backend(db: &TestDb) {
    let api = Api::start(db).await;
    let key = api.create_ok(json!({"title": "target"})).await;
    let before = api.list().await;
    for metadata in [
        json!({"k": "a\u{0}b"}),
        json!({"a\u{0}": "v"}),
        json!({"k": [{"x": "\u{0}"}]}),
        nested_metadata(17, false),
        nested_metadata(17, true),
        nested_metadata(32, false),
    ] {
        let response = api
            .create(json!({"title": "bad metadata", "metadata": metadata}))
            .await;
        assert_eq!(invalid_fields(response).await, ["metadata"], "{metadata}");
        let response = api.patch(&key.id, json!({"metadata": metadata})).await;
        assert_eq!(invalid_fields(response).await, ["metadata"], "{metadata}");
    }
    assert_eq!(api.list().await, before);

    for arrays in [false, true] {
        let deepest = nested_metadata(16, arrays);
        let created = api
            .create_ok(json!({"title": "16 levels", "metadata": deepest}))
            .await;
        assert_eq!(api.get_key(&created.id).await["metadata"], deepest);
        let response = api.patch(&key.id, json!({"metadata": deepest})).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(api.get_key(&key.id).await["metadata"], deepest);
    }
}

// ------------------------------------------------------------------ PATCH

async fn patch_changes_fields_and_takes_effect_at_once(db: &TestDb) {
    let api = Api::start(db).await;
    let key = api
        .create_ok(json!({
            "title": "original",
            "description": "first",
            "scopes": ["reports:read", "reports:write"],
            "metadata": {"team": "core"},
        }))
        .await;
    // Cached with both scopes.
    for method in [Method::GET, Method::POST] {
        assert_eq!(
            api.report_status(method, &key.credential).await,
            StatusCode::OK
        );
    }

    // Removing a scope: the very next request is refused.
    let response = api
        .patch(&key.id, json!({"scopes": ["reports:read"]}))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["scopes"], json!(["reports:read"]));
    assert_eq!(patched["title"], "original");
    assert_eq!(patched["description"], "first");
    assert_eq!(patched["metadata"], json!({"team": "core"}));
    assert_eq!(patched, api.get_key(&key.id).await);
    // The key object: every field `GET` shows, no secret.
    let keys = sorted_keys(&patched);
    for field in [
        "created_at",
        "description",
        "expires_at",
        "key_id",
        "last_used_at",
        "metadata",
        "public_key",
        "rotated_from",
        "scopes",
        "status",
        "title",
    ] {
        assert!(keys.iter().any(|k| k == field), "{field} missing: {keys:?}");
    }
    assert!(!keys.iter().any(|k| k.contains("secret")), "{keys:?}");
    assert_insufficient_scope(
        api.report(Method::POST, &key.credential).await,
        "reports:write",
    )
    .await;
    assert_eq!(
        api.report_status(Method::GET, &key.credential).await,
        StatusCode::OK
    );

    // Title (trimmed), description, metadata (replaced as a whole).
    let response = api
        .patch(
            &key.id,
            json!({"title": "  renamed  ", "description": "second", "metadata": {"名前": "ü", "n": {"x": [1]}}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["title"], "renamed");
    assert_eq!(patched["description"], "second");
    assert_eq!(patched["metadata"], json!({"名前": "ü", "n": {"x": [1]}}));
    assert_eq!(patched["scopes"], json!(["reports:read"]));
    assert_eq!(patched["key_id"], key.id.as_str());
    assert_eq!(patched["created_at"], key.created["created_at"]);
    assert_eq!(patched["status"], "active");
    assert_eq!(patched, api.get_key(&key.id).await);

    // `[]`: refused on both at once.
    assert_eq!(
        api.patch(&key.id, json!({"scopes": []})).await.status(),
        StatusCode::OK
    );
    assert_insufficient_scope(
        api.report(Method::GET, &key.credential).await,
        "reports:read",
    )
    .await;

    // `null` clears description, scopes (unrestricted again) and metadata.
    let response = api
        .patch(
            &key.id,
            json!({"description": null, "scopes": null, "metadata": null}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["scopes"], Value::Null);
    assert_eq!(patched["metadata"], Value::Null);
    assert_eq!(patched["title"], "renamed");
    assert_eq!(patched, api.get_key(&key.id).await);
    for method in [Method::GET, Method::POST] {
        assert_eq!(
            api.report_status(method, &key.credential).await,
            StatusCode::OK
        );
    }

    // Refused changes change nothing.
    let before = api.get_key(&key.id).await;
    for (body, fields) in [
        (json!({"title": null}), vec!["title"]),
        (json!({"title": "  "}), vec!["title"]),
        (json!({"title": 5}), vec!["title"]),
        (json!({"colour": "red"}), vec!["colour"]),
        (json!({"expires_in_days": 3}), vec!["expires_in_days"]),
        (
            json!({"title": "ok", "scopes": ["reports:read"], "titel": "typo"}),
            vec!["titel"],
        ),
        (json!({"scopes": ["A"]}), vec!["scopes"]),
        (json!({"scopes": "reports:read"}), vec!["scopes"]),
        (json!({"scopes": ["a", "a"]}), vec!["scopes"]),
        (json!({"metadata": [1]}), vec!["metadata"]),
        (
            json!({"metadata": {"k": "a".repeat(4089)}}),
            vec!["metadata"],
        ),
        (json!({"description": 1}), vec!["description"]),
    ] {
        let response = api.patch(&key.id, body.clone()).await;
        assert_eq!(invalid_fields(response).await, fields, "{body}");
        assert_eq!(api.get_key(&key.id).await, before, "{body}");
    }
    // Still unrestricted.
    assert_eq!(
        api.report_status(Method::POST, &key.credential).await,
        StatusCode::OK
    );

    // Another account's key, or none: 404, and the key is untouched.
    let stranger = Uuid::new_v4();
    let response = api
        .manage_as(stranger, Method::PATCH, &format!("/{}", key.id))
        .json(&json!({"title": "stolen", "scopes": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response, 404).await["detail"], "API key not found");
    let response = api
        .patch(&Uuid::new_v4().to_string(), json!({"title": "nobody"}))
        .await;
    assert_eq!(problem(response, 404).await["detail"], "API key not found");
    assert_eq!(api.get_key(&key.id).await, before);
    assert_eq!(
        api.report_status(Method::POST, &key.credential).await,
        StatusCode::OK
    );

    // Not JSON: 400 / 415.
    let response = api
        .manage(Method::PATCH, &format!("/{}", key.id))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    problem(response, 400).await;
    let response = api
        .manage(Method::PATCH, &format!("/{}", key.id))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(r#"{"title":"x"}"#)
        .send()
        .await
        .unwrap();
    problem(response, 415).await;
    assert_eq!(api.get_key(&key.id).await, before);
}

// --------------------------------------------------------------- rotation

async fn rotation_without_grace_replaces_the_key_at_once(db: &TestDb) {
    let api = Api::start(db).await;
    let metadata = json!({"owner": "Zoë", "limits": {"daily": 10}});
    let old = api
        .create_ok(json!({
            "title": "deploy",
            "description": "CI",
            "scopes": ["reports:write", "reports:read"],
            "metadata": metadata,
        }))
        .await;
    // Cached before the rotation.
    assert_eq!(
        api.report_status(Method::POST, &old.credential).await,
        StatusCode::OK
    );

    let response = api.rotate(&old.id, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let new = key_of(response.json().await.unwrap());
    assert_eq!(location, format!("/v1/api-keys/{}", new.id));
    assert_ne!(new.id, old.id);
    assert_eq!(new.created["rotated_from"], old.id.as_str());
    assert_eq!(new.created["title"], "deploy");
    assert_eq!(new.created["description"], "CI");
    assert_eq!(
        new.created["scopes"],
        json!(["reports:read", "reports:write"])
    );
    assert_eq!(new.created["metadata"], metadata);
    assert_eq!(new.created["status"], "active");
    assert_eq!(new.created["expires_at"], Value::Null);
    assert_eq!(sorted_keys(&new.created), sorted_keys(&old.created));
    assert_ne!(new.created["public_key"], old.created["public_key"]);
    assert!(
        tower_api_keys::Credential::parse(&new.credential).is_ok(),
        "the new credential is well formed"
    );

    // The old key is refused on the very next request; the new one works.
    for method in [Method::GET, Method::POST] {
        let response = api.report(method.clone(), &old.credential).await;
        assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
        assert_eq!(
            api.report_status(method, &new.credential).await,
            StatusCode::OK
        );
    }
    let shown_old = api.get_key(&old.id).await;
    assert_eq!(shown_old["status"], "revoked");
    let shown_new = api.get_key(&new.id).await;
    assert_eq!(shown_new["rotated_from"], old.id.as_str());
    assert_eq!(shown_new["status"], "active");
    assert!(
        !serde_json::to_string(&shown_new)
            .unwrap()
            .contains("secret")
    );
    let listed = api.list().await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["key_id"], new.id.as_str(), "newest first");

    // Rotating the revoked key is a conflict and creates nothing.
    let response = api.rotate(&old.id, Some(json!({}))).await;
    assert_eq!(
        problem(response, 409).await["detail"],
        "API key is not active"
    );
    assert_eq!(api.list().await.len(), 2);

    // The successor rotates in turn (body `{}`), a chain of three.
    let response = api.rotate(&new.id, Some(json!({}))).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let third = key_of(response.json().await.unwrap());
    assert_eq!(third.created["rotated_from"], new.id.as_str());
    assert_eq!(
        api.report_status(Method::GET, &third.credential).await,
        StatusCode::OK
    );
    assert_eq!(
        api.report_status(Method::GET, &new.credential).await,
        StatusCode::UNAUTHORIZED
    );
}

async fn rotation_with_grace_keeps_both_keys_until_it_ends(db: &TestDb) {
    let api = Api::start(db).await;
    let old = api
        .create_ok(json!({"title": "rolling", "scopes": ["reports:read"]}))
        .await;
    assert_eq!(
        api.report_status(Method::GET, &old.credential).await,
        StatusCode::OK
    );

    let grace = Duration::from_secs(2);
    let sent = Instant::now();
    let sent_wall = Utc::now();
    let response = api
        .rotate(&old.id, Some(json!({"grace_period_seconds": 2})))
        .await;
    let received_wall = Utc::now();
    assert_eq!(response.status(), StatusCode::CREATED);
    let new = key_of(response.json().await.unwrap());
    assert_eq!(new.created["rotated_from"], old.id.as_str());
    assert_eq!(new.created["scopes"], json!(["reports:read"]));
    assert_eq!(new.created["expires_at"], Value::Null);

    // Both keys valid during the grace period; the old one reads active with
    // `expires_at` at the end of it.
    assert_eq!(
        api.report_status(Method::GET, &old.credential).await,
        StatusCode::OK
    );
    assert_eq!(
        api.report_status(Method::GET, &new.credential).await,
        StatusCode::OK
    );
    let shown = api.get_key(&old.id).await;
    assert_eq!(shown["status"], "active");
    let expires_at = time(&shown["expires_at"]);
    let two = TimeDelta::seconds(2);
    assert!(
        expires_at >= sent_wall + two - TimeDelta::milliseconds(5)
            && expires_at <= received_wall + two + TimeDelta::milliseconds(5),
        "{expires_at} not in [{sent_wall}, {received_wall}] + 2 s"
    );

    // A second rotation within the grace period: conflict, nothing created.
    let response = api
        .rotate(&old.id, Some(json!({"grace_period_seconds": 60})))
        .await;
    assert_eq!(
        problem(response, 409).await["detail"],
        "API key has already been rotated"
    );
    assert_eq!(api.list().await.len(), 2);
    assert_eq!(
        time(&api.get_key(&old.id).await["expires_at"]),
        expires_at,
        "a refused rotation leaves the old key as it was"
    );

    // Poll through the cache until the old key is refused: not before the
    // grace period ends, and soon after it.
    let deadline = Instant::now() + grace + Duration::from_secs(3);
    let refused_after = loop {
        let status = api.report_status(Method::GET, &old.credential).await;
        if status == StatusCode::UNAUTHORIZED {
            break sent.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            Instant::now() < deadline,
            "the old key is still accepted long after its grace period"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        refused_after + Duration::from_millis(50) >= grace,
        "the old key was refused after {refused_after:?}, before the grace period ended"
    );
    let response = api.report(Method::GET, &old.credential).await;
    assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
    assert_eq!(api.get_key(&old.id).await["status"], "expired");
    assert_eq!(
        api.report_status(Method::GET, &new.credential).await,
        StatusCode::OK
    );

    // Expired now: not active.
    let response = api.rotate(&old.id, None).await;
    assert_eq!(
        problem(response, 409).await["detail"],
        "API key is not active"
    );
    assert_eq!(api.list().await.len(), 2);
}

async fn rotation_keeps_the_lifetime_and_never_extends_the_old_key(db: &TestDb) {
    let api = Api::start(db).await;
    let old = api
        .create_ok(json!({"title": "month", "expires_in_days": 30}))
        .await;
    // Ten days into its thirty.
    let now = Utc::now();
    set_times(
        db,
        &old.id,
        Some(now - TimeDelta::days(10)),
        now + TimeDelta::days(20),
    )
    .await;
    let before = Utc::now();
    let response = api.rotate(&old.id, None).await;
    let after = Utc::now();
    assert_eq!(response.status(), StatusCode::CREATED);
    let new = key_of(response.json().await.unwrap());
    let created_at = time(&new.created["created_at"]);
    let expires_at = time(&new.created["expires_at"]);
    assert!(created_at >= before - TimeDelta::milliseconds(5) && created_at <= after);
    let lifetime = expires_at - created_at;
    assert!(
        (lifetime - TimeDelta::days(30)).abs() <= TimeDelta::seconds(1),
        "the successor lives {lifetime}, not the old key's 30 days"
    );
    assert_near(
        time(&api.get_key(&new.id).await["expires_at"]),
        expires_at,
        TimeDelta::milliseconds(1),
    );
    assert_eq!(
        api.report_status(Method::GET, &new.credential).await,
        StatusCode::OK
    );

    // Grace period longer than what the key has left: its own expiry stays.
    let short = api
        .create_ok(json!({"title": "short", "expires_in_days": 1}))
        .await;
    let own = Utc::now() + TimeDelta::minutes(30);
    set_times(db, &short.id, None, own).await;
    let response = api
        .rotate(&short.id, Some(json!({"grace_period_seconds": 3600})))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let shown = api.get_key(&short.id).await;
    assert_eq!(shown["status"], "active");
    assert_near(time(&shown["expires_at"]), own, TimeDelta::milliseconds(1));

    // Grace period shorter than the lifetime left: the grace period's end.
    let long = api.create_ok(json!({"title": "long"})).await;
    let before = Utc::now();
    let response = api
        .rotate(&long.id, Some(json!({"grace_period_seconds": 604800})))
        .await;
    let after = Utc::now();
    assert_eq!(response.status(), StatusCode::CREATED);
    let successor = key_of(response.json().await.unwrap());
    assert_eq!(successor.created["expires_at"], Value::Null);
    let end = time(&api.get_key(&long.id).await["expires_at"]);
    let week = TimeDelta::seconds(604_800);
    assert!(
        end >= before + week - TimeDelta::milliseconds(5)
            && end <= after + week + TimeDelta::milliseconds(5)
    );
    for key in [&long, &successor] {
        assert_eq!(
            api.report_status(Method::GET, &key.credential).await,
            StatusCode::OK
        );
    }
}

/// The successor copies the old key's rate limit (CONTRACT §8.3): its key
/// object shows it, and the layer enforces it on the new credential.
async fn rotation_copies_the_rate_limit(db: &TestDb) {
    let api = Api::start(db).await;
    let limit = json!({"requests": 1, "period_seconds": 3600});
    let old = api
        .create_ok(json!({"title": "metered", "rate_limit": limit}))
        .await;
    assert_eq!(old.created["rate_limit"], limit);

    let response = api.rotate(&old.id, None).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let new = key_of(response.json().await.unwrap());
    assert_eq!(new.created["rotated_from"], old.id.as_str());
    assert_eq!(new.created["rate_limit"], limit);
    assert_eq!(api.get_key(&new.id).await["rate_limit"], limit);

    // One request per hour on the new credential: the first passes with the
    // copied policy in its headers, the second is refused.
    let first = api.report(Method::GET, &new.credential).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["ratelimit-policy"], "\"key\";q=1;w=3600");
    let second = api.report(Method::GET, &new.credential).await;
    assert_eq!(second.headers()["ratelimit-policy"], "\"key\";q=1;w=3600");
    let retry_after: u64 = second.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=3600).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(problem(second, 429).await["detail"], "Rate limit exceeded");
}

/// A rotation racing a `PATCH` (CONTRACT §18): the PATCH commits after the
/// rotation was asked for but before its transaction; the successor copies
/// the key as the PATCH left it (title, description, scopes, metadata, rate
/// limit), never an earlier read, and the layer applies that policy to it.
async fn rotation_copies_a_patch_that_commits_first(db: &TestDb) {
    let gate = Gate::new("rotate");
    let api = Api::start_on(Probe::new(db.repo.clone()).with_before_write(gate.hook())).await;
    let old = api
        .create_ok(json!({
            "title": "before",
            "description": "before",
            "scopes": ["reports:read", "reports:write"],
            "metadata": {"version": 1},
            "rate_limit": {"requests": 1000, "period_seconds": 60},
            "expires_in_days": 30,
        }))
        .await;

    let rotation = tokio::spawn({
        let request = api.manage(Method::POST, &format!("/{}/rotate", old.id));
        async move { request.send().await.unwrap() }
    });
    gate.arrived().await;
    let patched = api
        .patch(
            &old.id,
            json!({
                "title": "after",
                "description": null,
                "scopes": ["reports:read"],
                "metadata": null,
                "rate_limit": {"requests": 1, "period_seconds": 3600},
            }),
        )
        .await;
    assert_eq!(patched.status(), StatusCode::OK);
    gate.release();
    let response = rotation.await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let new = key_of(response.json().await.unwrap());

    let shown = api.get_key(&new.id).await;
    for body in [&new.created, &shown] {
        assert_eq!(body["title"], "after", "{body}");
        assert_eq!(body["description"], Value::Null, "{body}");
        assert_eq!(body["scopes"], json!(["reports:read"]), "{body}");
        assert_eq!(body["metadata"], Value::Null, "{body}");
        assert_eq!(
            body["rate_limit"],
            json!({"requests": 1, "period_seconds": 3600}),
            "{body}"
        );
        assert_eq!(body["rotated_from"], old.id.as_str(), "{body}");
    }
    // The same lifetime, counted from the rotation.
    assert_near(
        time(&shown["expires_at"]),
        time(&shown["created_at"]) + TimeDelta::days(30),
        TimeDelta::seconds(2),
    );
    // The layer holds the successor to the patched policy.
    assert_insufficient_scope(
        api.report(Method::POST, &new.credential).await,
        "reports:write",
    )
    .await;
    let limited = api.report(Method::GET, &new.credential).await;
    assert_eq!(problem(limited, 429).await["detail"], "Rate limit exceeded");
}

async fn rotation_refusals_change_nothing(db: &TestDb) {
    let api = Api::start(db).await;
    let key = api.create_ok(json!({"title": "target"})).await;
    let shown = api.get_key(&key.id).await;

    for (body, field) in [
        (
            json!({"grace_period_seconds": 604801}),
            "grace_period_seconds",
        ),
        (json!({"grace_period_seconds": -1}), "grace_period_seconds"),
        (json!({"grace_period_seconds": "x"}), "grace_period_seconds"),
        (
            json!({"grace_period_seconds": "60"}),
            "grace_period_seconds",
        ),
        (json!({"grace_period_seconds": 1.5}), "grace_period_seconds"),
        (
            json!({"grace_period_seconds": true}),
            "grace_period_seconds",
        ),
        (json!({"grace_period": 60}), "grace_period"),
    ] {
        let response = api.rotate(&key.id, Some(body.clone())).await;
        assert_eq!(invalid_fields(response).await, [field], "{body}");
    }
    let response = api
        .manage(Method::POST, &format!("/{}/rotate", key.id))
        .header(header::CONTENT_TYPE, "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    problem(response, 400).await;
    let response = api
        .manage(Method::POST, &format!("/{}/rotate", key.id))
        .json(&json!([60]))
        .send()
        .await
        .unwrap();
    problem(response, 422).await;

    // Another account's key, or none: 404.
    let stranger = Uuid::new_v4();
    let response = api
        .manage_as(stranger, Method::POST, &format!("/{}/rotate", key.id))
        .send()
        .await
        .unwrap();
    assert_eq!(problem(response, 404).await["detail"], "API key not found");
    let response = api.rotate(&Uuid::new_v4().to_string(), None).await;
    assert_eq!(problem(response, 404).await["detail"], "API key not found");
    let response = api
        .manage_as(stranger, Method::GET, "")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Vec<Value>>().await.unwrap(),
        Vec::<Value>::new()
    );

    // Nothing changed.
    assert_eq!(api.list().await, vec![shown.clone()]);
    assert_eq!(api.get_key(&key.id).await, shown);
    assert_eq!(
        api.report_status(Method::GET, &key.credential).await,
        StatusCode::OK
    );

    // A revoked key: not active.
    let revoked = api.create_ok(json!({"title": "revoked"})).await;
    let response = api
        .manage(Method::PATCH, &format!("/{}/revoke", revoked.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    for grace in [0, 60] {
        let response = api
            .rotate(&revoked.id, Some(json!({"grace_period_seconds": grace})))
            .await;
        assert_eq!(
            problem(response, 409).await["detail"],
            "API key is not active"
        );
    }

    // An expired key (expiry written straight to the store): not active.
    let expired = api
        .create_ok(json!({"title": "expired", "expires_in_days": 1}))
        .await;
    assert_eq!(
        api.report_status(Method::GET, &expired.credential).await,
        StatusCode::OK
    );
    set_times(db, &expired.id, None, Utc::now() - TimeDelta::days(1)).await;
    api.validator
        .invalidate(expired.credential.split(':').next().unwrap());
    assert_eq!(api.get_key(&expired.id).await["status"], "expired");
    for grace in [0, 60] {
        let response = api
            .rotate(&expired.id, Some(json!({"grace_period_seconds": grace})))
            .await;
        assert_eq!(
            problem(response, 409).await["detail"],
            "API key is not active"
        );
    }
    assert_eq!(api.list().await.len(), 3);
    assert!(api.list().await.iter().all(|k| k["rotated_from"].is_null()));
}

/// Eight parallel `POST /{key_id}/rotate` of one fresh key; the old key and
/// each answer's status and body.
async fn race_rotations(api: &Api, grace: u64, title: String) -> (Key, Vec<(u16, Value)>) {
    let old = api.create_ok(json!({ "title": title })).await;
    let client = api.client.clone();
    let url = api.url(&format!("/v1/api-keys/{}/rotate", old.id));
    let account = api.account.to_string();
    let results = concurrently(8, move |_| {
        let request = client
            .post(url.clone())
            .header("x-account-id", account.clone())
            .json(&json!({ "grace_period_seconds": grace }));
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        }
    })
    .await;
    (old, results)
}

async fn concurrent_rotations_leave_exactly_one_successor(db: &TestDb) {
    let api = Api::start(db).await;
    for grace in [60, 0] {
        for round in 0..3 {
            let (old, results) = race_rotations(&api, grace, format!("race {grace} {round}")).await;
            let winners: Vec<&Value> = results
                .iter()
                .filter(|(status, _)| *status == 201)
                .map(|(_, body)| body)
                .collect();
            assert_eq!(winners.len(), 1, "grace {grace}: {results:?}");
            assert!(
                results
                    .iter()
                    .all(|(status, _)| *status == 201 || *status >= 400),
                "grace {grace}: {results:?}"
            );
            let winner = key_of(winners[0].clone());

            // No two live successors: exactly one key names the old one.
            let listed = api.list().await;
            let successors: Vec<&Value> = listed
                .iter()
                .filter(|k| k["rotated_from"] == old.id.as_str())
                .collect();
            assert_eq!(successors.len(), 1, "grace {grace}: {listed:?}");
            assert_eq!(successors[0]["key_id"], winner.id.as_str());

            assert_eq!(
                api.report_status(Method::GET, &winner.credential).await,
                StatusCode::OK
            );
            let old_status = api.report_status(Method::GET, &old.credential).await;
            let old_shown = api.get_key(&old.id).await;
            if grace == 0 {
                assert_eq!(old_status, StatusCode::UNAUTHORIZED);
                assert_eq!(old_shown["status"], "revoked");
            } else {
                assert_eq!(old_status, StatusCode::OK);
                assert_eq!(old_shown["status"], "active");
                assert!(old_shown["expires_at"].is_string());
            }
        }
    }
    // Two keys per race, nothing else.
    assert_eq!(api.list().await.len(), 12);
}

/// The losers of a rotation race get the contract's `409` (CONTRACT §8.3):
/// "already been rotated" while the old key is in its grace period, "not
/// active" once a grace-0 rotation revoked it.
async fn concurrent_rotation_losers_get_409(db: &TestDb) {
    let api = Api::start(db).await;
    for (grace, loser_detail) in [
        (60, "API key has already been rotated"),
        (0, "API key is not active"),
    ] {
        for round in 0..10 {
            let (_, results) = race_rotations(&api, grace, format!("race {grace} {round}")).await;
            assert_eq!(
                results.iter().filter(|(status, _)| *status == 201).count(),
                1,
                "grace {grace}: {results:?}"
            );
            for (status, body) in results.iter().filter(|(status, _)| *status != 201) {
                assert_eq!(*status, 409, "grace {grace}: {body}");
                assert_eq!(body["detail"], loser_detail, "grace {grace}");
            }
        }
    }
}

// ------------------------------------------------ revocation by the holder

async fn revocation_by_credential_answers_alike_and_revokes_only_valid_keys(db: &TestDb) {
    let api = Api::start(db).await;
    let target = api.create_ok(json!({"title": "leaked"})).await;
    let bystander = api.create_ok(json!({"title": "bystander"})).await;
    let other_account = Api {
        base: api.base.clone(),
        client: api.client.clone(),
        account: Uuid::new_v4(),
        validator: api.validator.clone(),
    };
    let foreign = other_account.create_ok(json!({"title": "foreign"})).await;
    for key in [&target, &bystander, &foreign] {
        assert_eq!(
            api.report_status(Method::GET, &key.credential).await,
            StatusCode::OK
        );
    }

    let public_key = target.credential.split(':').next().unwrap().to_owned();
    let mut answers = Vec::new();
    let mut answer = async |credential: &str| {
        let response = api
            .revoke_credential(json!({"credential": credential}))
            .await;
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE].clone();
        let body = response.bytes().await.unwrap();
        answers.push((credential.to_owned(), status, content_type, body));
    };
    for credential in [
        format!("{public_key}:sk_{}", "W".repeat(32)),
        format!("pk_{}:sk_{}", "U".repeat(32), "V".repeat(32)),
        "not a credential".to_owned(),
        String::new(),
        "pk_short:sk_short".to_owned(),
        format!("{}:extra", target.credential),
        target.credential.replacen("pk_", "PK_", 1),
        "x".repeat(5000),
    ] {
        answer(&credential).await;
    }
    // None of those revoked anything.
    for key in [&target, &bystander, &foreign] {
        assert_eq!(
            api.report_status(Method::GET, &key.credential).await,
            StatusCode::OK
        );
    }
    assert_eq!(api.get_key(&target.id).await["status"], "active");

    // The valid credential revokes its key: the next request is refused.
    answer(&target.credential).await;
    let response = api.report(Method::GET, &target.credential).await;
    assert_eq!(problem(response, 401).await["detail"], "Invalid API key");
    assert_eq!(api.get_key(&target.id).await["status"], "revoked");
    // Already revoked: the same answer.
    answer(&target.credential).await;
    // A key of another account is revoked the same way, without any login.
    answer(&foreign.credential).await;
    assert_eq!(
        api.report_status(Method::GET, &foreign.credential).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        other_account.get_key(&foreign.id).await["status"],
        "revoked"
    );

    // The bystander is untouched.
    assert_eq!(
        api.report_status(Method::POST, &bystander.credential).await,
        StatusCode::OK
    );
    assert_eq!(api.get_key(&bystander.id).await["status"], "active");

    let (_, status, content_type, body) = &answers[0];
    assert_eq!(*status, StatusCode::OK);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(body).unwrap(),
        json!({"message": "Revocation processed"})
    );
    for (credential, other_status, other_type, other_body) in &answers {
        assert_eq!(
            (other_status, other_type, other_body),
            (status, content_type, body),
            "answer for {:?}",
            credential.get(..20)
        );
    }
}

async fn revocation_by_credential_refuses_bad_bodies(db: &TestDb) {
    let api = Api::start(db).await;
    let key = api.create_ok(json!({"title": "kept"})).await;
    let url = api.url("/v1/api-keys/revocations");

    // Not JSON.
    let response = api
        .client
        .post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(format!("{{\"credential\": \"{}\"", key.credential))
        .send()
        .await
        .unwrap();
    problem(response, 400).await;
    // Wrong or missing content type, even with a valid credential inside.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = api
            .client
            .post(&url)
            .body(json!({"credential": key.credential}).to_string());
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        problem(request.send().await.unwrap(), 415).await;
    }
    // Missing, mistyped or extra fields.
    for (body, fields) in [
        (json!({}), vec!["credential"]),
        (
            json!({"token": key.credential}),
            vec!["credential", "token"],
        ),
        (json!({"credential": 1}), vec!["credential"]),
        (json!({"credential": null}), vec!["credential"]),
        (
            json!({"credential": key.credential, "reason": "leaked"}),
            vec!["reason"],
        ),
    ] {
        let response = api.revoke_credential(body.clone()).await;
        assert_eq!(invalid_fields(response).await, fields, "{body}");
    }
    let response = api.revoke_credential(json!([key.credential])).await;
    problem(response, 422).await;

    // None of it revoked the key, and no login was ever asked for.
    assert_eq!(
        api.report_status(Method::GET, &key.credential).await,
        StatusCode::OK
    );
    assert_eq!(api.get_key(&key.id).await["status"], "active");
    let response = api.client.get(&url).send().await.unwrap();
    problem(response, 405).await;
}

backend_tests!(
    guarded_routes_check_scopes,
    scopes_and_metadata_round_trip,
    invalid_scopes_and_metadata_are_422_and_create_nothing,
    metadata_with_nul_or_deep_nesting_is_422_on_every_backend,
    patch_changes_fields_and_takes_effect_at_once,
    rotation_without_grace_replaces_the_key_at_once,
    rotation_with_grace_keeps_both_keys_until_it_ends,
    rotation_keeps_the_lifetime_and_never_extends_the_old_key,
    rotation_copies_the_rate_limit,
    rotation_copies_a_patch_that_commits_first,
    rotation_refusals_change_nothing,
    concurrent_rotations_leave_exactly_one_successor,
    revocation_by_credential_answers_alike_and_revokes_only_valid_keys,
    revocation_by_credential_refuses_bad_bodies,
    concurrent_rotation_losers_get_409,
);
