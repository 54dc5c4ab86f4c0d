//! API-key authentication and key management for any Tower stack: axum,
//! tonic, warp or hyper, in one `.layer(...)`.
//!
//! [`ApiKeyAuthLayer`] reads the credential `pk_…:sk_…` from `X-API-Key` (or
//! `Authorization: Bearer`), checks it through an in-process cache in front of
//! a key store, and attaches the owning [`AccountId`], the [`ApiKeyId`] and an
//! [`AuthenticatedKey`] to the request; a refusal is an RFC 9457 problem
//! response (`401`, or `503` while the store is down and nothing usable is
//! cached). [`KeyManager`] and the management router issue, rotate and revoke
//! the keys.
//!
//! # Adding the layer to an axum app
//!
//! One [`ApiKeyValidator`] (the pepper, the cache, the store) is shared by the
//! layer and the key manager, so that revoking a key evicts it from the very
//! cache the layer reads. Handlers take the identity types as extractors.
//!
//! ```
//! use axum::{Router, body::Body, http::{Request, StatusCode}, routing::get};
//! use tower::ServiceExt as _; // `oneshot`, to call the router without a server
//! use tower_api_keys::{
//!     AccountId, ApiKeyAuthLayer, ApiKeyValidator, AuthenticatedKey, KeyManager, NewApiKey,
//!     Pepper, store::SeaOrmRepository,
//! };
//!
//! async fn whoami(key: AuthenticatedKey) -> String {
//!     format!("account {}, key {}", key.account_id(), key.key_id())
//! }
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The key store; `connect` runs the crate's migrations. (`sqlite://api-keys.db`,
//!     // `postgres://…` and `mysql://…` work the same, the latter two with their features.)
//!     let repository = SeaOrmRepository::connect("sqlite::memory:").await?;
//!     // The server-side HMAC key of the stored secrets (16+ bytes): keep it out of the database.
//!     let pepper = Pepper::try_from("a-server-side-secret-of-16+-bytes")?;
//!     let validator = ApiKeyValidator::new(repository, pepper);
//!
//!     let app: Router = Router::new()
//!         .route("/v1/whoami", get(whoami))
//!         .layer(ApiKeyAuthLayer::new(validator.clone()));
//!
//!     // Issue a key, as the management router does over HTTP.
//!     let account = AccountId::new(uuid::Uuid::new_v4());
//!     let created = KeyManager::new(validator.clone())
//!         .create(account, NewApiKey::new("docs example"))
//!         .await?;
//!
//!     let request = Request::get("/v1/whoami")
//!         .header("x-api-key", created.credential()) // `pk_…:sk_…`
//!         .body(Body::empty())?;
//!     let response = app.clone().oneshot(request).await?;
//!     assert_eq!(response.status(), StatusCode::OK);
//!     let body = axum::body::to_bytes(response.into_body(), 1024).await?;
//!     assert!(body.starts_with(format!("account {account}").as_bytes()));
//!
//!     // No key: `401`, a problem document.
//!     let response = app.oneshot(Request::get("/v1/whoami").body(Body::empty())?).await?;
//!     assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
//!
//!     // A real server would now serve the app:
//!     //     let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//!     //     axum::serve(listener, app).await?;
//!     // and, once it stops, write the `last_used_at` values still in memory:
//!     validator.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! Per-route scope checks go *inside* the layer ([`RequireScopesLayer`]); the
//! key-management API is [`router::ManagementRouter`], mounted behind the
//! host's own login. The complete service, with configuration from the
//! environment, metrics and graceful shutdown, is `examples/server.rs`
//! (`cargo run --example server`).
//!
//! # Other Tower stacks
//!
//! [`ApiKeyAuthLayer`] is a plain [`tower_layer::Layer`]: anything that serves a
//! `tower::Service<http::Request<B>>` can put it in front of its handlers.
//! Without axum, handlers read the identity from the request's extensions.
//!
//! **tonic** (feature `tonic`):
#![cfg_attr(
    feature = "tonic",
    doc = "[`GrpcRejection`](grpc::GrpcRejection) turns refusals into gRPC statuses"
)]
#![cfg_attr(
    not(feature = "tonic"),
    doc = "`grpc::GrpcRejection` turns refusals into gRPC statuses"
)]
//! (`UNAUTHENTICATED`, `UNAVAILABLE`); clients send the credential as
//! `x-api-key` metadata. The full server: `examples/tonic.rs`.
//!
//! ```
//! # #[cfg(feature = "tonic")]
//! # mod recipe {
//! use tonic::transport::{Server, server::TcpIncoming};
//! use tower_api_keys::{AccountId, ApiKeyAuthLayer, ApiKeyValidator, grpc::GrpcRejection};
//!
//! async fn serve(validator: ApiKeyValidator, incoming: TcpIncoming) -> Result<(), tonic::transport::Error> {
//!     let (_reporter, health) = tonic_health::server::health_reporter();
//!     Server::builder()
//!         .layer(ApiKeyAuthLayer::new(validator).with_rejection(GrpcRejection))
//!         .add_service(health) // every service added here is behind the layer
//!         .serve_with_incoming(incoming)
//!         .await
//! }
//!
//! // In a service method:
//! fn account<T>(request: &tonic::Request<T>) -> Option<AccountId> {
//!     request.extensions().get::<AccountId>().copied()
//! }
//! # }
//! ```
//!
//! **warp**: turn the filters into a service with `warp::service`, wrap it, and
//! serve it with hyper; filters read the account with `warp::ext::get`. The full
//! server: `examples/warp.rs`.
//!
//! ```
//! use hyper_util::{rt::{TokioExecutor, TokioIo}, server::conn::auto, service::TowerToHyperService};
//! use tower_api_keys::{AccountId, ApiKeyAuthLayer, ApiKeyValidator};
//! use warp::Filter;
//!
//! async fn serve(validator: ApiKeyValidator, listener: tokio::net::TcpListener) -> std::io::Result<()> {
//!     let whoami = warp::path!("v1" / "whoami")
//!         .and(warp::ext::get::<AccountId>())
//!         .map(|account: AccountId| account.to_string());
//!     let service = tower::ServiceBuilder::new()
//!         .layer(ApiKeyAuthLayer::new(validator))
//!         .service(warp::service(whoami));
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         let service = TowerToHyperService::new(service.clone());
//!         tokio::spawn(async move {
//!             let _ = auto::Builder::new(TokioExecutor::new())
//!                 .serve_connection(TokioIo::new(stream), service)
//!                 .await;
//!         });
//!     }
//! }
//! ```
//!
//! **hyper** alone: wrap a `service_fn` and hand it to hyper through
//! `hyper_util::service::TowerToHyperService`. The full server, with graceful
//! shutdown: `examples/hyper.rs`.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::{Request, Response, body::Incoming, server::conn::http1};
//! use hyper_util::{rt::TokioIo, service::TowerToHyperService};
//! use tower_api_keys::{AccountId, ApiKeyAuthLayer, ApiKeyValidator};
//!
//! async fn whoami(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let account = request.extensions().get::<AccountId>().copied(); // set by the layer
//!     Ok(Response::new(Full::from(format!("{account:?}"))))
//! }
//!
//! async fn serve(validator: ApiKeyValidator, listener: tokio::net::TcpListener) -> std::io::Result<()> {
//!     let service = tower::ServiceBuilder::new()
//!         .layer(ApiKeyAuthLayer::new(validator))
//!         .service_fn(whoami);
//!     loop {
//!         let (stream, _) = listener.accept().await?;
//!         let service = TowerToHyperService::new(service.clone());
//!         tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
//!     }
//! }
//! ```
//!
//! # Where things are
//!
//! The types every host uses sit at the crate root; parts a host plugs in or
//! swaps out keep modules of their own.
//!
//! - **The request path**: [`ApiKeyAuthLayer`] → [`ApiKeyAuth`] →
//!   [`ResponseFuture`]; [`ApiKeyValidator`] and its [`ValidatorBuilder`] (cache
//!   sizes and lifetimes, store timeout, stale-if-error, rate limiter, change
//!   feed); refusals as [`Rejection`], written by a [`RejectionHandler`]
//!   ([`ProblemJson`] by default).
//! - **Issuing and retiring keys** from host code: [`KeyManager`] (create with
//!   [`NewApiKey`], list, get, update, rotate with a grace period, revoke,
//!   delete, [`usage`](KeyManager::usage), [`import`](KeyManager::import),
//!   pepper status and retirement); the secret of a [`CreatedKey`] is shown once.
//! - **Over HTTP** (feature `axum`): [`router::ManagementRouter`] (the
//!   account's own keys, behind the host's login) and
//!   [`router::RevocationRouter`] (revocation by whoever holds a credential).
//! - **Scopes and metadata**: [`Scopes`] and [`Metadata`] on a key
//!   ([`NewApiKey::with_scopes`], [`NewApiKey::with_metadata`]), read from
//!   [`AuthenticatedKey`]; checked per route by [`RequireScopesLayer`].
//! - **Rate limits**: [`RateLimit`] per key ([`NewApiKey::with_rate_limit`]) or
//!   by default ([`ValidatorBuilder::with_default_rate_limit`]), counted by a
//!   [`RateLimiter`] in process or in Redis (feature `redis`); see [`ratelimit`].
//! - **The key store**: [`store::ApiKeyRepository`], implemented by
//!   [`store::SeaOrmRepository`] (SQLite, PostgreSQL, MySQL/MariaDB) and
//!   [`store::MemoryRepository`]; the schema in [`migration`] and [`entity`].
//! - **The change feed**, which carries a change made by any replica (or plain
//!   SQL) to every replica's cache: [`feed`],
//!   [`ValidatorBuilder::with_change_feed`], [`ApiKeyValidator::change_feed`].
//! - **Secrets and peppers**: [`hash`] (why HMAC-SHA256 and not a password
//!   hash for 190-bit random secrets), [`KeyPair`], [`Credential`], [`Pepper`],
//!   [`PepperRing`] for rotation.
//! - **Fixed values**: header names in [`headers`], input bounds in [`limits`].
#![cfg_attr(
    feature = "tonic",
    doc = "- **gRPC**: [`grpc`] (feature `tonic`), refusals as gRPC statuses."
)]
#![cfg_attr(
    not(feature = "tonic"),
    doc = "- **gRPC**: `grpc` (feature `tonic`), refusals as gRPC statuses."
)]
#![cfg_attr(
    feature = "test-util",
    doc = "- **Tests**: [`testing`] (feature `test-util`), a store double that counts, fails and stalls calls."
)]
#![cfg_attr(
    not(feature = "test-util"),
    doc = "- **Tests**: `testing` (feature `test-util`), a store double that counts, fails and stalls calls."
)]
//! - **Operators' tool**: the `tower-api-keys` command (feature `cli`;
//!   `cargo install tower-api-keys --features cli`) creates, lists, rotates,
//!   revokes, deletes and imports keys, and reports and retires peppers, on the
//!   same database (README, "Operations").
//! - **Metrics** go through the `metrics` facade (the host installs the
//!   exporter); the names are listed in the README, "Operations".
//!
//! # Features
//!
//! Default: `sqlite` and `axum`. Others: `postgres`, `mysql`, `rustls` (TLS to
//! the database), `tonic`, `redis`, `openapi` (an OpenAPI document of the
//! management router), `cli` (the operators' tool), `ui` (the self-service
//! key page, `ui::KeysPage`), `test-util`. The SeaORM
//! store, its migrations and the change feed's SQL side are the feature `sql`,
//! which each driver turns on: `default-features = false` builds the layer,
//! the validator, the key manager and [`store::ApiKeyRepository`] for a host
//! with its own store, without SeaORM or sqlx.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod audit;
mod auth;
pub mod events;
pub mod headers;
mod identity;
pub mod key;
mod manager;
pub mod policy;
pub mod ratelimit;
#[cfg(feature = "axum")]
pub mod router;
pub mod store;
mod sync;
mod telemetry;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
#[cfg(feature = "ui")]
#[cfg_attr(docsrs, doc(cfg(feature = "ui")))]
pub mod ui;
mod validator;

#[cfg(feature = "axum")]
pub use auth::MissingAuthentication;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use auth::grpc;
pub use auth::{
    ApiKeyAuth, ApiKeyAuthLayer, RequireScopes, RequireScopesLayer, ResponseBody, ResponseFuture,
    ScopeFuture, extract_credential, extract_credential_with_prefix,
};
pub use identity::{AccountId, ApiKeyId, AuthenticatedKey};
pub use key::hash;
pub use key::pepper::{Pepper, PepperError, PepperFileError, PepperSource};
pub use key::ring::{InvalidPepperId, MAX_PEPPER_ID_LEN, PepperId, PepperRing};
pub use key::{Credential, KeyPair, KeyPrefix, MalformedCredential, Token};
pub use manager::rules::{FieldError, NewApiKey};
pub use manager::{
    ApiKeyInfo, CreatedKey, KeyManager, LeakedKey, ManagerError, PepperRole, PepperStatus,
};
pub use manager::{AuditPage, RETENTION_EVERY};
pub use manager::{DayUsage, KeyUsage};
pub use policy::limits;
pub use policy::rejection::{ProblemJson, Rejection, RejectionBody, RejectionHandler};
pub use policy::{AllowedNetworks, Metadata, NetworksError, PeerAddr, Scopes, TrustedProxies};
#[cfg(feature = "redis")]
pub use ratelimit::RateLimiterError;
pub use ratelimit::{
    Decision, OnRedisError, RateLimit, RateLimitError, RateLimitJsonError, RateLimitUnavailable,
    RateLimiter,
};
#[doc(inline)]
pub use store::feed;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
#[doc(inline)]
pub use store::{entity, migration};
pub use validator::{ApiKeyValidator, CachedEntries, ValidatorBuilder};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
