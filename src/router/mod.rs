//! The key-management HTTP API, as an axum [`Router`] the host mounts.
//!
//! The owning account comes from an [`AccountId`] request extension that the
//! **host's own authentication** inserts (a session, a JWT, …); without it every
//! route answers `401`. By default a request authenticated by an API key is
//! refused with `403`, so that a leaked key cannot mint more keys; see
//! [`ManagementRouter::allow_api_key_auth`].
//!
//! | method and path | success |
//! |---|---|
//! | `POST /` | `201` + `Location`, the key with its secret (shown once) |
//! | `GET /` | `200`, the account's keys, newest first |
//! | `GET /{key_id}` | `200`, one key |
//! | `PATCH /{key_id}` | `200`, the key after the change (title, description, scopes, metadata, rate limit, allowed_cidrs) |
//! | `POST /{key_id}/rotate` | `201` + `Location`, the successor with its secret (shown once) |
//! | `PATCH /{key_id}/revoke` | `200 {"message":"API key revoked successfully"}` |
//! | `DELETE /{key_id}` | `200 {"message":"API key deleted successfully"}` |
//! | `GET /audit?key_id=&before=&limit=` | `200 {"entries":[…],"next_before"}`: the account's audit log, newest first (`limit` 1–500, default 100) |
//! | `GET /{key_id}/usage?days=N` | `200 {"key_id","days":[{"date":"YYYY-MM-DD","requests":n},…]}`: N (1–90, default 30) UTC days, today first, zeros included; counts appear once flushed |
//!
//! [`RevocationRouter`] is the one route for key holders, `POST /` with
//! `{"credential": "pk_…:sk_…"}`: the host mounts it *without* its own login.
//! `SecretScanningRouter` (feature `secret-scanning`) is GitHub's
//! secret-scanning partner endpoint, `POST /` with a signed leak report: it
//! too is mounted without the host's login (GitHub's signature authenticates).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::Router;
//! use tower_api_keys::{ApiKeyValidator, KeyManager, Pepper, router::ManagementRouter, store::MemoryRepository};
//!
//! let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
//! let app: Router = Router::new().nest(
//!     "/v1/api-keys",
//!     ManagementRouter::new(KeyManager::new(validator)).build(),
//!     // .layer(your own authentication, inserting an `AccountId`)
//! );
//! # Ok(()) }
//! ```

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRequestParts, OriginalUri, Path, RawQuery, Request, State},
    http::{StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, patch, post},
};
use serde_json::{Value, json};

use self::body::{body_object, json_body};
use self::error::ApiError;
use crate::{
    auth::problem::Problem,
    identity::{AccountId, ApiKeyId, AuthenticatedKey},
    manager::rules::FieldError,
    manager::{CreatedKey, KeyManager},
};

mod audit;
mod body;
mod error;
mod fields;
#[cfg(feature = "openapi")]
#[cfg_attr(docsrs, doc(cfg(feature = "openapi")))]
pub mod openapi;
#[cfg(feature = "secret-scanning")]
mod scanning;

#[cfg(feature = "secret-scanning")]
#[cfg_attr(docsrs, doc(cfg(feature = "secret-scanning")))]
pub use self::scanning::{
    MAX_REPORT_BYTES, MAX_REPORT_ITEMS, ScanningKeys, ScanningKeysError, SecretScanningRouter,
};

/// Largest accepted request body, in bytes.
pub const MAX_BODY_BYTES: usize = 65_536;

/// The scope an API key needs to manage keys, when the host lets API keys
/// do that ([`ManagementRouter::allow_api_key_auth`]); an unrestricted key
/// needs none.
pub const MANAGEMENT_SCOPE: &str = "api_keys:write";

/// Builds the key-management [`Router`] (the routes are in the [module
/// docs](self)).
///
/// Nest it under a prefix, behind the host's own authentication, which must
/// put the signed-in [`AccountId`] into the request's extensions; here a fixed
/// account stands in for it:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Extension, Router, body::Body, http::{Request, StatusCode}};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::{AccountId, ApiKeyValidator, KeyManager, Pepper, router::ManagementRouter, store::MemoryRepository};
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// let signed_in = AccountId::new(uuid::Uuid::new_v4()); // from your session, JWT, …
/// let keys = ManagementRouter::new(KeyManager::new(validator)).build();
/// let app: Router = Router::new().nest("/v1/api-keys", keys.layer(Extension(signed_in)));
///
/// let create = Request::post("/v1/api-keys")
///     .header("content-type", "application/json")
///     .body(Body::from(r#"{"title": "CI deploys", "scopes": ["reports:read"]}"#))?;
/// let response = app.clone().oneshot(create).await?;
/// assert_eq!(response.status(), StatusCode::CREATED);
/// let created: serde_json::Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 65_536).await?)?;
/// assert!(created["secret_key"].as_str().is_some_and(|secret| secret.starts_with("sk_"))); // shown this once
///
/// let list = app.oneshot(Request::get("/v1/api-keys").body(Body::empty())?).await?;
/// assert_eq!(list.status(), StatusCode::OK);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ManagementRouter {
    manager: KeyManager,
    allow_api_key_auth: bool,
}

#[derive(Clone)]
struct RouterState {
    manager: KeyManager,
    allow_api_key_auth: bool,
}

impl ManagementRouter {
    /// Routes over `manager`.
    pub fn new(manager: KeyManager) -> Self {
        Self {
            manager,
            allow_api_key_auth: false,
        }
    }

    /// Accepts requests authenticated by an API key (their
    /// [`AuthenticatedKey`] extension present) as management requests for the
    /// key's account. Default: **off** (`403`), so that a leaked key cannot
    /// create more keys or revoke its owner's others.
    ///
    /// When on, the acting key needs the scope [`MANAGEMENT_SCOPE`]
    /// (`api_keys:write`) or no scope restriction at all (else `403`
    /// `"Insufficient scope"`), and a key with scopes can never create,
    /// rotate into or `PATCH` a key with a scope it does not hold itself, nor
    /// make an unrestricted one (`403`): it manages keys through
    /// [`KeyManager::with_scope_ceiling`] with its own scopes.
    pub fn allow_api_key_auth(mut self, allow: bool) -> Self {
        self.allow_api_key_auth = allow;
        self
    }

    /// The router, to be nested under a prefix such as `/v1/api-keys`.
    pub fn build<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/", get(list).post(create))
            .route("/audit", get(audit::audit))
            .route("/{key_id}", get(show).patch(update).delete(remove))
            .route("/{key_id}/rotate", post(rotate))
            .route("/{key_id}/revoke", patch(revoke))
            .route("/{key_id}/usage", get(usage))
            .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "Not found") })
            .method_not_allowed_fallback(|| async {
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            })
            .with_state(RouterState {
                manager: self.manager,
                allow_api_key_auth: self.allow_api_key_auth,
            })
    }
}

/// Builds the router for key holders: `POST /` with `{"credential": "…"}`
/// revokes the key that credential names (DECISIONS.md, "Key policy in detail": revocation by
/// the holder), and answers the same `200 {"message":"Revocation processed"}`
/// whether or not the credential was valid, so that it cannot be used to test
/// keys.
///
/// Mount it where the host's login does not apply (the example server:
/// `/v1/api-keys/revocations`); it needs no account.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::{Request, StatusCode}};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::{
///     AccountId, ApiKeyValidator, KeyManager, NewApiKey, Pepper, router::RevocationRouter,
///     store::MemoryRepository,
/// };
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// let manager = KeyManager::new(validator.clone());
/// let app: Router = Router::new()
///     .nest("/v1/api-keys/revocations", RevocationRouter::new(manager.clone()).build());
///
/// // A key that leaked: whoever holds it can revoke it.
/// let leaked = manager.create(AccountId::new(uuid::Uuid::new_v4()), NewApiKey::new("laptop")).await?;
/// let request = Request::post("/v1/api-keys/revocations")
///     .header("content-type", "application/json")
///     .body(Body::from(serde_json::json!({"credential": leaked.credential()}).to_string()))?;
/// assert_eq!(app.oneshot(request).await?.status(), StatusCode::OK);
/// assert!(validator.validate(&leaked.credential()).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RevocationRouter {
    manager: KeyManager,
}

impl RevocationRouter {
    /// The route over `manager`.
    pub fn new(manager: KeyManager) -> Self {
        Self { manager }
    }

    /// The router, to be nested under a prefix such as
    /// `/v1/api-keys/revocations`.
    pub fn build<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/", post(revoke_by_credential))
            .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "Not found") })
            .method_not_allowed_fallback(|| async {
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            })
            .with_state(self.manager)
    }
}

/// The account whose keys a request manages, from the host's authentication,
/// and the manager that acts for the request: limited to the acting key's
/// scopes when an API key authenticated it. Extracted before anything else,
/// so that an unauthenticated request gets `401` whatever else is wrong with
/// it.
struct Owner {
    account: AccountId,
    manager: KeyManager,
}

impl FromRequestParts<RouterState> for Owner {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RouterState,
    ) -> Result<Self, Self::Rejection> {
        let change = audit::change_of(&state.manager, parts);
        let mut manager = state.manager.clone().acting(change);
        if let Some(key) = parts.extensions.get::<AuthenticatedKey>() {
            if !state.allow_api_key_auth {
                return Err(ApiError::ApiKeyNotAllowed);
            }
            if let Some(scopes) = key.scopes() {
                if !scopes.contains(MANAGEMENT_SCOPE) {
                    return Err(ApiError::ManagementScopeMissing);
                }
                manager = manager.with_scope_ceiling(scopes.clone());
            }
        }
        let account = parts
            .extensions
            .get::<AccountId>()
            .copied()
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Self { account, manager })
    }
}

/// The `{key_id}` path segment. Anything but a UUID (including a segment that
/// is not UTF-8 once percent-decoded) is a `400` problem document.
struct KeyIdParam(ApiKeyId);

impl<S: Send + Sync> FromRequestParts<S> for KeyIdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadKeyId)?;
        raw.parse().map(Self).map_err(|_| ApiError::BadKeyId)
    }
}

async fn create(
    Owner { account, manager }: Owner,
    OriginalUri(uri): OriginalUri,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let body = json_body(request, true)
        .await?
        .ok_or(ApiError::MalformedJson)?;
    let new = fields::new_key(body_object(body)?)?;
    let created = manager.create(account, new).await?;
    let location = format!(
        "{}/{}",
        uri.path().trim_end_matches('/'),
        created.key.key_id
    );
    Ok(created_response(created, location))
}

/// `201` with `Location` and the key with its secret: the only time the
/// secret is shown.
fn created_response(created: CreatedKey, location: String) -> Response {
    let mut body = match serde_json::to_value(&created.key) {
        Ok(Value::Object(body)) => body,
        _ => serde_json::Map::new(),
    };
    body.insert(
        "secret_key".to_owned(),
        Value::String(created.secret_key.expose().to_owned()),
    );
    body.insert(
        "token".to_owned(),
        Value::String(created.token.expose().to_owned()),
    );
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response()
}

async fn list(Owner { account, manager }: Owner) -> Result<Response, ApiError> {
    Ok(Json(manager.list(account).await?).into_response())
}

async fn show(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
) -> Result<Response, ApiError> {
    Ok(Json(manager.get(account, key_id).await?).into_response())
}

async fn revoke(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    if let Some(body) = json_body(request, false).await? {
        let unknown: Vec<_> = body_object(body)?
            .into_iter()
            .map(|(field, _)| FieldError::new(field, "unknown field"))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError::Invalid(unknown));
        }
    }
    manager.revoke(account, key_id).await?;
    Ok(Json(json!({"message": "API key revoked successfully"})).into_response())
}

async fn update(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let body = json_body(request, true)
        .await?
        .ok_or(ApiError::MalformedJson)?;
    let changes = fields::key_changes(body_object(body)?)?;
    Ok(Json(manager.update(account, key_id, changes).await?).into_response())
}

async fn rotate(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
    OriginalUri(uri): OriginalUri,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let body = json_body(request, false)
        .await?
        .map(body_object)
        .transpose()?;
    let grace = fields::grace_period(body)?;
    let created = manager.rotate(account, key_id, grace).await?;
    // `…/{old key_id}/rotate` → `…/{new key_id}`.
    let path = uri.path().trim_end_matches('/');
    let base = path
        .strip_suffix("/rotate")
        .and_then(|rest| rest.rsplit_once('/'))
        .map_or("", |(base, _)| base);
    let location = format!("{base}/{}", created.key.key_id);
    Ok(created_response(created, location))
}

async fn revoke_by_credential(
    State(manager): State<KeyManager>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let source = manager
        .validator()
        .client_address(request.extensions(), request.headers());
    let manager = manager.acting(crate::audit::ChangeRecord {
        source,
        ..Default::default()
    });
    let body = json_body(request, true)
        .await?
        .ok_or(ApiError::MalformedJson)?;
    let credential = fields::credential(body_object(body)?)?;
    manager.revoke_by_credential(&credential).await?;
    Ok(Json(json!({"message": "Revocation processed"})).into_response())
}

/// `GET /{key_id}/usage?days=N`: N from 1 to 90, 30 if absent; any other
/// value, or `days` given twice, is a `400` problem document naming the field.
/// Other query parameters are ignored.
async fn usage(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    const DEFAULT_DAYS: u32 = 30;
    let bad_days = || {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "days must be an integer from 1 to 90",
        )
        .with_errors(vec![FieldError::new(
            "days",
            "must be an integer from 1 to 90, given once",
        )])
        .into_response()
    };
    let mut days = None;
    for pair in query.as_deref().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "days" {
            continue;
        }
        let parsed = value
            .bytes()
            .all(|byte| byte.is_ascii_digit())
            .then(|| value.parse::<u32>().ok())
            .flatten()
            .filter(|days| (1..=90).contains(days));
        match (days, parsed) {
            (None, Some(parsed)) => days = Some(parsed),
            // Out of range, not a number, or given twice.
            _ => return Ok(bad_days()),
        }
    }
    let days = days.unwrap_or(DEFAULT_DAYS);
    Ok(Json(manager.usage(account, key_id, days).await?).into_response())
}

async fn remove(
    Owner { account, manager }: Owner,
    KeyIdParam(key_id): KeyIdParam,
) -> Result<Response, ApiError> {
    manager.delete(account, key_id).await?;
    Ok(Json(json!({"message": "API key deleted successfully"})).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    use uuid::Uuid;

    use super::*;
    use crate::{ApiKeyValidator, NewApiKey, store::MemoryRepository, testing::fixtures::pepper};

    fn app() -> Router {
        let validator = ApiKeyValidator::new(MemoryRepository::new(), pepper());
        Router::new().nest(
            "/v1/api-keys",
            ManagementRouter::new(KeyManager::new(validator)).build(),
        )
    }

    fn post(body: &'static str) -> Request<Body> {
        Request::post("/v1/api-keys")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap()
    }

    async fn json(response: Response) -> Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn create_answers_201_with_the_location_under_the_mount_point() {
        let mut request = post(r#"{"title": "ci"}"#);
        request
            .extensions_mut()
            .insert(AccountId::new(Uuid::new_v4()));
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let location = response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let body = json(response).await;
        assert_eq!(
            location,
            format!("/v1/api-keys/{}", body["key_id"].as_str().unwrap())
        );
        assert!(body["secret_key"].as_str().unwrap().starts_with("sk_"));
        // Without a key prefix, the token is the whole credential.
        assert_eq!(
            body["token"].as_str().unwrap(),
            format!(
                "{}:{}",
                body["public_key"].as_str().unwrap(),
                body["secret_key"].as_str().unwrap()
            )
        );
    }

    #[tokio::test]
    async fn without_the_hosts_account_every_route_is_401() {
        for request in [
            post(r#"{"title": "ci"}"#),
            Request::get("/v1/api-keys").body(Body::empty()).unwrap(),
            Request::delete(format!("/v1/api-keys/{}", Uuid::new_v4()))
                .body(Body::empty())
                .unwrap(),
        ] {
            let response = app().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(json(response).await["detail"], "Authentication required");
        }
    }

    #[tokio::test]
    async fn a_request_authenticated_by_an_api_key_is_403_unless_allowed() {
        let validator = ApiKeyValidator::new(MemoryRepository::new(), pepper());
        let manager = KeyManager::new(validator);
        let account = AccountId::new(Uuid::new_v4());
        let created = manager.create(account, NewApiKey::new("k")).await.unwrap();
        let key = crate::AuthenticatedKey::new(
            account,
            created.key.key_id,
            created.key.public_key.as_str(),
            None,
            None,
            None,
        );
        for (allowed, status) in [(false, StatusCode::FORBIDDEN), (true, StatusCode::OK)] {
            let app = ManagementRouter::new(manager.clone())
                .allow_api_key_auth(allowed)
                .build::<()>();
            let mut request = Request::get("/").body(Body::empty()).unwrap();
            request.extensions_mut().insert(account);
            request.extensions_mut().insert(key.clone());
            assert_eq!(app.oneshot(request).await.unwrap().status(), status);
        }
    }
}
