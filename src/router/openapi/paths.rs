//! The paths of the document: every operation of the management and
//! revocation routers, with the statuses each can answer.

use utoipa::openapi::{
    ArrayBuilder, ContentBuilder, HttpMethod, KnownFormat, ObjectBuilder, Paths, Ref, RefOr,
    Required, ResponseBuilder, Schema, SchemaFormat, Type,
    header::HeaderBuilder,
    path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder},
    request_body::{RequestBody, RequestBodyBuilder},
    security::SecurityRequirement,
};

use super::{ACCOUNT_HEADER_SCHEME, HOST_LOGIN_SCHEME, TAG};
use crate::{headers::PROBLEM_JSON, router::MAX_BODY_BYTES};

pub(super) mod audit;

const KEY_ID_NOT_UUID: &str = "`key_id` is not a UUID.";

/// Every route, with the management router nested at `prefix` (a trailing
/// `/` is ignored) and the revocation router at `{prefix}/revocations`.
pub(super) fn paths(prefix: &str) -> Paths {
    let base = prefix.trim_end_matches('/');
    let root = if base.is_empty() { "/" } else { base };
    let item = format!("{base}/{{key_id}}");
    PathsBuilder::new()
        .path(root, PathItem::new(HttpMethod::Post, create()))
        .path(root, PathItem::new(HttpMethod::Get, list()))
        .path(&item, PathItem::new(HttpMethod::Get, show()))
        .path(&item, PathItem::new(HttpMethod::Patch, update()))
        .path(&item, PathItem::new(HttpMethod::Delete, delete()))
        .path(
            format!("{item}/rotate"),
            PathItem::new(HttpMethod::Post, rotate()),
        )
        .path(
            format!("{item}/revoke"),
            PathItem::new(HttpMethod::Patch, revoke()),
        )
        .path(
            format!("{item}/usage"),
            PathItem::new(HttpMethod::Get, usage()),
        )
        .path(
            format!("{base}/audit"),
            PathItem::new(HttpMethod::Get, audit::audit()),
        )
        .path(
            format!("{base}/revocations"),
            PathItem::new(HttpMethod::Post, revocation()),
        )
        .build()
}

/// A management operation: tagged, and secured by the host's login and the
/// account header.
fn operation(id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .securities(Some([SecurityRequirement::new(
            HOST_LOGIN_SCHEME,
            Vec::<String>::new(),
        )
        .add(ACCOUNT_HEADER_SCHEME, Vec::<String>::new())]))
}

/// Every management route: the login first, then the store.
fn guarded(op: OperationBuilder) -> OperationBuilder {
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
}

/// A route on one key: its `key_id` parameter, and `404` for another
/// account's or no key.
fn with_key_id(op: OperationBuilder) -> OperationBuilder {
    op.parameter(key_id_parameter()).response(
        "404",
        problem("No such key in this account (`detail`: `API key not found`)."),
    )
}

/// A route that reads a JSON body of `schema` (`required` or not), and the
/// statuses a body can cause; `invalid` describes its `422`.
fn with_body(
    op: OperationBuilder,
    schema: &str,
    required: bool,
    has_key_id: bool,
    invalid: &str,
) -> OperationBuilder {
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
        problem(match (has_key_id, required) {
            (true, true) => {
                "`key_id` is not a UUID, or the body is empty or not \
                             well-formed JSON."
            }
            (true, false) => {
                "`key_id` is not a UUID, or a non-empty body is not \
                              well-formed JSON."
            }
            (false, _) => "The body is empty or not well-formed JSON.",
        }),
    )
}

/// `POST {prefix}`.
fn create() -> OperationBuilder {
    with_body(
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
         invalid scopes, metadata, rate limit or `allowed_cidrs`, a description over 4,096 characters, \
         an unknown field, or a body that is not an object.",
    )
    .response(
        "409",
        problem(
            "The account already has the most keys allowed (`detail`: `Too many API keys \
             for this account`); every key not deleted counts.",
        ),
    )
    .response("201", created("The key, with its secret (shown once)."))
}

/// `GET {prefix}`.
fn list() -> OperationBuilder {
    guarded(operation(
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
    )
}

/// `GET {prefix}/{key_id}`.
fn show() -> OperationBuilder {
    with_key_id(guarded(operation(
        "getApiKey",
        "Show a key",
        "One key of the account.",
    )))
    .response("400", problem(KEY_ID_NOT_UUID))
    .response("200", json_response("The key.", schema_ref("ApiKey")))
}

/// `PATCH {prefix}/{key_id}`.
fn update() -> OperationBuilder {
    with_body(
        with_key_id(guarded(operation(
            "updateApiKey",
            "Change a key",
            "Changes any of title, description, scopes, metadata, rate limit and \
             allowed_cidrs; `null` clears all but the title. Takes effect like a revocation.",
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
    )
}

/// `POST {prefix}/{key_id}/rotate`.
fn rotate() -> OperationBuilder {
    with_body(
        with_key_id(guarded(operation(
            "rotateApiKey",
            "Rotate a key",
            "Creates the key's successor (same title, description, scopes, metadata, \
             rate limit, allowlist and lifetime) and retires the old key, at once or after a grace \
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
    )
}

/// `PATCH {prefix}/{key_id}/revoke`.
fn revoke() -> OperationBuilder {
    with_body(
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
    )
}

/// `DELETE {prefix}/{key_id}`.
fn delete() -> OperationBuilder {
    with_key_id(guarded(operation(
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
    )
}

/// `GET {prefix}/{key_id}/usage`.
fn usage() -> OperationBuilder {
    guarded(operation(
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
    )
}

/// `POST {prefix}/revocations`, for the key holder.
fn revocation() -> OperationBuilder {
    OperationBuilder::new()
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
        .response("503", unavailable())
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

fn request_body(schema: &str, required: bool) -> RequestBody {
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
