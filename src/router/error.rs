//! The management API's errors, each answered with a problem document.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::MAX_BODY_BYTES;
use crate::{
    auth::problem::Problem, headers::RETRY_AFTER_SECS, manager::ManagerError,
    manager::rules::FieldError,
};

/// Errors of the management API, each a problem document.
#[derive(Debug)]
pub(super) enum ApiError {
    Unauthenticated,
    ApiKeyNotAllowed,
    /// The acting API key lacks [`MANAGEMENT_SCOPE`](super::MANAGEMENT_SCOPE).
    ManagementScopeMissing,
    BadKeyId,
    MalformedJson,
    UnsupportedMediaType,
    TooLarge,
    Invalid(Vec<FieldError>),
    Manager(ManagerError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated => {
                Problem::new(StatusCode::UNAUTHORIZED, "Authentication required").into_response()
            }
            Self::ApiKeyNotAllowed => Problem::new(
                StatusCode::FORBIDDEN,
                "API keys cannot be used to manage API keys",
            )
            .into_response(),
            Self::ManagementScopeMissing => {
                let mut response =
                    Problem::new(StatusCode::FORBIDDEN, "Insufficient scope").into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(
                        "Bearer error=\"insufficient_scope\", scope=\"api_keys:write\"",
                    ),
                );
                response
            }
            Self::Manager(ManagerError::ScopesNotHeld) => Problem::new(
                StatusCode::FORBIDDEN,
                "An API key cannot create, rotate into or change a key with scopes it does not hold",
            )
            .into_response(),
            Self::BadKeyId => {
                Problem::new(StatusCode::BAD_REQUEST, "key_id must be a UUID").into_response()
            }
            Self::MalformedJson => {
                Problem::new(StatusCode::BAD_REQUEST, "Malformed JSON body").into_response()
            }
            Self::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            )
            .into_response(),
            Self::TooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body must be at most {MAX_BODY_BYTES} bytes"),
            )
            .into_response(),
            Self::Invalid(errors) | Self::Manager(ManagerError::Invalid(errors)) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request body")
                    .with_errors(errors)
                    .into_response()
            }
            Self::Manager(ManagerError::NotFound) => {
                Problem::new(StatusCode::NOT_FOUND, "API key not found").into_response()
            }
            Self::Manager(ManagerError::NotActive) => {
                Problem::new(StatusCode::CONFLICT, "API key is not active").into_response()
            }
            Self::Manager(ManagerError::TooManyKeys { .. }) => {
                Problem::new(StatusCode::CONFLICT, "Too many API keys for this account")
                    .into_response()
            }
            Self::Manager(ManagerError::AlreadyRotated) => {
                Problem::new(StatusCode::CONFLICT, "API key has already been rotated")
                    .into_response()
            }
            Self::Manager(err) => {
                tracing::error!(error = %err, "key management failed");
                let mut response = Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Key store temporarily unavailable",
                )
                .into_response();
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, RETRY_AFTER_SECS.into());
                response
            }
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(err: ManagerError) -> Self {
        Self::Manager(err)
    }
}
