//! The header names and values of the wire contract.

use http::HeaderName;

/// The reference service's header, `X-API-Key: pk_…:sk_…`.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// `X-Forwarded-For`, read only from trusted proxies
/// ([`TrustedProxies`](crate::TrustedProxies)).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// The `WWW-Authenticate` challenge sent with every `401`.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"api\"";
/// The `WWW-Authenticate` challenge of a `403` for a missing scope (RFC 6750
/// §3.1); a scope guard adds `scope="…"` with the scopes it requires.
pub const INSUFFICIENT_SCOPE: &str = "Bearer error=\"insufficient_scope\"";
/// The `Retry-After` value, in seconds, sent with `503`.
pub const RETRY_AFTER_SECS: u32 = 5;
/// The problem-document media type (`Content-Type` of every refusal).
pub const PROBLEM_JSON: &str = "application/problem+json";
