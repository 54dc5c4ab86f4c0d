//! gRPC-native rejections, for tonic (or any gRPC server on a Tower stack).
//!
//! gRPC clients do not read HTTP statuses: a call fails through the
//! `grpc-status` and `grpc-message` metadata. [`GrpcRejection`] answers every
//! refusal the way a gRPC server does, as a *trailers-only* response: HTTP `200`,
//! `content-type: application/grpc`, an empty body, and
//!
//! | [`Rejection`] | `grpc-status` | `grpc-message` |
//! |---|---|---|
//! | missing, malformed or invalid credential | `16` (`UNAUTHENTICATED`) | [`Rejection::detail`], percent-encoded |
//! | [`Rejection::StoreUnavailable`] | `14` (`UNAVAILABLE`) | `Authentication temporarily unavailable` |
//! | [`Rejection::InsufficientScope`] (a scope guard) | `7` (`PERMISSION_DENIED`) | `Insufficient scope` |
//! | [`Rejection::AddressNotAllowed`] (the key's allowlist) | `7` (`PERMISSION_DENIED`) | `API key not allowed from this address` |
//! | [`Rejection::RateLimited`] | `8` (`RESOURCE_EXHAUSTED`) | `Rate limit exceeded` |
//!
//! so that a tonic client sees `Code::Unauthenticated` or `Code::Unavailable`
//! with the same wording as the HTTP problem documents. It needs nothing from
//! tonic itself: the `tonic` feature only compiles this module.
//!
//! A gRPC client sends the credential as `x-api-key` metadata, which travels as
//! the HTTP/2 header `x-api-key`; the layer reads it as is.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use tonic::transport::{Server, server::TcpIncoming};
//! use tower_api_keys::{
//!     ApiKeyAuthLayer, ApiKeyValidator, Pepper, grpc::GrpcRejection, store::SeaOrmRepository,
//! };
//!
//! let repository = SeaOrmRepository::connect("sqlite::memory:").await?;
//! let validator = ApiKeyValidator::new(repository, Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
//! let (_health, health_service) = tonic_health::server::health_reporter();
//!
//! let incoming = TcpIncoming::bind("127.0.0.1:0".parse()?)?;
//! Server::builder()
//!     .layer(ApiKeyAuthLayer::new(validator.clone()).with_rejection(GrpcRejection))
//!     .add_service(health_service)
//!     // Handlers read `request.extensions().get::<tower_api_keys::AccountId>()`.
//!     .serve_with_incoming_shutdown(incoming, async { /* e.g. ctrl-c */ })
//!     .await?;
//! validator.shutdown().await;
//! # Ok(()) }
//! ```

use http::{HeaderName, HeaderValue, Response, StatusCode, header};

use crate::policy::rejection::{Rejection, RejectionBody, RejectionHandler};

/// The `grpc-status` header.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The `grpc-message` header.
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// gRPC status code `UNAUTHENTICATED`.
pub const UNAUTHENTICATED: u16 = 16;
/// gRPC status code `UNAVAILABLE`.
pub const UNAVAILABLE: u16 = 14;
/// gRPC status code `PERMISSION_DENIED`.
pub const PERMISSION_DENIED: u16 = 7;
/// gRPC status code `RESOURCE_EXHAUSTED`.
pub const RESOURCE_EXHAUSTED: u16 = 8;

/// A [`RejectionHandler`] answering in gRPC: a trailers-only response with
/// `grpc-status` `16` (`UNAUTHENTICATED`), or `14` (`UNAVAILABLE`) when the key
/// store is down, and the [`Rejection::detail`] text as `grpc-message`.
///
/// See the [module documentation](self) for the whole mapping and an example.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcRejection;

impl GrpcRejection {
    /// The gRPC status code for `rejection`: [`UNAVAILABLE`] for a store
    /// outage (a client may retry), [`PERMISSION_DENIED`] for a missing scope
    /// or an address outside the key's allowlist,
    /// [`RESOURCE_EXHAUSTED`] over the rate limit, otherwise
    /// [`UNAUTHENTICATED`].
    pub const fn code(rejection: Rejection) -> u16 {
        match rejection.status() {
            StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
            StatusCode::FORBIDDEN => PERMISSION_DENIED,
            StatusCode::TOO_MANY_REQUESTS => RESOURCE_EXHAUSTED,
            _ => UNAUTHENTICATED,
        }
    }
}

impl RejectionHandler for GrpcRejection {
    fn respond(&self, rejection: Rejection) -> Response<RejectionBody> {
        let mut response = Response::new(RejectionBody::default());
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(GRPC_STATUS, HeaderValue::from(Self::code(rejection)));
        headers.insert(GRPC_MESSAGE, percent_encode(rejection.detail()));
        response
    }
}

/// Percent-encodes a `grpc-message` value as the gRPC HTTP/2 protocol requires:
/// every byte outside `0x20..=0x7E`, and `%` itself, becomes `%XX`.
fn percent_encode(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = Vec::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            encoded.push(byte);
        } else {
            encoded.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0x0F)],
            ]);
        }
    }
    HeaderValue::from_bytes(&encoded).expect("percent-encoded bytes are visible ASCII")
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    const ALL: [Rejection; 7] = [
        Rejection::MissingCredential,
        Rejection::MalformedCredential,
        Rejection::InvalidCredential,
        Rejection::StoreUnavailable,
        Rejection::InsufficientScope,
        Rejection::RateLimited,
        Rejection::AddressNotAllowed,
    ];

    #[test]
    fn rejections_are_trailers_only_grpc_responses() {
        for rejection in ALL {
            let response = GrpcRejection.respond(rejection);
            assert_eq!(response.status(), StatusCode::OK, "{rejection:?}");
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], "application/grpc");
            let expected = match rejection {
                Rejection::StoreUnavailable => "14",
                Rejection::InsufficientScope | Rejection::AddressNotAllowed => "7",
                Rejection::RateLimited => "8",
                _ => "16",
            };
            assert_eq!(headers["grpc-status"], expected, "{rejection:?}");
            assert_eq!(headers["grpc-message"], rejection.detail(), "{rejection:?}");
            assert!(!headers.contains_key(header::WWW_AUTHENTICATE));
            assert!(response.body().is_end_stream());
        }
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(
            percent_encode("Invalid API key format. Expected format: pk_xxx:sk_xxx"),
            "Invalid API key format. Expected format: pk_xxx:sk_xxx"
        );
        assert_eq!(percent_encode("100% sure"), "100%25 sure");
        assert_eq!(percent_encode("a\tb\r\nc"), "a%09b%0D%0Ac");
        assert_eq!(percent_encode("clé ✓"), "cl%C3%A9 %E2%9C%93");
        assert_eq!(percent_encode("~\u{7f}"), "~%7F");
    }
}
