//! The component schemas. `ApiKeyRateLimit`, `ApiKeyUsage` and
//! `ApiKeyUsageDay` derive from the crate's own types ([`RateLimit`],
//! [`KeyUsage`], [`DayUsage`]); the rest are mirrors of the JSON the routers
//! read and write, where the crate's types hold types of their own
//! (`ApiKeyInfo`'s scopes, metadata and status) or no type exists (request
//! bodies, problem documents). The tests check the document against real
//! responses.

// Never built: each type documents a JSON shape of the routers.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use utoipa::{OpenApi as _, ToSchema, openapi::Components};
use uuid::Uuid;

use crate::{
    manager::{DayUsage, KeyUsage},
    ratelimit::RateLimit,
};

/// Collects the schemas below into `components.schemas`.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    ApiKey,
    ApiKeyCreated,
    ApiKeyStatus,
    RateLimit,
    KeyUsage,
    DayUsage,
    ApiKeyMessage,
    ApiKeyCreateRequest,
    ApiKeyUpdateRequest,
    ApiKeyRotateRequest,
    ApiKeyRevokeRequest,
    ApiKeyRevocationRequest,
    ApiKeyProblem,
    ApiKeyValidationProblem,
    ApiKeyFieldError,
)))]
struct Schemas;

/// The component schemas, for the document's `components`.
pub(super) fn components() -> Components {
    Schemas::openapi().components.unwrap_or_default()
}

/// A key as its owner sees it: no secret, no hash. Every property is always
/// present.
#[derive(ToSchema)]
struct ApiKey {
    /// The key's id.
    key_id: Uuid,
    /// The public half of the credential, `pk_` and 32 letters and digits.
    #[schema(
        pattern = "^pk_[A-Za-z0-9]{32}$",
        example = "pk_4nM0Zq8pL2vT7xW1cR5yB9dK3hF6gJ0s"
    )]
    public_key: String,
    /// The title.
    #[schema(example = "CI deploys")]
    title: String,
    /// The description, as given.
    #[schema(required = true)]
    description: Option<String>,
    /// `active`, `revoked` or `expired` (an active key past `expires_at` reads
    /// `expired`).
    status: ApiKeyStatus,
    /// Expiry (RFC 3339, UTC), or `null`: never.
    #[schema(required = true)]
    expires_at: Option<DateTime<Utc>>,
    /// Last use as recorded (RFC 3339, UTC), or `null`.
    #[schema(required = true)]
    last_used_at: Option<DateTime<Utc>>,
    /// Creation time (RFC 3339, UTC); `null` only for a row another program
    /// wrote without one.
    #[schema(required = true)]
    created_at: Option<DateTime<Utc>>,
    /// The scopes the key grants, ascending, or `null`: unrestricted.
    #[schema(required = true, max_items = 32, inline)]
    scopes: Option<Vec<Scope>>,
    /// The key's metadata, as given, or `null`.
    #[schema(required = true, value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// The key this one replaced in a rotation, or `null`.
    #[schema(required = true)]
    rotated_from: Option<Uuid>,
    /// The key's own rate limit, or `null`.
    #[schema(required = true)]
    rate_limit: Option<RateLimit>,
    /// The networks the key may be used from (CIDRs, normalised), or `null`:
    /// any address.
    #[schema(required = true, min_items = 1, max_items = 64, example = json!(["203.0.113.0/24"]))]
    allowed_cidrs: Option<Vec<String>>,
}

/// A key just created (or a rotation's successor), with its secret: the
/// only time the secret is shown.
#[derive(ToSchema)]
struct ApiKeyCreated {
    #[serde(flatten)]
    key: ApiKey,
    /// The secret half of the credential `pk_…:sk_…`; it is not stored.
    #[schema(pattern = "^sk_[A-Za-z0-9]{32}$")]
    secret_key: String,
    /// The whole credential to hand out, shown this once as the secret is:
    /// the token `P_…` (key prefix, both bodies, base-62 CRC-32) when the host
    /// configured a key prefix, else `pk_…:sk_…`.
    #[schema(
        pattern = "^([a-z][a-z0-9]{1,15}_[A-Za-z0-9]{70}|pk_[A-Za-z0-9]{32}:sk_[A-Za-z0-9]{32})$"
    )]
    token: String,
}

/// A key's status.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
enum ApiKeyStatus {
    Active,
    Revoked,
    Expired,
}

/// A confirmation.
#[derive(ToSchema)]
struct ApiKeyMessage {
    #[schema(example = "API key revoked successfully")]
    message: String,
}

/// Body of `POST {prefix}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiKeyCreateRequest {
    /// 1–255 characters once trimmed (Unicode scalar values); stored
    /// trimmed.
    #[schema(min_length = 1, example = "CI deploys")]
    title: String,
    /// At most 4,096 characters, stored as given.
    #[schema(max_length = 4096)]
    description: Option<String>,
    /// Lifetime in days, or `null`/absent: never expires.
    #[schema(minimum = 1, maximum = 365)]
    expires_in_days: Option<i64>,
    /// 0–32 distinct scopes, each 1–64 characters of `[a-z0-9_.:-]`
    /// starting with a letter or digit; `null`/absent: unrestricted.
    #[schema(max_items = 32, inline)]
    scopes: Option<Vec<Scope>>,
    /// Any JSON object of at most 4,096 bytes (compact), nested at most 16
    /// levels deep (arrays count), with no U+0000 in any string, or `null`.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// The key's own rate limit, or `null`: none.
    rate_limit: Option<RateLimit>,
    /// 1–64 IPv4 or IPv6 CIDRs (a bare address means `/32` or `/128`), stored
    /// with host bits zeroed and duplicates dropped; `null`/absent: any
    /// address. `[]` is refused.
    #[schema(min_items = 1, max_items = 64, example = json!(["203.0.113.0/24", "2001:db8::/32"]))]
    allowed_cidrs: Option<Vec<String>>,
}

/// Body of `PATCH {prefix}/{key_id}`: any of these; `null` clears
/// `description`, `scopes`, `metadata`, `rate_limit` and `allowed_cidrs`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiKeyUpdateRequest {
    /// 1–255 characters once trimmed; not `null`.
    #[serde(default)]
    #[schema(min_length = 1)]
    title: String,
    /// At most 4,096 characters.
    #[schema(max_length = 4096)]
    description: Option<String>,
    /// As for creation.
    #[schema(max_items = 32, inline)]
    scopes: Option<Vec<Scope>>,
    /// As for creation.
    #[schema(value_type = Option<Object>)]
    metadata: Option<Map<String, Value>>,
    /// As for creation.
    rate_limit: Option<RateLimit>,
    /// As for creation; `null` allows any address.
    #[schema(min_items = 1, max_items = 64)]
    allowed_cidrs: Option<Vec<String>>,
}

/// Body of `POST {prefix}/{key_id}/rotate` (optional).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiKeyRotateRequest {
    /// How long the old key stays usable, in seconds (default 0: revoked at
    /// once).
    #[schema(minimum = 0, maximum = 604_800)]
    grace_period_seconds: Option<u32>,
}

/// Body of `PATCH {prefix}/{key_id}/revoke` (optional): `{}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiKeyRevokeRequest {}

/// Body of `POST {prefix}/revocations`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
struct ApiKeyRevocationRequest {
    /// The credential `pk_…:sk_…`, with or without ASCII whitespace around
    /// it and a `Bearer ` prefix (any string is accepted and answered
    /// alike).
    credential: String,
}

/// A scope, such as `reports:read`.
#[derive(ToSchema)]
#[schema(pattern = "^[a-z0-9][a-z0-9_.:-]{0,63}$")]
struct Scope(String);

/// An RFC 9457 problem document.
#[derive(ToSchema)]
struct ApiKeyProblem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    kind: String,
    /// The status's reason phrase.
    #[schema(example = "Not Found")]
    title: String,
    /// The HTTP status.
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong.
    #[schema(example = "API key not found")]
    detail: String,
    /// The fields at fault, when the problem is with given values (absent
    /// otherwise).
    #[schema(min_items = 1, nullable = false)]
    errors: Option<Vec<ApiKeyFieldError>>,
}

/// A `422` problem document: every field at fault at once.
#[derive(ToSchema)]
struct ApiKeyValidationProblem {
    /// Always `about:blank`.
    #[serde(rename = "type")]
    kind: String,
    /// `Unprocessable Entity`.
    title: String,
    /// `422`.
    #[schema(minimum = 422, maximum = 422)]
    status: u16,
    /// `Invalid request body`.
    detail: String,
    /// One entry per field at fault.
    #[schema(min_items = 1)]
    errors: Vec<ApiKeyFieldError>,
}

/// One field at fault.
#[derive(ToSchema)]
struct ApiKeyFieldError {
    /// The field's name (for an unknown field, its own name; for a nested
    /// value, its path such as `rate_limit.requests`; `body` for a body
    /// that is not an object).
    #[schema(example = "expires_in_days")]
    field: String,
    /// What is wrong with it.
    #[schema(example = "must be an integer from 1 to 365, or null")]
    message: String,
}
