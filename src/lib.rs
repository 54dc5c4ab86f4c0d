//! API-key authentication and key management for any Tower stack.
//!
//! - [`ApiKeyAuthLayer`] reads `pk_…:sk_…` from `X-API-Key` (or
//!   `Authorization: Bearer`), validates it through an in-process cache in front
//!   of a key store, and attaches [`AccountId`], [`ApiKeyId`] and
//!   [`AuthenticatedKey`] to the request. Refusals are RFC 9457 problem responses.
//! - [`ApiKeyValidator`] holds the pepper, the cache and the store; the layer and
//!   the key manager share one.
//! - [`store`] has the repository trait and its SeaORM implementation (SQLite,
//!   PostgreSQL, MySQL/MariaDB; feature `sql`, which each driver feature turns
//!   on); [`migration`] the crate's own migrations.
//!
//! Secrets are hashed as `hex(HMAC-SHA256(pepper, secret))`, compatible with the
//! reference service; see [`hash`] for why that, and not a password hash, is
//! right for 190-bit random secrets.
//!
//! # Where things are
//!
//! The types every host uses sit at the crate root: the layer and its service
//! and future, the validator and its builder, the key manager and its request
//! and result types, the identity types a request carries, the key material, the
//! pepper and every error type. Parts a host plugs in or swaps out live in
//! modules of their own: [`store`] (the repository trait and its
//! implementations), [`migration`] and [`entity`] (the schema), [`router`]
//! (the management API, feature `axum`), [`grpc`] (feature `tonic`), [`hash`],
//! [`key`], and the fixed values of the contract in [`headers`] and [`limits`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub, missing_debug_implementations, rust_2018_idioms)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
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
#[cfg(test)]
mod test_support;
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod validator;

#[cfg(feature = "axum")]
pub use auth::MissingAuthentication;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use auth::grpc;
pub use auth::{
    ApiKeyAuth, ApiKeyAuthLayer, RequireScopes, RequireScopesLayer, ResponseBody, ResponseFuture,
    ScopeFuture, extract_credential,
};
pub use identity::{AccountId, ApiKeyId, AuthenticatedKey};
pub use key::hash;
pub use key::pepper::{Pepper, PepperError, PepperFileError, PepperSource};
pub use key::ring::{InvalidPepperId, MAX_PEPPER_ID_LEN, PepperId, PepperRing};
pub use key::{Credential, KeyPair, MalformedCredential};
pub use manager::rules::{FieldError, NewApiKey};
pub use manager::{ApiKeyInfo, CreatedKey, KeyManager, ManagerError, PepperRole, PepperStatus};
pub use manager::{DayUsage, KeyUsage};
pub use policy::limits;
pub use policy::rejection::{ProblemJson, Rejection, RejectionBody, RejectionHandler};
pub use policy::{Metadata, Scopes};
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
