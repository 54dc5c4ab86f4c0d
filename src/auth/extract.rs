//! axum extractors for the identity types: [`AccountId`], [`ApiKeyId`] and
//! [`AuthenticatedKey`] (and `Option<…>` of each, for routes behind
//! [`allow_anonymous`](crate::ApiKeyAuthLayer::allow_anonymous)).
//!
//! Framework glue: this module sits at the top of the module graph.

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::request::Parts,
    response::{IntoResponse, Response},
};

use super::problem::Problem;
use crate::identity::{AccountId, ApiKeyId, AuthenticatedKey};

/// Rejection of the extractors when the request carries no authentication
/// extension: a `500` problem response, since it means a routing mistake.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no authenticated API key on this request: is `ApiKeyAuthLayer` installed on this route?")]
pub struct MissingAuthentication;

impl IntoResponse for MissingAuthentication {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        Problem::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "Missing authentication layer; is `ApiKeyAuthLayer` installed?",
        )
        .into_response()
    }
}

macro_rules! extension_extractor {
    ($ty:ty) => {
        impl<S: Send + Sync> FromRequestParts<S> for $ty {
            type Rejection = MissingAuthentication;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Self, Self::Rejection> {
                parts
                    .extensions
                    .get::<$ty>()
                    .cloned()
                    .ok_or(MissingAuthentication)
            }
        }

        impl<S: Send + Sync> OptionalFromRequestParts<S> for $ty {
            type Rejection = std::convert::Infallible;

            async fn from_request_parts(
                parts: &mut Parts,
                _state: &S,
            ) -> Result<Option<Self>, Self::Rejection> {
                Ok(parts.extensions.get::<$ty>().cloned())
            }
        }
    };
}

extension_extractor!(AccountId);
extension_extractor!(ApiKeyId);
extension_extractor!(AuthenticatedKey);
