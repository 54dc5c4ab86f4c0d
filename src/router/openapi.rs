//! The OpenAPI 3.1 document of the management and revocation routers.
//!
//! [`openapi`] describes [`ManagementRouter`](super::ManagementRouter) mounted
//! at a prefix (for example `/v1/api-keys`) and
//! [`RevocationRouter`](super::RevocationRouter) at `{prefix}/revocations`, as
//! the example server mounts them: every route with its request body (unknown
//! fields are refused, so every request schema has
//! `additionalProperties: false`), each status it can answer with its body
//! (errors are RFC 9457 problem documents, `application/problem+json`; a `422`
//! lists `errors: [{"field", "message"}]`), the `Location` header of a `201`, the
//! `Retry-After` header of a `503`, and the security the management routes
//! need.
//!
//! A request to a declared path with a method it does not declare answers `405`,
//! and an undeclared path under the prefix `404`; neither is listed per
//! operation.
//!
//! # Security
//!
//! The management routes trust the **host's own login**, which names the
//! account whose keys a request manages. The document describes it as the
//! example server does it: an HTTP bearer token (scheme [`HOST_LOGIN_SCHEME`])
//! together with an `X-Account-Id` header (scheme [`ACCOUNT_HEADER_SCHEME`]),
//! both required. A host whose login differs replaces these two entries of
//! `components.securitySchemes` (the names stay, so the operations' requirements
//! still point at them). The revocation route declares `security: []`: it needs
//! no login, even in a host document with a global requirement.
//!
//! The component schemas are named `ApiKey…` so that they do not collide with a
//! host's own schemas when merged.
//!
//! # Serving it, merged into the host's document
//!
//! [`OpenApi::merge`](utoipa::openapi::OpenApi::merge) adds the paths, schemas
//! and security schemes to the host's document (it keeps the host's `info` and
//! `openapi` version, and the host's entry wherever a name is taken twice):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Json, Router, routing::get};
//! use tower_api_keys::router::openapi::openapi;
//! use utoipa::openapi::{
//!     HttpMethod, InfoBuilder, OpenApiBuilder,
//!     path::{OperationBuilder, PathItem, PathsBuilder},
//!     response::Response,
//! };
//!
//! // The host's own document…
//! let mut document = OpenApiBuilder::new()
//!     .info(InfoBuilder::new().title("My service").version("2.1.0"))
//!     .paths(PathsBuilder::new().path(
//!         "/healthz",
//!         PathItem::new(
//!             HttpMethod::Get,
//!             OperationBuilder::new().response("200", Response::new("ok")),
//!         ),
//!     ))
//!     .build();
//! // …with the key-management routes where the host nests them.
//! document.merge(openapi("/v1/api-keys"));
//!
//! assert_eq!(document.info.title, "My service");
//! for path in [
//!     "/healthz",
//!     "/v1/api-keys",
//!     "/v1/api-keys/{key_id}",
//!     "/v1/api-keys/{key_id}/rotate",
//!     "/v1/api-keys/revocations",
//! ] {
//!     assert!(document.paths.paths.contains_key(path), "{path}");
//! }
//! let json = document.to_json()?;
//! assert!(json.contains(r#""openapi":"3.1.0""#));
//!
//! // Served without the host's login, e.g. as `GET /openapi.json`:
//! let app: Router = Router::new().route("/openapi.json", get(move || async move { Json(document) }));
//! # let _ = app;
//! # Ok(()) }
//! ```

use utoipa::{
    OpenApi as _,
    openapi::{
        ArrayBuilder, Components, ContentBuilder, HttpMethod, InfoBuilder, KnownFormat,
        ObjectBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required, ResponseBuilder, Schema,
        SchemaFormat, Type,
        header::HeaderBuilder,
        path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder},
        request_body::RequestBodyBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        tag::TagBuilder,
    },
};

use super::MAX_BODY_BYTES;
use crate::headers::PROBLEM_JSON;

/// Name of the security scheme for the host's login in
/// `components.securitySchemes` (documented as HTTP bearer).
pub const HOST_LOGIN_SCHEME: &str = "host_login";

/// Name of the security scheme for the `X-Account-Id` header in
/// `components.securitySchemes`: the account whose keys a request manages.
pub const ACCOUNT_HEADER_SCHEME: &str = "account_id";

const KEY_ID_NOT_UUID: &str = "`key_id` is not a UUID.";

/// The tag of every operation.
const TAG: &str = "api-keys";

/// The OpenAPI 3.1 document of [`ManagementRouter`](super::ManagementRouter)
/// nested at `prefix` (such as `"/v1/api-keys"`; a trailing `/` is ignored) and
/// [`RevocationRouter`](super::RevocationRouter) nested at
/// `{prefix}/revocations`.
///
/// ```
/// let document = tower_api_keys::router::openapi::openapi("/v1/api-keys");
/// let show = &document.paths.paths["/v1/api-keys/{key_id}"];
/// assert!(show.get.is_some() && show.patch.is_some() && show.delete.is_some());
/// ```
#[must_use]
pub fn openapi(prefix: &str) -> OpenApi {
    let base = prefix.trim_end_matches('/');
    let root = if base.is_empty() { "/" } else { base };
    let item = format!("{base}/{{key_id}}");
    let management = || SecurityRequirement::new(HOST_LOGIN_SCHEME, Vec::<String>::new());

    let operation = |id: &str, summary: &str, description: &str| {
        OperationBuilder::new()
            .tag(TAG)
            .operation_id(Some(id))
            .summary(Some(summary))
            .description(Some(description))
            .securities(Some([
                management().add(ACCOUNT_HEADER_SCHEME, Vec::<String>::new())
            ]))
    };
    // Every management route: the login first, then the store.
    let guarded = |op: OperationBuilder| {
        op.response(
            "401",
            problem(
                "No account: the host's login did not authenticate the request \
                 (`detail`: `Authentication required`).",
            ),
        )
        .response(
            "403",
            problem(
                "The request was authenticated by an API key, which may not manage keys \
                 unless the host allows it (`ManagementRouter::allow_api_key_auth`); \
                 where it does, the key needs the scope `api_keys:write` or no scope \
                 restriction (`Insufficient scope`), and can never create, rotate into or \
                 change a key with a scope it does not hold itself.",
            ),
        )
        .response("503", unavailable())
    };
    let with_key_id = |op: OperationBuilder| {
        op.parameter(key_id_parameter()).response(
            "404",
            problem("No such key in this account (`detail`: `API key not found`)."),
        )
    };
    let with_body =
        |op: OperationBuilder, schema: &str, required: bool, has_key_id: bool, invalid: &str| {
            let op = op
            .request_body(Some(request_body(schema, required)))
            .response("413", problem(&too_large()))
            .response(
                "415",
                problem(if required {
                    "The `Content-Type` is not JSON (`application/json` or `application/*+json`)."
                } else {
                    "A non-empty body whose `Content-Type` is not JSON."
                }),
            )
            .response("422", validation_problem(invalid));
            op.response(
                "400",
                problem(&match (has_key_id, required) {
                    (true, true) => "`key_id` is not a UUID, or the body is empty or not \
                                 well-formed JSON."
                        .to_owned(),
                    (true, false) => "`key_id` is not a UUID, or a non-empty body is not \
                                  well-formed JSON."
                        .to_owned(),
                    (false, _) => "The body is empty or not well-formed JSON.".to_owned(),
                }),
            )
        };

    let create = with_body(
        guarded(operation(
            "createApiKey",
            "Create a key",
            "Creates a key for the account. The response carries the secret, \
             shown this once and never again.",
        )),
        "ApiKeyCreateRequest",
        true,
        false,
        "Invalid body: a blank or over-long title, `expires_in_days` out of range, \
         invalid scopes, metadata or rate limit, a description over 4,096 characters, \
         an unknown field, or a body that is not an object.",
    )
    .response(
        "409",
        problem(
            "The account already has the most keys allowed (`detail`: `Too many API keys \
             for this account`); every key not deleted counts.",
        ),
    )
    .response("201", created("The key, with its secret (shown once)."));

    let list = guarded(operation(
        "listApiKeys",
        "List the account's keys",
        "Every key of the account, newest first; no secret, no hash.",
    ))
    .response(
        "200",
        json_response(
            "The account's keys, newest first.",
            ArrayBuilder::new().items(schema_ref("ApiKey")).build(),
        ),
    );

    let show = with_key_id(guarded(operation(
        "getApiKey",
        "Show a key",
        "One key of the account.",
    )))
    .response("400", problem(KEY_ID_NOT_UUID))
    .response("200", json_response("The key.", schema_ref("ApiKey")));

    let update = with_body(
        with_key_id(guarded(operation(
            "updateApiKey",
            "Change a key",
            "Changes any of title, description, scopes, metadata and rate limit; \
             `null` clears the last four. Takes effect like a revocation.",
        ))),
        "ApiKeyUpdateRequest",
        true,
        true,
        "Invalid body: as for creation; also `title: null`, or a field that cannot \
         change (such as `expires_in_days`).",
    )
    .response(
        "200",
        json_response("The key after the change.", schema_ref("ApiKey")),
    );

    let rotate = with_body(
        with_key_id(guarded(operation(
            "rotateApiKey",
            "Rotate a key",
            "Creates the key's successor (same title, description, scopes, metadata, \
             rate limit and lifetime) and retires the old key, at once or after a grace \
             period. No body, `{}` or `{\"grace_period_seconds\": n}`.",
        ))),
        "ApiKeyRotateRequest",
        false,
        true,
        "Invalid body: `grace_period_seconds` out of range, an unknown field, or a \
         body that is not an object.",
    )
    .response(
        "409",
        problem(
            "The key is revoked or expired (`API key is not active`), or already has a \
             successor (`API key has already been rotated`).",
        ),
    )
    .response(
        "201",
        created("The successor, with its secret (shown once) and `rotated_from`."),
    );

    let revoke = with_body(
        with_key_id(guarded(operation(
            "revokeApiKey",
            "Revoke a key",
            "Revokes the key; idempotent. No body or `{}`.",
        ))),
        "ApiKeyRevokeRequest",
        false,
        true,
        "The body has a field (each is unknown), or is not an object.",
    )
    .response(
        "200",
        json_response(
            "`{\"message\": \"API key revoked successfully\"}`",
            schema_ref("ApiKeyMessage"),
        ),
    );

    let delete = with_key_id(guarded(operation(
        "deleteApiKey",
        "Delete a key",
        "Deletes the key.",
    )))
    .response("400", problem(KEY_ID_NOT_UUID))
    .response(
        "200",
        json_response(
            "`{\"message\": \"API key deleted successfully\"}`",
            schema_ref("ApiKeyMessage"),
        ),
    );

    let usage = guarded(operation(
        "getApiKeyUsage",
        "A key's daily usage",
        "Requests the authentication layer let through with the key, per UTC day, \
         today first, days without requests included; counts appear once flushed.",
    ))
    .parameter(key_id_parameter())
    .parameter(
        ParameterBuilder::new()
            .name("days")
            .parameter_in(ParameterIn::Query)
            .required(Required::False)
            .description(Some("How many days, today included (default 30)."))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(90))
                    .default(Some(30.into())),
            )),
    )
    .response(
        "400",
        problem(
            "`key_id` is not a UUID, or `days` is not an integer from 1 to 90 or is given \
             more than once (then `errors` names `days`).",
        ),
    )
    .response(
        "404",
        problem("No such key in this account (`detail`: `API key not found`)."),
    )
    .response(
        "200",
        json_response("One entry per day, today first.", schema_ref("ApiKeyUsage")),
    );

    let revocation = OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some("revokeApiKeyByCredential"))
        .summary(Some("Revoke a key by its credential"))
        .description(Some(
            "For the key holder, with no login: revokes the key the credential names if \
             it is valid and active. The answer is the same whether or not it was \
             (RFC 7009 §2.2), so that the route cannot be used to test credentials.",
        ))
        .securities(Some(Vec::<SecurityRequirement>::new()))
        .request_body(Some(request_body("ApiKeyRevocationRequest", true)))
        .response(
            "200",
            json_response(
                "`{\"message\": \"Revocation processed\"}`, whatever the credential.",
                schema_ref("ApiKeyMessage"),
            ),
        )
        .response("400", problem("The body is empty or not well-formed JSON."))
        .response("413", problem(&too_large()))
        .response(
            "415",
            problem("The `Content-Type` is not JSON (`application/json` or `application/*+json`)."),
        )
        .response(
            "422",
            validation_problem(
                "`credential` missing or not a string, an unknown field, or a body that is \
                 not an object.",
            ),
        )
        .response("503", unavailable());

    let paths = PathsBuilder::new()
        .path(root, PathItem::new(HttpMethod::Post, create))
        .path(root, PathItem::new(HttpMethod::Get, list))
        .path(&item, PathItem::new(HttpMethod::Get, show))
        .path(&item, PathItem::new(HttpMethod::Patch, update))
        .path(&item, PathItem::new(HttpMethod::Delete, delete))
        .path(
            format!("{item}/rotate"),
            PathItem::new(HttpMethod::Post, rotate),
        )
        .path(
            format!("{item}/revoke"),
            PathItem::new(HttpMethod::Patch, revoke),
        )
        .path(
            format!("{item}/usage"),
            PathItem::new(HttpMethod::Get, usage),
        )
        .path(
            format!("{base}/revocations"),
            PathItem::new(HttpMethod::Post, revocation),
        );

    let mut components = Schemas::openapi().components.unwrap_or_default();
    add_security_schemes(&mut components);

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("API keys")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Key management (tower-api-keys `ManagementRouter`) and revocation by \
                     the key holder (`RevocationRouter`).",
                )),
        )
        .paths(paths)
        .components(Some(components))
        .tags(Some([TagBuilder::new()
            .name(TAG)
            .description(Some("API keys of the signed-in account"))
            .build()]))
        .build()
}

fn add_security_schemes(components: &mut Components) {
    components.add_security_scheme(
        HOST_LOGIN_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "The host's own login; the example server: `Authorization: Bearer \
                     <ADMIN_TOKEN>`. An API key is refused here (`403`) unless the host \
                     allows it.",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        ACCOUNT_HEADER_SCHEME,
        SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
            utoipa::openapi::security::ApiKeyValue::with_description(
                "X-Account-Id",
                "The account whose keys the request manages (a UUID), as the example \
                 server's login reads it.",
            ),
        )),
    );
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn too_large() -> String {
    format!("The body is longer than {MAX_BODY_BYTES} bytes (declared or streamed).")
}

fn key_id_parameter() -> ParameterBuilder {
    ParameterBuilder::new()
        .name("key_id")
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some("The key's id."))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
        ))
}

fn request_body(schema: &str, required: bool) -> utoipa::openapi::request_body::RequestBody {
    RequestBodyBuilder::new()
        .required(Some(if required {
            Required::True
        } else {
            Required::False
        }))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref(schema)))
                .build(),
        )
        .build()
}

fn json_response(description: &str, schema: impl Into<RefOr<Schema>>) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new().schema(Some(schema)).build(),
    )
}

fn problem_with(description: &str, schema: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(schema_ref(schema)))
            .build(),
    )
}

fn problem(description: &str) -> ResponseBuilder {
    problem_with(description, "ApiKeyProblem")
}

fn validation_problem(description: &str) -> ResponseBuilder {
    problem_with(description, "ApiKeyValidationProblem")
}

fn unavailable() -> ResponseBuilder {
    problem("The key store cannot be reached; retry later.").header(
        "Retry-After",
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("Seconds to wait before retrying."))
            .build(),
    )
}

fn created(description: &str) -> ResponseBuilder {
    json_response(description, schema_ref("ApiKeyCreated")).header(
        "Location",
        HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::Custom("uri-reference".into()))),
            )
            .description(Some("The new key's path, `{prefix}/{key_id}`."))
            .build(),
    )
}

/// The component schemas: mirrors of the JSON the routers read and write.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    schemas::ApiKey,
    schemas::ApiKeyCreated,
    schemas::ApiKeyStatus,
    schemas::ApiKeyRateLimit,
    schemas::ApiKeyUsage,
    schemas::ApiKeyUsageDay,
    schemas::ApiKeyMessage,
    schemas::ApiKeyCreateRequest,
    schemas::ApiKeyUpdateRequest,
    schemas::ApiKeyRotateRequest,
    schemas::ApiKeyRevokeRequest,
    schemas::ApiKeyRevocationRequest,
    schemas::ApiKeyProblem,
    schemas::ApiKeyValidationProblem,
    schemas::ApiKeyFieldError,
)))]
struct Schemas;

/// Never built: each type documents a JSON shape of the routers. Field types
/// mirror the crate's own (`ApiKeyInfo`, `KeyUsage`, …); the tests check the
/// document against real responses.
#[allow(dead_code)]
mod schemas {
    use chrono::{DateTime, NaiveDate, Utc};
    use serde_json::{Map, Value};
    use utoipa::ToSchema;
    use uuid::Uuid;

    /// A key as its owner sees it: no secret, no hash. Every property is always
    /// present.
    #[derive(ToSchema)]
    pub(super) struct ApiKey {
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
        rate_limit: Option<ApiKeyRateLimit>,
    }

    /// A key just created (or a rotation's successor), with its secret: the
    /// only time the secret is shown.
    #[derive(ToSchema)]
    pub(super) struct ApiKeyCreated {
        #[serde(flatten)]
        key: ApiKey,
        /// The secret half of the credential `pk_…:sk_…`; it is not stored.
        #[schema(pattern = "^sk_[A-Za-z0-9]{32}$")]
        secret_key: String,
    }

    /// A key's status.
    #[derive(ToSchema)]
    #[serde(rename_all = "lowercase")]
    pub(super) enum ApiKeyStatus {
        Active,
        Revoked,
        Expired,
    }

    /// `requests` per `period_seconds` (GCRA), bursts up to `requests`.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyRateLimit {
        #[schema(minimum = 1, maximum = 1_000_000)]
        requests: u32,
        #[schema(minimum = 1, maximum = 86_400)]
        period_seconds: u32,
    }

    /// A key's daily request counts.
    #[derive(ToSchema)]
    pub(super) struct ApiKeyUsage {
        /// The key.
        key_id: Uuid,
        /// One entry per UTC day, today first, days without requests included.
        days: Vec<ApiKeyUsageDay>,
    }

    /// One UTC day of a key's usage.
    #[derive(ToSchema)]
    pub(super) struct ApiKeyUsageDay {
        /// The UTC day, `YYYY-MM-DD`.
        date: NaiveDate,
        /// Requests let through with the key that day, as far as flushed.
        requests: u64,
    }

    /// A confirmation.
    #[derive(ToSchema)]
    pub(super) struct ApiKeyMessage {
        #[schema(example = "API key revoked successfully")]
        message: String,
    }

    /// Body of `POST {prefix}`.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyCreateRequest {
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
        rate_limit: Option<ApiKeyRateLimit>,
    }

    /// Body of `PATCH {prefix}/{key_id}`: any of these; `null` clears
    /// `description`, `scopes`, `metadata` and `rate_limit`.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyUpdateRequest {
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
        rate_limit: Option<ApiKeyRateLimit>,
    }

    /// Body of `POST {prefix}/{key_id}/rotate` (optional).
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyRotateRequest {
        /// How long the old key stays usable, in seconds (default 0: revoked at
        /// once).
        #[schema(minimum = 0, maximum = 604_800)]
        grace_period_seconds: Option<u32>,
    }

    /// Body of `PATCH {prefix}/{key_id}/revoke` (optional): `{}`.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyRevokeRequest {}

    /// Body of `POST {prefix}/revocations`.
    #[derive(ToSchema)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ApiKeyRevocationRequest {
        /// The credential `pk_…:sk_…`, with or without ASCII whitespace around
        /// it and a `Bearer ` prefix (any string is accepted and answered
        /// alike).
        credential: String,
    }

    /// A scope, such as `reports:read`.
    #[derive(ToSchema)]
    #[schema(pattern = "^[a-z0-9][a-z0-9_.:-]{0,63}$")]
    pub(super) struct Scope(String);

    /// An RFC 9457 problem document.
    #[derive(ToSchema)]
    pub(super) struct ApiKeyProblem {
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
    pub(super) struct ApiKeyValidationProblem {
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
    pub(super) struct ApiKeyFieldError {
        /// The field's name (for an unknown field, its own name; for a nested
        /// value, its path such as `rate_limit.requests`; `body` for a body
        /// that is not an object).
        #[schema(example = "expires_in_days")]
        field: String,
        /// What is wrong with it.
        #[schema(example = "must be an integer from 1 to 365, or null")]
        message: String,
    }
}
