//! The OpenAPI document of the management and revocation routers is true.
//!
//! A real HTTP server mounts the routers as the example server does (management
//! at `/v1/api-keys` behind a stand-in host login, revocations at
//! `/v1/api-keys/revocations` without it) over SQLite. For every operation the
//! document declares, the test sends a battery of requests (built from the
//! document: its paths, parameters, security schemes and request schemas) that
//! provoke each status a route can answer, and checks:
//! - every response's status is declared for that operation, with its content
//!   type, a body that validates against the declared schema (no undeclared
//!   property either) and the declared headers;
//! - every status the operation declares was provoked.
//!
//! Then an external validator (`openapi-spec-validator`, Python) checks the
//! document against the OpenAPI 3.1 specification.
#![cfg(feature = "openapi")]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    process::Command,
    time::Duration,
};

use axum::{
    Router,
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
};
use chrono::{DateTime, NaiveDate};
use serde_json::{Value, json};
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, KeyPair, NewApiKey,
    router::{MAX_BODY_BYTES, ManagementRouter, RevocationRouter, openapi::openapi},
    store::SeaOrmRepository,
};
use uuid::Uuid;

const PREFIX: &str = "/v1/api-keys";
/// The stand-in login's bearer token (the example server's `ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "openapi-test-admin-token";
const SCHEMAS: &str = "#/components/schemas/";

/// What each route answers (the router's code; CONTRACT §4, §5, §8, §9): the
/// document must declare exactly these, and the battery provokes each.
const ANSWERS: &[(&str, &str, &[u16])] = &[
    ("post", "", &[201, 400, 401, 403, 409, 413, 415, 422, 503]),
    ("get", "", &[200, 401, 403, 503]),
    ("get", "/{key_id}", &[200, 400, 401, 403, 404, 503]),
    (
        "patch",
        "/{key_id}",
        &[200, 400, 401, 403, 404, 413, 415, 422, 503],
    ),
    ("delete", "/{key_id}", &[200, 400, 401, 403, 404, 503]),
    (
        "post",
        "/{key_id}/rotate",
        &[201, 400, 401, 403, 404, 409, 413, 415, 422, 503],
    ),
    (
        "patch",
        "/{key_id}/revoke",
        &[200, 400, 401, 403, 404, 413, 415, 422, 503],
    ),
    ("get", "/{key_id}/usage", &[200, 400, 401, 403, 404, 503]),
    ("get", "/audit", &[200, 400, 401, 403, 503]),
    ("post", "/revocations", &[200, 400, 413, 415, 422, 503]),
];

// ---------------------------------------------------------------------------
// A JSON-schema check for the subset the document uses: $ref, allOf, oneOf,
// type (one or several), enum, required, properties, additionalProperties:
// false, items, min/maxItems, min/maxLength, minimum/maximum, and the formats
// uuid, date-time (RFC 3339, UTC) and date. `pattern` is not checked.
// ---------------------------------------------------------------------------

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix(SCHEMAS)
                .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
            let target = &doc["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling $ref {reference}");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// Every property an object schema declares, through `allOf`.
fn declared_properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut names: BTreeSet<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        names.extend(declared_properties(doc, part));
    }
    names
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        other => panic!("unknown type {other}"),
    }
}

/// Checks `value` against `schema`. `closed`: an object may carry no property
/// its schema does not declare (for responses: the document is complete).
fn validate(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    closed: bool,
    errors: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    let mut fail = |message: String| errors.push(format!("{at}: {message}"));
    if let Some(parts) = schema["allOf"].as_array() {
        let mut inner = Vec::new();
        for part in parts {
            validate(doc, part, value, at, false, &mut inner);
        }
        inner.into_iter().for_each(&mut fail);
        if closed && let Some(object) = value.as_object() {
            let declared = declared_properties(doc, schema);
            for name in object.keys().filter(|name| !declared.contains(*name)) {
                fail(format!("undeclared property {name:?}"));
            }
        }
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|option| {
                let mut inner = Vec::new();
                validate(doc, option, value, at, closed, &mut inner);
                inner.is_empty()
            })
            .count();
        if matching != 1 {
            fail(format!(
                "{value} matches {matching} of oneOf, not exactly 1"
            ));
        }
    }
    if let Some(ty) = schema.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(ty) => vec![ty.as_str()],
            Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
            other => panic!("bad type {other}"),
        };
        if !types.iter().any(|ty| has_type(value, ty)) {
            fail(format!("{value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        fail(format!("{value} is not one of {allowed:?}"));
    }
    match value {
        Value::String(text) => {
            let chars = text.chars().count() as u64;
            if let Some(min) = schema["minLength"].as_u64()
                && chars < min
            {
                fail(format!("shorter than {min}"));
            }
            if let Some(max) = schema["maxLength"].as_u64()
                && chars > max
            {
                fail(format!("longer than {max}"));
            }
            let ok = match schema["format"].as_str() {
                Some("uuid") => Uuid::parse_str(text).is_ok(),
                Some("date-time") => DateTime::parse_from_rfc3339(text)
                    .is_ok_and(|at| at.offset().local_minus_utc() == 0),
                Some("date") => NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
                _ => true,
            };
            if !ok {
                fail(format!("{text:?} is not a {}", schema["format"]));
            }
        }
        Value::Number(number) => {
            let n = number.as_f64().unwrap();
            if let Some(min) = schema["minimum"].as_f64()
                && n < min
            {
                fail(format!("{n} is below {min}"));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && n > max
            {
                fail(format!("{n} is above {max}"));
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema["minItems"].as_u64()
                && (items.len() as u64) < min
            {
                fail(format!("fewer than {min} items"));
            }
            if let Some(max) = schema["maxItems"].as_u64()
                && (items.len() as u64) > max
            {
                fail(format!("more than {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    validate(
                        doc,
                        item_schema,
                        item,
                        &format!("{at}[{i}]"),
                        closed,
                        errors,
                    );
                }
            }
        }
        Value::Object(object) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required property {name:?} missing"));
                }
            }
            if let Some(properties) = schema["properties"].as_object() {
                let refuses_others = schema["additionalProperties"] == json!(false) || closed;
                for (name, property) in object {
                    match properties.get(name) {
                        Some(property_schema) => validate(
                            doc,
                            property_schema,
                            property,
                            &format!("{at}.{name}"),
                            closed,
                            errors,
                        ),
                        None if refuses_others && schema.get("allOf").is_none() => {
                            errors.push(format!("{at}: undeclared property {name:?}"));
                        }
                        None => {}
                    }
                }
            } else if schema["additionalProperties"] == json!(false) && !object.is_empty() {
                errors.push(format!("{at}: no property allowed, got {object:?}"));
            }
        }
        _ => {}
    }
}

fn schema_errors(doc: &Value, schema: &Value, value: &Value, closed: bool) -> Vec<String> {
    let mut errors = Vec::new();
    validate(doc, schema, value, "$", closed, &mut errors);
    errors
}

#[test]
fn the_schema_check_catches_what_it_claims_to() {
    let doc = serde_json::to_value(openapi(PREFIX)).unwrap();
    let problem = json!({"$ref": "#/components/schemas/ApiKeyValidationProblem"});
    let good = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
        "detail": "Invalid request body", "errors": [{"field": "x", "message": "unknown field"}]});
    assert_eq!(
        schema_errors(&doc, &problem, &good, true),
        Vec::<String>::new()
    );
    for bad in [
        json!({"type": "about:blank", "title": "t", "status": 422, "detail": "d"}),
        json!({"type": "about:blank", "title": "t", "status": "422", "detail": "d", "errors": []}),
        json!({"type": "about:blank", "title": "t", "status": 422, "detail": "d", "errors": [], "extra": 1}),
    ] {
        assert!(
            !schema_errors(&doc, &problem, &bad, true).is_empty(),
            "{bad}"
        );
    }
    let usage = json!({"$ref": "#/components/schemas/ApiKeyUsage"});
    let id = Uuid::new_v4();
    assert!(
        schema_errors(
            &doc,
            &usage,
            &json!({"key_id": id, "days": [{"date": "2026-01-01", "requests": 0}]}),
            true
        )
        .is_empty()
    );
    for bad in [
        json!({"key_id": "nope", "days": []}),
        json!({"key_id": id, "days": [{"date": "2026-13-01", "requests": 0}]}),
        json!({"key_id": id, "days": [{"date": "2026-01-01", "requests": -1}]}),
    ] {
        assert!(!schema_errors(&doc, &usage, &bad, true).is_empty(), "{bad}");
    }
    let key = json!({"$ref": "#/components/schemas/ApiKeyCreated"});
    let mut created = json!({"key_id": id, "public_key": "pk_x", "secret_key": "sk_x", "token": "pk_x:sk_x", "title": "t",
        "description": null, "status": "active", "expires_at": "2026-01-01T00:00:00Z",
        "last_used_at": null, "created_at": "2025-01-01T00:00:00Z", "scopes": ["a"],
        "metadata": {"k": 1}, "rotated_from": null, "rate_limit": {"requests": 1, "period_seconds": 1},
        "allowed_cidrs": ["203.0.113.0/24"]});
    assert_eq!(
        schema_errors(&doc, &key, &created, true),
        Vec::<String>::new()
    );
    for (field, bad) in [
        ("status", json!("paused")),
        ("expires_at", json!("2026-01-01T02:00:00+02:00")),
        ("rate_limit", json!({"requests": 0, "period_seconds": 1})),
        ("allowed_cidrs", json!([])),
        ("allowed_cidrs", json!("203.0.113.0/24")),
        ("secret_key", Value::Null),
        ("token", Value::Null),
        ("unexpected", json!(1)),
    ] {
        let mut bad_key = created.clone();
        bad_key[field] = bad;
        assert!(
            !schema_errors(&doc, &key, &bad_key, true).is_empty(),
            "{field}"
        );
    }
    created.as_object_mut().unwrap().remove("rotated_from");
    assert!(!schema_errors(&doc, &key, &created, true).is_empty());
}

// ---------------------------------------------------------------------------
// The server under test.
// ---------------------------------------------------------------------------

/// Stand-in for the host's login, as the example server does it:
/// `Authorization: Bearer <ADMIN_TOKEN>` plus `X-Account-Id` (read by
/// `common::host_auth`). A request made with `X-API-Key` instead is
/// authenticated by that key, as a host's API-key layer would do, so that the
/// router's `403` can be reached.
async fn login(
    State(validator): State<ApiKeyValidator>,
    mut request: Request,
    next: Next,
) -> Response {
    let api_key = request
        .headers()
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    if let Some(credential) = api_key {
        if let Ok(key) = validator.validate(&credential).await {
            request.extensions_mut().insert(key.account_id());
            request.extensions_mut().insert(key);
        }
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get("authorization")
        .is_some_and(|value| value.as_bytes() == format!("Bearer {ADMIN_TOKEN}").as_bytes());
    if bearer {
        common::host_auth(request, next).await
    } else {
        next.run(request).await
    }
}

struct Api {
    doc: Value,
    base: String,
    client: reqwest::Client,
    manager: KeyManager,
    probe: common::Probe<SeaOrmRepository>,
    account: AccountId,
    other: AccountId,
    /// A credential of an active key of `account`, for the `403` requests.
    api_key: String,
}

/// One request, as the battery sends it.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Raw(&'static str, Vec<u8>),
    /// Sent in chunks, without `Content-Length`.
    Streamed(Vec<u8>),
}

#[derive(Clone, Copy, PartialEq)]
enum Login {
    /// As the operation's `security` says.
    Documented,
    Nobody,
    ApiKey,
}

struct Observed {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Api {
    fn operation(&self, path: &str, method: &str) -> &Value {
        &self.doc["paths"][path][method]
    }

    async fn key(&self, account: AccountId) -> String {
        self.manager
            .create(account, NewApiKey::new("battery"))
            .await
            .unwrap()
            .key
            .key_id
            .to_string()
    }

    /// Sends `method path` with `{key_id}` and the query filled in, the login
    /// the operation's `security` describes (or none, or an API key), and
    /// `body`.
    async fn send(
        &self,
        path: &str,
        method: &str,
        key_id: Option<&str>,
        query: Option<&str>,
        login: Login,
        body: Body,
    ) -> Observed {
        let mut url = format!(
            "{}{}",
            self.base,
            path.replace("{key_id}", key_id.unwrap_or_default())
        );
        if let Some(query) = query {
            url = format!("{url}?{query}");
        }
        let http_method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut request = self.client.request(http_method, url);
        match login {
            Login::Nobody => {}
            Login::ApiKey => request = request.header("x-api-key", &self.api_key),
            Login::Documented => {
                let requirements = self.operation(path, method).get("security");
                for scheme in requirements
                    .and_then(Value::as_array)
                    .and_then(|all| all.first())
                    .and_then(Value::as_object)
                    .into_iter()
                    .flat_map(|requirement| requirement.keys())
                {
                    let scheme = &self.doc["components"]["securitySchemes"][scheme];
                    match (scheme["type"].as_str(), scheme["in"].as_str()) {
                        (Some("http"), _) => {
                            assert_eq!(scheme["scheme"], "bearer");
                            request = request.bearer_auth(ADMIN_TOKEN);
                        }
                        (Some("apiKey"), Some("header")) => {
                            request = request
                                .header(scheme["name"].as_str().unwrap(), self.account.to_string());
                        }
                        other => panic!("unexpected security scheme {other:?}"),
                    }
                }
            }
        }
        request =
            match body {
                Body::None => request,
                Body::Json(value) => request
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&value).unwrap()),
                Body::Raw(content_type, bytes) => {
                    request.header("content-type", content_type).body(bytes)
                }
                Body::Streamed(bytes) => {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        bytes.chunks(8_192).map(|c| Ok(c.to_vec())).collect();
                    request.header("content-type", "application/json").body(
                        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
                    )
                }
            };
        let response = request.send().await.unwrap();
        Observed {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// The response is declared for the operation, and true to its
    /// declaration: content type, body schema, headers.
    fn check(&self, path: &str, method: &str, what: &str, observed: &Observed) -> Value {
        let context = format!("{method} {path} ({what}) → {}", observed.status);
        let declared = &self.operation(path, method)["responses"][observed.status.to_string()];
        assert!(
            declared.is_object(),
            "{context}: status not declared; body {}",
            String::from_utf8_lossy(&observed.body)
        );
        let content = declared["content"].as_object().expect("declared content");
        assert_eq!(content.len(), 1, "{context}: one media type");
        let (media_type, media) = content.iter().next().unwrap();
        let content_type = observed
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        assert_eq!(
            content_type.split(';').next().unwrap().trim(),
            media_type,
            "{context}: content type"
        );
        let body: Value = serde_json::from_slice(&observed.body)
            .unwrap_or_else(|err| panic!("{context}: body is not JSON: {err}"));
        let errors = schema_errors(&self.doc, &media["schema"], &body, true);
        assert!(
            errors.is_empty(),
            "{context}: body {body} does not match the declared schema: {errors:#?}"
        );
        if media_type == "application/problem+json" {
            assert_eq!(body["status"], observed.status, "{context}: problem status");
        }
        for (name, header) in declared["headers"].as_object().into_iter().flatten() {
            let value = observed
                .headers
                .get(name)
                .unwrap_or_else(|| panic!("{context}: declared header {name} missing"))
                .to_str()
                .unwrap();
            let value = match header["schema"]["type"].as_str() {
                Some("integer") => json!(
                    value
                        .parse::<i64>()
                        .unwrap_or_else(|_| panic!("{context}: {name}: {value:?}"))
                ),
                _ => json!(value),
            };
            let errors = schema_errors(&self.doc, &header["schema"], &value, true);
            assert!(errors.is_empty(), "{context}: header {name}: {errors:?}");
        }
        body
    }
}

/// The smallest body the request schema accepts: its required properties, each
/// a minimal value of its type.
fn minimal_instance(doc: &Value, schema: &Value) -> Value {
    let schema = resolve(doc, schema);
    let mut object = serde_json::Map::new();
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap();
        let property = resolve(doc, &schema["properties"][name]);
        let value = match property["type"].as_str() {
            Some("string") => json!("battery"),
            Some("integer") => json!(property["minimum"].as_i64().unwrap_or(0)),
            Some("object") => minimal_instance(doc, property),
            other => panic!("no minimal value for {other:?}"),
        };
        object.insert(name.to_owned(), value);
    }
    Value::Object(object)
}

/// A credential in the right shape that names no stored key (so that checking
/// it reads the store).
fn fresh_credential() -> String {
    format!(
        "pk_{}:sk_{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_declared_status_is_real_and_every_real_status_is_declared() {
    let db = common::sqlite().await;
    let probe = common::Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::new(probe.clone(), common::pepper());
    let manager = KeyManager::new(validator.clone());
    let app = Router::new()
        .nest(
            "/v1/api-keys/revocations",
            RevocationRouter::new(manager.clone()).build(),
        )
        .nest(
            PREFIX,
            ManagementRouter::new(manager.clone())
                .build()
                .layer(middleware::from_fn_with_state(validator.clone(), login)),
        );
    let addr = common::serve(app).await;
    let account = AccountId::new(Uuid::new_v4());
    let api_key = manager
        .create(account, NewApiKey::new("used as a login"))
        .await
        .unwrap()
        .credential();
    let api = Api {
        doc: serde_json::to_value(openapi(PREFIX)).unwrap(),
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        manager,
        probe,
        account,
        other: AccountId::new(Uuid::new_v4()),
        api_key,
    };
    assert_eq!(api.doc["openapi"], "3.1.0");

    // The document declares exactly the routes and statuses of `ANSWERS`.
    let mut declared = BTreeMap::new();
    for (path, item) in api.doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let statuses: BTreeSet<u16> = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|status| status.parse().unwrap())
                .collect();
            declared.insert((method.clone(), path.clone()), statuses);
        }
    }
    let expected: BTreeMap<_, BTreeSet<u16>> = ANSWERS
        .iter()
        .map(|(method, suffix, statuses)| {
            (
                ((*method).to_owned(), format!("{PREFIX}{suffix}")),
                statuses.iter().copied().collect(),
            )
        })
        .collect();
    assert_eq!(declared, expected, "declared routes and statuses");

    for ((method, path), statuses) in &declared {
        let observed = battery(&api, path, method).await;
        assert_eq!(
            &observed, statuses,
            "{method} {path}: statuses provoked by real requests vs declared"
        );
    }

    specifics(&api).await;
    db.cleanup().await;
}

/// Sends every kind of request that can go wrong (and the right one) to
/// `method path`, checks each response against the document, and returns the
/// statuses seen.
async fn battery(api: &Api, path: &str, method: &str) -> BTreeSet<u16> {
    let operation = api.operation(path, method);
    let with_key_id = path.contains("{key_id}");
    let request_body = operation.get("requestBody");
    let body_schema = request_body.map(|body| &body["content"]["application/json"]["schema"]);
    let body_required = request_body.is_some_and(|body| body["required"] == json!(true));
    // The documented, minimal body: the schema accepts it.
    let valid_body = body_schema.map(|schema| {
        let body = minimal_instance(&api.doc, schema);
        assert_eq!(
            schema_errors(&api.doc, schema, &body, false),
            Vec::<String>::new()
        );
        body
    });
    let fresh_body = || match &valid_body {
        Some(body) if body.get("credential").is_some() => {
            Body::Json(json!({"credential": fresh_credential()}))
        }
        Some(body) if body_required => Body::Json(body.clone()),
        _ => Body::None,
    };

    let mut seen = BTreeSet::new();
    let mut record = |what: &str, observed: Observed| {
        api.check(path, method, what, &observed);
        seen.insert(observed.status);
    };

    let own = || async { api.key(api.account).await };
    let send = |key_id: Option<String>, query: Option<&'static str>, login: Login, body: Body| async move {
        api.send(path, method, key_id.as_deref(), query, login, body)
            .await
    };
    let key_id = || async { if with_key_id { Some(own().await) } else { None } };

    record(
        "valid",
        send(key_id().await, None, Login::Documented, fresh_body()).await,
    );
    record(
        "no login",
        send(key_id().await, None, Login::Nobody, fresh_body()).await,
    );
    record(
        "authenticated by an API key",
        send(key_id().await, None, Login::ApiKey, fresh_body()).await,
    );

    let down = key_id().await;
    api.probe.set_failing(true);
    let observed = send(down, None, Login::Documented, fresh_body()).await;
    api.probe.set_failing(false);
    record("store down", observed);

    if with_key_id {
        record(
            "key_id not a UUID",
            send(
                Some("not-a-uuid".into()),
                None,
                Login::Documented,
                fresh_body(),
            )
            .await,
        );
        record(
            "no such key",
            send(
                Some(Uuid::new_v4().to_string()),
                None,
                Login::Documented,
                fresh_body(),
            )
            .await,
        );
        let theirs = api.key(api.other).await;
        record(
            "another account's key",
            send(Some(theirs), None, Login::Documented, fresh_body()).await,
        );
        let revoked = own().await;
        api.manager
            .revoke(api.account, revoked.parse().unwrap())
            .await
            .unwrap();
        record(
            "a revoked key",
            send(Some(revoked), None, Login::Documented, fresh_body()).await,
        );
        let rotated = own().await;
        api.manager
            .rotate(
                api.account,
                rotated.parse().unwrap(),
                Duration::from_secs(3_600),
            )
            .await
            .unwrap();
        record(
            "a key in its rotation's grace period",
            send(Some(rotated), None, Login::Documented, fresh_body()).await,
        );
    }

    if method == "post" && path == PREFIX {
        // An account at its key limit: filled up by an import, emptied after.
        use sea_orm::ConnectionTrait;
        let stored = api.manager.list(api.account).await.unwrap().len();
        let limit = usize::try_from(tower_api_keys::limits::DEFAULT_MAX_KEYS_PER_ACCOUNT).unwrap();
        let filler = (stored..limit)
            .map(|_| tower_api_keys::store::ApiKeyRecord {
                title: "at the limit".into(),
                ..common::row(
                    &KeyPair::generate().unwrap(),
                    api.account.into_inner(),
                    None,
                )
            })
            .collect();
        api.manager.import(filler).await.unwrap();
        record(
            "an account at its key limit",
            send(None, None, Login::Documented, fresh_body()).await,
        );
        api.probe
            .inner
            .connection()
            .execute_unprepared("DELETE FROM api_keys WHERE title = 'at the limit'")
            .await
            .unwrap();
    }

    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        if parameter["in"] != "query" {
            continue;
        }
        let name = parameter["name"].as_str().unwrap();
        let mut cases = vec![("query not an integer", "x".to_owned())];
        if parameter["schema"]["type"] == "string" {
            // A UUID parameter (the audit log's `key_id`).
            cases = vec![("query not a UUID", "x".to_owned())];
        } else {
            let min = parameter["schema"]["minimum"].as_i64().unwrap();
            cases.push(("query under its minimum", (min - 1).to_string()));
            if let Some(max) = parameter["schema"]["maximum"].as_i64() {
                cases.push(("query at its maximum", max.to_string()));
                cases.push(("query over its maximum", (max + 1).to_string()));
            }
        }
        for (what, value) in cases {
            let query: &'static str = Box::leak(format!("{name}={value}").into_boxed_str());
            record(
                what,
                send(key_id().await, Some(query), Login::Documented, Body::None).await,
            );
        }
    }

    if let (Some(schema), Some(valid)) = (body_schema, &valid_body) {
        let mut unknown = valid.clone();
        unknown["expire_in_days"] = json!(30);
        assert!(
            !schema_errors(&api.doc, schema, &unknown, false).is_empty(),
            "{method} {path}: the request schema accepts an unknown field"
        );
        let not_an_object = json!([valid]);
        assert!(!schema_errors(&api.doc, schema, &not_an_object, false).is_empty());
        let big = format!("{{\"title\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES)).into_bytes();
        for (what, body) in [
            ("an unknown field", Body::Json(unknown)),
            ("a body that is not an object", Body::Json(not_an_object)),
            (
                "malformed JSON",
                Body::Raw("application/json", b"{\"title\": ".to_vec()),
            ),
            (
                "an empty JSON body",
                Body::Raw("application/json", Vec::new()),
            ),
            ("no body", Body::None),
            (
                "a body that is not JSON",
                Body::Raw("text/plain", b"title=x".to_vec()),
            ),
            (
                "a declared length over the limit",
                Body::Raw("application/json", big.clone()),
            ),
            ("a streamed body over the limit", Body::Streamed(big)),
        ] {
            record(
                what,
                send(key_id().await, None, Login::Documented, body).await,
            );
        }
    }
    seen
}

/// What the battery does not pin down: headers' values, bodies' contents.
async fn specifics(api: &Api) {
    // Create: `Location` names the new key under the prefix.
    let created = api
        .send(
            PREFIX,
            "post",
            None,
            None,
            Login::Documented,
            Body::Json(
                json!({"title": "full", "description": "d", "expires_in_days": 30,
                "scopes": ["b:read", "a"], "metadata": {"team": "ci"},
                "rate_limit": {"requests": 5, "period_seconds": 60}}),
            ),
        )
        .await;
    assert_eq!(created.status, 201);
    let body = api.check(PREFIX, "post", "every field", &created);
    let key_id = body["key_id"].as_str().unwrap().to_owned();
    assert_eq!(created.headers["location"], format!("{PREFIX}/{key_id}"));
    assert_eq!(body["scopes"], json!(["a", "b:read"]));

    // Rotate: `Location` names the successor, which names its predecessor.
    let rotate = format!("{PREFIX}/{{key_id}}/rotate");
    let rotated = api
        .send(
            &rotate,
            "post",
            Some(&key_id),
            None,
            Login::Documented,
            Body::Json(json!({"grace_period_seconds": 60})),
        )
        .await;
    assert_eq!(rotated.status, 201);
    let successor = api.check(&rotate, "post", "with a grace period", &rotated);
    assert_eq!(successor["rotated_from"], key_id.as_str());
    assert_eq!(
        rotated.headers["location"],
        format!("{PREFIX}/{}", successor["key_id"].as_str().unwrap())
    );
    assert!(successor["expires_at"].is_string());

    // List: an array of keys, every field declared and present.
    let list = api
        .send(PREFIX, "get", None, None, Login::Documented, Body::None)
        .await;
    assert_eq!(list.status, 200);
    assert!(
        api.check(PREFIX, "get", "after create", &list)
            .as_array()
            .unwrap()
            .len()
            >= 2
    );

    // Usage: the declared default and the asked number of days.
    let usage = format!("{PREFIX}/{{key_id}}/usage");
    for (query, days) in [(None, 30), (Some("days=3"), 3)] {
        let observed = api
            .send(
                &usage,
                "get",
                Some(&key_id),
                query,
                Login::Documented,
                Body::None,
            )
            .await;
        assert_eq!(observed.status, 200);
        let body = api.check(&usage, "get", "days", &observed);
        assert_eq!(body["days"].as_array().unwrap().len(), days);
    }
    let default = &api.operation(&usage, "get")["parameters"][1]["schema"]["default"];
    assert_eq!(default, 30);

    // The audit log: a page of entries as declared, and a bad limit's 400.
    let audit = format!("{PREFIX}/audit");
    let observed = api
        .send(
            &audit,
            "get",
            None,
            Some("limit=2"),
            Login::Documented,
            Body::None,
        )
        .await;
    assert_eq!(observed.status, 200);
    let body = api.check(&audit, "get", "audit", &observed);
    assert_eq!(body["entries"].as_array().unwrap().len(), 2);
    assert!(body["next_before"].is_i64());
    let observed = api
        .send(
            &audit,
            "get",
            None,
            Some("limit=0"),
            Login::Documented,
            Body::None,
        )
        .await;
    assert_eq!(observed.status, 400);
    api.check(&audit, "get", "bad limit", &observed);

    // 422 names the unknown field.
    let unknown = api
        .send(
            PREFIX,
            "post",
            None,
            None,
            Login::Documented,
            Body::Json(json!({"title": "t", "expire_in_days": 30})),
        )
        .await;
    let problem = api.check(PREFIX, "post", "a typo", &unknown);
    assert_eq!(problem["errors"][0]["field"], "expire_in_days");

    // The revocation route needs no login and does revoke.
    let holder = api
        .manager
        .create(api.account, NewApiKey::new("holder"))
        .await
        .unwrap();
    let revocations = format!("{PREFIX}/revocations");
    assert_eq!(api.operation(&revocations, "post")["security"], json!([]));
    let observed = api
        .send(
            &revocations,
            "post",
            None,
            None,
            Login::Nobody,
            Body::Json(json!({"credential": holder.credential()})),
        )
        .await;
    api.check(&revocations, "post", "a valid credential", &observed);
    let after = api
        .manager
        .get(api.account, holder.key.key_id)
        .await
        .unwrap();
    assert_eq!(serde_json::to_value(after.status).unwrap(), "revoked");
}

// ---------------------------------------------------------------------------
// External validation.
// ---------------------------------------------------------------------------

#[test]
fn openapi_spec_validator_accepts_the_document() {
    let importable = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !importable {
        let message = "the Python module openapi_spec_validator is not importable: \
                       `pip install openapi-spec-validator` (or set OPENAPI_VALIDATOR_OPTIONAL=1 \
                       to skip this check)";
        if std::env::var("OPENAPI_VALIDATOR_OPTIONAL").as_deref() == Ok("1") {
            eprintln!("note: skipped: {message}");
            return;
        }
        panic!("{message}");
    }
    let dir = tempfile::tempdir().unwrap();
    for prefix in [PREFIX, "/", "/keys/"] {
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, openapi(prefix).to_pretty_json().unwrap()).unwrap();
        let output = Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "openapi-spec-validator refused the document for prefix {prefix:?}:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn the_prefix_places_every_path() {
    for (prefix, root) in [("/v1/api-keys/", "/v1/api-keys"), ("/", "/"), ("", "/")] {
        let doc = openapi(prefix);
        let paths: BTreeSet<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        let base = root.trim_end_matches('/');
        let expected: BTreeSet<String> = [
            root.to_owned(),
            format!("{base}/{{key_id}}"),
            format!("{base}/{{key_id}}/rotate"),
            format!("{base}/{{key_id}}/revoke"),
            format!("{base}/{{key_id}}/usage"),
            format!("{base}/audit"),
            format!("{base}/revocations"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            paths,
            expected.iter().map(String::as_str).collect(),
            "{prefix:?}"
        );
    }
}
