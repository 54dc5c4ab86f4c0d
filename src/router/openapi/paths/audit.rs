//! `GET {prefix}/audit` and its schemas (CONTRACT §16.1).

// Never built: each type documents a JSON shape of the router.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use serde_json::Value;
use utoipa::{
    OpenApi as _, ToSchema,
    openapi::{
        Components, ObjectBuilder, Required, Type,
        path::{OperationBuilder, ParameterBuilder, ParameterIn},
    },
};
use uuid::Uuid;

use super::{guarded, json_response, operation, problem, schema_ref};

/// The audit page's schemas, merged into the document's `components`.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(ApiKeyAuditPage, ApiKeyAuditEntry)))]
struct Schemas;

/// The audit schemas, for the document's `components`.
pub(in crate::router::openapi) fn components() -> Components {
    Schemas::openapi().components.unwrap_or_default()
}

/// One page of the account's audit log, newest first.
#[derive(ToSchema)]
struct ApiKeyAuditPage {
    /// The entries, `id` descending.
    entries: Vec<ApiKeyAuditEntry>,
    /// The `before` of the next page, or `null` on the last one.
    #[schema(required = true)]
    next_before: Option<i64>,
}

/// One change to one key.
#[derive(ToSchema)]
struct ApiKeyAuditEntry {
    /// Increasing id.
    id: i64,
    /// When the change committed (RFC 3339, UTC).
    at: DateTime<Utc>,
    /// The key.
    key_id: Uuid,
    /// `created`, `imported`, `updated`, `rotated`, `revoked`,
    /// `revoked_by_holder`, `revoked_leaked` or `deleted`.
    action: String,
    /// Who made the change (`user:42`, `key:<key_id>`, `holder`, `github`,
    /// `cli`), or `null`.
    #[schema(required = true)]
    actor: Option<String>,
    /// The client's address, or `null`.
    #[schema(required = true)]
    source: Option<String>,
    /// `updated`: `{"fields": [...]}`; `rotated`: `{"successor_key_id",
    /// "grace_period_seconds"}`; `revoked_leaked`: `{"url"}`; else `null`.
    #[schema(required = true)]
    detail: Option<Value>,
}

fn query(name: &str, description: &str, schema: ObjectBuilder) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
}

/// `GET {prefix}/audit`.
pub(super) fn audit() -> OperationBuilder {
    let integer = || ObjectBuilder::new().schema_type(Type::Integer);
    guarded(operation(
        "listApiKeyAudit",
        "The account's audit log",
        "Every change to the account's keys, newest first, a page at a time: follow \
         `next_before` until it is `null`.",
    ))
    .parameter(query(
        "key_id",
        "Only this key's entries.",
        ObjectBuilder::new().schema_type(Type::String).format(Some(
            utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Uuid),
        )),
    ))
    .parameter(query(
        "before",
        "Only entries with an `id` below this one (the previous page's `next_before`).",
        integer().minimum(Some(1)),
    ))
    .parameter(query(
        "limit",
        "At most this many entries (default 100).",
        integer()
            .minimum(Some(1))
            .maximum(Some(500))
            .default(Some(100.into())),
    ))
    .response(
        "400",
        problem(
            "`key_id` is not a UUID, `before` not a positive integer, or `limit` not an \
             integer from 1 to 500, or one is given more than once (then `errors` names it).",
        ),
    )
    .response(
        "200",
        json_response("A page of entries.", schema_ref("ApiKeyAuditPage")),
    )
}
