//! Why a request was refused, and how the refusal is answered.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use crate::headers::{INSUFFICIENT_SCOPE, PROBLEM_JSON, RETRY_AFTER_SECS, WWW_AUTHENTICATE};

/// The body of rejection responses: a whole body held in memory (the problem
/// document, or empty for gRPC). Build it from a `&'static str`, a `String`,
/// a `Vec<u8>` or [`Bytes`].
#[derive(Debug, Clone, Default)]
pub struct RejectionBody(Full<Bytes>);

impl RejectionBody {
    /// A body of `bytes`.
    pub fn new(bytes: impl Into<Bytes>) -> Self {
        Self(Full::new(bytes.into()))
    }
}

impl From<&'static str> for RejectionBody {
    fn from(text: &'static str) -> Self {
        Self::new(text)
    }
}

impl From<String> for RejectionBody {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl From<Vec<u8>> for RejectionBody {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<Bytes> for RejectionBody {
    fn from(bytes: Bytes) -> Self {
        Self::new(bytes)
    }
}

impl Body for RejectionBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// Why [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) refused a request.
///
/// The variants are deliberately coarse: an unknown key, a wrong secret, a revoked
/// key and an expired key are all [`Rejection::InvalidCredential`], so that a
/// client cannot tell which public keys exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// No `X-API-Key` header and no `Authorization: Bearer pk_…`.
    MissingCredential,
    /// A credential that is not exactly `pk_<32>:sk_<32>`.
    MalformedCredential,
    /// Unknown key, wrong secret, revoked or expired.
    InvalidCredential,
    /// The key store failed or timed out and nothing usable was cached.
    StoreUnavailable,
    /// A valid key that lacks a scope the route requires (from a scope guard,
    /// [`RequireScopes`](crate::RequireScopes)).
    InsufficientScope,
    /// The key is over its rate limit.
    RateLimited,
    /// A valid key used from an address outside its allowlist, or from an
    /// unknown address (see [`AllowedNetworks`](crate::AllowedNetworks)).
    AddressNotAllowed,
}

impl Rejection {
    /// The HTTP status: `401`, `503` for [`Rejection::StoreUnavailable`], `403`
    /// for [`Rejection::InsufficientScope`] and [`Rejection::AddressNotAllowed`],
    /// `429` for [`Rejection::RateLimited`].
    pub const fn status(self) -> StatusCode {
        match self {
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::InsufficientScope | Self::AddressNotAllowed => StatusCode::FORBIDDEN,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::MissingCredential | Self::MalformedCredential | Self::InvalidCredential => {
                StatusCode::UNAUTHORIZED
            }
        }
    }

    /// The problem document's `detail`, as the reference service words it.
    pub const fn detail(self) -> &'static str {
        match self {
            Self::MissingCredential => "Missing API key",
            Self::MalformedCredential => "Invalid API key format. Expected format: pk_xxx:sk_xxx",
            Self::InvalidCredential => "Invalid API key",
            Self::StoreUnavailable => "Authentication temporarily unavailable",
            Self::InsufficientScope => "Insufficient scope",
            Self::RateLimited => "Rate limit exceeded",
            Self::AddressNotAllowed => "API key not allowed from this address",
        }
    }

    const fn body(self) -> &'static str {
        match self {
            Self::MissingCredential => {
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Missing API key"}"#
            }
            Self::MalformedCredential => {
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Invalid API key format. Expected format: pk_xxx:sk_xxx"}"#
            }
            Self::InvalidCredential => {
                r#"{"type":"about:blank","title":"Unauthorized","status":401,"detail":"Invalid API key"}"#
            }
            Self::StoreUnavailable => {
                r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"Authentication temporarily unavailable"}"#
            }
            Self::InsufficientScope => {
                r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"Insufficient scope"}"#
            }
            Self::RateLimited => {
                r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Rate limit exceeded"}"#
            }
            Self::AddressNotAllowed => {
                r#"{"type":"about:blank","title":"Forbidden","status":403,"detail":"API key not allowed from this address"}"#
            }
        }
    }

    /// The default answer: an RFC 9457 problem document with
    /// `Content-Type: application/problem+json`, plus `WWW-Authenticate` on `401`
    /// and `403` and `Retry-After` on `503` and `429`. (The scope guard adds the
    /// scopes it requires to the `403` challenge; the layer sets the real
    /// `Retry-After` of a `429`.)
    pub fn problem_response(self) -> Response<RejectionBody> {
        let mut response = Response::new(RejectionBody::from(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            Self::StoreUnavailable => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            Self::RateLimited => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            Self::InsufficientScope => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(INSUFFICIENT_SCOPE),
                );
            }
            Self::MissingCredential | Self::MalformedCredential | Self::InvalidCredential => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(WWW_AUTHENTICATE),
                );
            }
            // Another credential would not help: no challenge.
            Self::AddressNotAllowed => {}
        }
        response
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.detail())
    }
}

impl std::error::Error for Rejection {}

/// Turns a [`Rejection`] into the response the client gets.
///
/// Implemented for every `Fn(Rejection) -> http::Response<RejectionBody>`, so a
/// closure does:
///
/// ```
/// use tower_api_keys::{Rejection, RejectionBody};
///
/// let plain_text = |rejection: Rejection| {
///     let mut response = http::Response::new(RejectionBody::from(rejection.detail()));
///     *response.status_mut() = rejection.status();
///     response
/// };
/// # let _: &dyn tower_api_keys::RejectionHandler = &plain_text;
/// ```
pub trait RejectionHandler: Send + Sync + 'static {
    /// The response for `rejection`.
    fn respond(&self, rejection: Rejection) -> Response<RejectionBody>;
}

impl<F> RejectionHandler for F
where
    F: Fn(Rejection) -> Response<RejectionBody> + Send + Sync + 'static,
{
    fn respond(&self, rejection: Rejection) -> Response<RejectionBody> {
        self(rejection)
    }
}

/// The default [`RejectionHandler`]: [`Rejection::problem_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ProblemJson;

impl RejectionHandler for ProblemJson {
    fn respond(&self, rejection: Rejection) -> Response<RejectionBody> {
        rejection.problem_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_valid_problem_documents_matching_status_and_detail() {
        for rejection in [
            Rejection::MissingCredential,
            Rejection::MalformedCredential,
            Rejection::InvalidCredential,
            Rejection::StoreUnavailable,
            Rejection::InsufficientScope,
            Rejection::RateLimited,
            Rejection::AddressNotAllowed,
        ] {
            let doc: serde_json::Value = serde_json::from_str(rejection.body()).unwrap();
            assert_eq!(doc["type"], "about:blank");
            assert_eq!(doc["status"], rejection.status().as_u16());
            assert_eq!(doc["title"], rejection.status().canonical_reason().unwrap());
            assert_eq!(doc["detail"], rejection.detail());
        }
    }
}
