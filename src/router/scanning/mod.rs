//! GitHub's secret-scanning partner endpoint: GitHub reports tokens it found
//! in public places, signed with one of its [`ScanningKeys`]; every token that
//! is a key of this service, secret verified, is revoked.

mod keys;

pub use self::keys::{ScanningKeys, ScanningKeysError};

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;
use serde_json::Value;

use super::{
    body::{BodyError, bytes_up_to},
    error::ApiError,
};
use crate::{auth::problem::Problem, manager::KeyManager, manager::rules::FieldError};

/// Largest report accepted, in bytes (1 MiB); a longer one is refused with
/// `413`.
pub const MAX_REPORT_BYTES: usize = 1 << 20;

/// Most tokens one report may hold; more is refused with `413`.
pub const MAX_REPORT_ITEMS: usize = 1_000;

/// The header naming the key that signed a report.
const KEY_IDENTIFIER: &str = "github-public-key-identifier";
/// The header holding the report's signature (base64 of DER).
const SIGNATURE: &str = "github-public-key-signature";

/// Most item errors listed in one `400` answer.
const MAX_LISTED_ERRORS: usize = 20;

/// Builds GitHub's secret-scanning partner endpoint, `POST /`: a report
/// signed by GitHub (`Github-Public-Key-Identifier`,
/// `Github-Public-Key-Signature`: base64 of an ASN.1 DER ECDSA P-256/SHA-256
/// signature over the raw body) listing tokens found in public places,
/// `[{"token", "type", "url", "source"}, …]`.
///
/// Every token that is a key of this service, secret verified, is revoked
/// ([`KeyManager::revoke_leaked`]; this process at once, other replicas
/// through the change feed) and logged (`WARN`, with the key id, account id and
/// the report's `url`, never the token). The answer is `200` with one label
/// per token, in the report's order:
/// `[{"token_raw": "…", "token_type": "…", "label": "true_positive"}, …]`,
/// `"false_positive"` for any token that is not a key of this service
/// (unknown, wrong secret, malformed). A key already revoked whose secret
/// verifies is a `true_positive` again, so a repeated report is harmless.
///
/// Refusals are problem documents, and revoke nothing: a missing or unknown
/// key identifier or a bad signature `401`; a body over [`MAX_REPORT_BYTES`]
/// or with more than [`MAX_REPORT_ITEMS`] tokens `413`; a body that is not a
/// JSON array of such objects `400`; the key store unreachable `503` (GitHub
/// retries; what was revoked stays revoked).
///
/// Mount it where the host's own login does not apply: the signature is the
/// authentication. The example server mounts it at
/// `POST /v1/secret-scanning/github`:
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::Router;
/// use tower_api_keys::{
///     ApiKeyValidator, KeyManager, Pepper,
///     router::{ScanningKeys, SecretScanningRouter},
///     store::MemoryRepository,
/// };
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("github-keys.json");
/// # std::fs::write(&path, r#"{"public_keys": [{"key_identifier": "k1", "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4+mYWdFsKYzQjaMeKmp0hrWUvdZj\nT3AVwdT0JQ+HaXyUowvhxVsfseOnqGsQIUhkripZwMrJ+a/JcKNCt2nFxQ==\n-----END PUBLIC KEY-----", "is_current": true}]}"#)?;
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// // GitHub's keys, saved from https://api.github.com/meta/public_keys/secret_scanning
/// let keys = ScanningKeys::from_file(&path)?;
/// let app: Router = Router::new().nest(
///     "/v1/secret-scanning/github",
///     SecretScanningRouter::new(KeyManager::new(validator), keys).build(),
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SecretScanningRouter {
    manager: KeyManager,
    keys: ScanningKeys,
}

struct ScanState {
    manager: KeyManager,
    keys: ScanningKeys,
}

impl SecretScanningRouter {
    /// The endpoint over `manager`, trusting reports signed by any of `keys`.
    pub fn new(manager: KeyManager, keys: ScanningKeys) -> Self {
        Self { manager, keys }
    }

    /// The router, to be nested under a path such as
    /// `/v1/secret-scanning/github`.
    pub fn build<S>(self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/", post(report))
            .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "Not found") })
            .method_not_allowed_fallback(|| async {
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            })
            .with_state(Arc::new(ScanState {
                manager: self.manager,
                keys: self.keys,
            }))
    }
}

/// One token of a report.
struct Item {
    token: String,
    kind: String,
    url: Option<String>,
    source: Option<String>,
}

/// One token's answer.
#[derive(Serialize)]
struct Label {
    token_raw: String,
    token_type: String,
    label: &'static str,
}

async fn report(State(state): State<Arc<ScanState>>, request: Request<Body>) -> Response {
    let (parts, body) = request.into_parts();
    // The headers first: an unsigned request is not read further.
    let key = header(&parts.headers, KEY_IDENTIFIER).and_then(|id| state.keys.get(id));
    let Some(key) = key else {
        return unauthorized("Missing or unknown Github-Public-Key-Identifier");
    };
    let signature = parts
        .headers
        .get(SIGNATURE)
        .and_then(|value| keys::decode_signature(value.as_bytes()));
    let Some(signature) = signature else {
        return unauthorized("Missing or malformed Github-Public-Key-Signature");
    };
    let body = match bytes_up_to(&parts.headers, body, MAX_REPORT_BYTES).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body must be at most {MAX_REPORT_BYTES} bytes"),
            )
            .into_response();
        }
        Err(BodyError::Unreadable) => return ApiError::MalformedJson.into_response(),
    };
    if !keys::verifies(key, &body, &signature) {
        return unauthorized("Invalid Github-Public-Key-Signature");
    }
    let items = match items(&body) {
        Ok(items) => items,
        Err(refusal) => return refusal.into_response(),
    };
    let mut labels = Vec::with_capacity(items.len());
    let source = super::audit::client_address(&state.manager, &parts);
    for item in items {
        let change = crate::audit::ChangeRecord {
            actor: Some(crate::audit::Actor::github()),
            source,
            reason: crate::audit::ChangeReason::Leaked {
                url: item.url.clone(),
            },
        };
        let manager = state.manager.clone().acting(change);
        let leaked = match manager.revoke_leaked(&item.token).await {
            Ok(leaked) => leaked,
            Err(err) => return ApiError::Manager(err).into_response(),
        };
        if let Some(leaked) = leaked {
            tracing::warn!(
                key_id = %leaked.key_id,
                account_id = %leaked.account_id,
                newly_revoked = leaked.newly_revoked,
                url = ?item.url.as_deref().unwrap_or(""),
                source = ?item.source.as_deref().unwrap_or(""),
                "GitHub secret scanning reported an API key leaked; it is revoked"
            );
        }
        labels.push(Label {
            token_raw: item.token,
            token_type: item.kind,
            label: if leaked.is_some() {
                "true_positive"
            } else {
                "false_positive"
            },
        });
    }
    Json(labels).into_response()
}

/// A header's value as text, if present and visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn unauthorized(detail: &'static str) -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, detail).into_response()
}

/// The report's tokens: a JSON array of at most [`MAX_REPORT_ITEMS`] objects
/// with string `token` and `type`, and `url` and `source` strings when present
/// (other members are ignored, as GitHub may add some). Anything else is the
/// problem document to answer with.
fn items(body: &[u8]) -> Result<Vec<Item>, Problem> {
    let Ok(Value::Array(values)) = serde_json::from_slice::<Value>(body) else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Body must be a JSON array of {\"token\", \"type\", \"url\", \"source\"} objects",
        ));
    };
    if values.len() > MAX_REPORT_ITEMS {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("A report may hold at most {MAX_REPORT_ITEMS} tokens"),
        ));
    }
    let mut items = Vec::with_capacity(values.len());
    let mut errors = Vec::new();
    for (index, value) in values.into_iter().enumerate() {
        match item(value) {
            Ok(item) => items.push(item),
            Err(problems) => errors.extend(
                problems
                    .into_iter()
                    .map(|(field, message)| FieldError::new(format!("[{index}].{field}"), message)),
            ),
        }
    }
    if errors.is_empty() {
        return Ok(items);
    }
    errors.truncate(MAX_LISTED_ERRORS);
    Err(Problem::new(StatusCode::BAD_REQUEST, "Invalid report item").with_errors(errors))
}

/// One item of a report, or what is wrong with it (field, message).
fn item(value: Value) -> Result<Item, Vec<(&'static str, &'static str)>> {
    let Value::Object(mut object) = value else {
        return Err(vec![("item", "must be a JSON object")]);
    };
    let mut errors = Vec::new();
    let mut required = |name: &'static str| match object.remove(name) {
        Some(Value::String(text)) => Some(text),
        _ => {
            errors.push((name, "must be a string"));
            None
        }
    };
    let (token, kind) = (required("token"), required("type"));
    let mut optional = |name: &'static str| match object.remove(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text),
        Some(_) => {
            errors.push((name, "must be a string"));
            None
        }
    };
    let (url, source) = (optional("url"), optional("source"));
    match (token, kind) {
        (Some(token), Some(kind)) if errors.is_empty() => Ok(Item {
            token,
            kind,
            url,
            source,
        }),
        _ => Err(errors),
    }
}
