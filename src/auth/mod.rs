//! The authentication middleware: [`ApiKeyAuthLayer`] → [`ApiKeyAuth`] →
//! [`ResponseFuture`].
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

mod future;
mod header;
mod layer;
mod service;

pub use self::{
    future::ResponseFuture, header::extract_credential, layer::ApiKeyAuthLayer, service::ApiKeyAuth,
};
