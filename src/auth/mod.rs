//! The authentication middleware: [`ApiKeyAuthLayer`] → [`ApiKeyAuth`] →
//! [`ResponseFuture`], the scope guard ([`RequireScopesLayer`]) that runs
//! inside it, the response body both answer with, the axum extractors and the
//! gRPC answer to a refusal.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use tower_api_keys::{AccountId, ApiKeyAuthLayer, ApiKeyValidator, Pepper, store::SeaOrmRepository};
//!
//! let repository = SeaOrmRepository::connect("sqlite::memory:").await?;
//! let validator = ApiKeyValidator::new(repository, Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
//!
//! let app: Router = Router::new()
//!     .route("/v1/whoami", get(|account: AccountId| async move { account.to_string() }))
//!     .layer(ApiKeyAuthLayer::new(validator));
//! # Ok(()) }
//! ```

mod body;
#[cfg(feature = "axum")]
mod extract;
mod future;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
mod header;
mod layer;
mod outcome;
#[cfg(feature = "axum")]
pub(crate) mod problem;
mod scope;
mod service;

#[cfg(feature = "axum")]
pub use self::extract::MissingAuthentication;
pub use self::{
    body::ResponseBody,
    future::ResponseFuture,
    header::{extract_credential, extract_credential_with_prefix},
    layer::ApiKeyAuthLayer,
    scope::{RequireScopes, RequireScopesLayer, ScopeFuture},
    service::ApiKeyAuth,
};
