//! What the management API records about who acts, and the audit log's
//! route: the client's address ([`client_address`]), the change a request
//! makes ([`change_of`]) and `GET /audit`.

use std::net::IpAddr;

use axum::{
    Json,
    extract::RawQuery,
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};

use super::{Owner, error::ApiError};
use crate::{
    audit::{Actor, ChangeRecord, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT},
    auth::problem::Problem,
    identity::{ApiKeyId, AuthenticatedKey},
    manager::{KeyManager, rules::FieldError},
};

/// The client's address, when known, as a key's allowlist sees it
/// ([`ApiKeyValidator::client_address`](crate::ApiKeyValidator::client_address):
/// the peer, or behind a trusted proxy the forwarded client). The audit log's
/// `source`.
pub(crate) fn client_address(manager: &KeyManager, parts: &Parts) -> Option<IpAddr> {
    manager
        .validator()
        .client_address(&parts.extensions, &parts.headers)
}

/// The change a management request makes, as the audit log records it:
/// `key:<key_id>` when an API key acts, else the host's [`Actor`], if any;
/// from [`client_address`].
pub(super) fn change_of(manager: &KeyManager, parts: &Parts) -> ChangeRecord {
    let actor = match parts.extensions.get::<AuthenticatedKey>() {
        Some(key) => Some(Actor::key(key.key_id().into_inner())),
        None => parts.extensions.get::<Actor>().cloned(),
    };
    ChangeRecord {
        actor,
        source: client_address(manager, parts),
        ..ChangeRecord::default()
    }
}

/// A `400` problem document naming the query parameter `field`.
fn bad(field: &'static str, message: &'static str) -> Response {
    Problem::new(StatusCode::BAD_REQUEST, message)
        .with_errors(vec![FieldError::new(field, message)])
        .into_response()
}

/// `GET /audit?key_id=&before=&limit=`: the account's audit rows, newest
/// first. `key_id` a UUID, `before` a positive integer (an `id`), `limit`
/// 1–500 (default 100), each at most once; otherwise `400` naming the
/// parameter. Other parameters are ignored.
pub(super) async fn audit(
    Owner { account, manager }: Owner,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (mut key_id, mut before, mut limit) = (None, None, None);
    for pair in query.as_deref().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "key_id" => match (key_id, value.parse::<ApiKeyId>()) {
                (None, Ok(id)) => key_id = Some(id),
                _ => return Ok(bad("key_id", "key_id must be a UUID, given once")),
            },
            "before" => match (before, number(value).filter(|id| *id > 0)) {
                (None, Some(id)) => before = Some(id),
                _ => {
                    return Ok(bad(
                        "before",
                        "before must be a positive integer (an entry id), given once",
                    ));
                }
            },
            "limit" => {
                let parsed = number(value)
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n));
                match (limit, parsed) {
                    (None, Some(n)) => limit = Some(n),
                    _ => {
                        return Ok(bad(
                            "limit",
                            "limit must be an integer from 1 to 500, given once",
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let limit = limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    let page = manager.audit(account, key_id, before, limit).await?;
    Ok(Json(page).into_response())
}

/// Plain ASCII digits as an `i64` (no sign, no spaces).
fn number(text: &str) -> Option<i64> {
    (!text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
        .then(|| text.parse().ok())
        .flatten()
}
