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

mod paths;
mod schemas;

use utoipa::openapi::{
    Components, InfoBuilder, OpenApi, OpenApiBuilder,
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    tag::TagBuilder,
};

/// Name of the security scheme for the host's login in
/// `components.securitySchemes` (documented as HTTP bearer).
pub const HOST_LOGIN_SCHEME: &str = "host_login";

/// Name of the security scheme for the `X-Account-Id` header in
/// `components.securitySchemes`: the account whose keys a request manages.
pub const ACCOUNT_HEADER_SCHEME: &str = "account_id";

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
    let mut components = schemas::components();
    components
        .schemas
        .extend(paths::audit::components().schemas);
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
        .paths(paths::paths(prefix))
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
