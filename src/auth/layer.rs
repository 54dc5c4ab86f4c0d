use std::sync::Arc;

use tower_layer::Layer;

use super::{ApiKeyAuth, service::AuthConfig};
use crate::{policy::rejection::RejectionHandler, validator::ApiKeyValidator};

/// Authenticates every request by API key. Wraps services in [`ApiKeyAuth`].
///
/// On success the request carries [`AccountId`](crate::AccountId),
/// [`ApiKeyId`](crate::ApiKeyId) and [`AuthenticatedKey`](crate::AuthenticatedKey)
/// extensions. Refusals are responses, never errors: `401` problem documents for
/// a missing, malformed or invalid key, `503` when the store is unavailable (see
/// [`Rejection`](crate::Rejection)).
#[derive(Clone, Debug)]
#[must_use]
pub struct ApiKeyAuthLayer {
    config: AuthConfig,
}

impl ApiKeyAuthLayer {
    /// A layer that checks keys with `validator`.
    pub fn new(validator: ApiKeyValidator) -> Self {
        Self {
            config: AuthConfig::new(validator),
        }
    }

    /// Replaces the rejection responses (default:
    /// [`ProblemJson`](crate::ProblemJson)), for example with gRPC statuses.
    pub fn with_rejection(mut self, handler: impl RejectionHandler) -> Self {
        self.config.rejection = Arc::new(handler);
        self
    }

    /// Lets requests that carry no credential at all through, without
    /// extensions (default: **off**, they get `401`). A credential that is present
    /// but malformed or invalid is still refused.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.config.allow_anonymous = allow;
        self
    }

    /// The validator, shared with every service this layer builds.
    pub fn validator(&self) -> &ApiKeyValidator {
        &self.config.validator
    }
}

impl<S> Layer<S> for ApiKeyAuthLayer {
    type Service = ApiKeyAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ApiKeyAuth::from_config(inner, self.config.clone())
    }
}
