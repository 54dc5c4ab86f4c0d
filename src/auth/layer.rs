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
/// [`Rejection`](crate::Rejection)); [`with_rejection`](Self::with_rejection)
/// changes their form.
///
/// In axum, `.layer(...)` on a router puts every route added before it behind
/// the layer. With [`allow_anonymous`](Self::allow_anonymous), a route serves
/// callers without a key too and tells them apart with `Option<…>`:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::{Request, StatusCode}, routing::get};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::{AccountId, ApiKeyAuthLayer, ApiKeyValidator, Pepper, store::MemoryRepository};
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
///
/// let private: Router = Router::new()
///     .route("/v1/report", get(|account: AccountId| async move { format!("report for {account}") }))
///     .layer(ApiKeyAuthLayer::new(validator.clone()));
/// let public: Router = Router::new()
///     .route("/v1/hello", get(|account: Option<AccountId>| async move {
///         account.map_or_else(|| "hello, stranger".to_owned(), |account| format!("hello, {account}"))
///     }))
///     .layer(ApiKeyAuthLayer::new(validator).allow_anonymous(true));
///
/// let get = |path| Request::get(path).body(Body::empty());
/// assert_eq!(private.oneshot(get("/v1/report")?).await?.status(), StatusCode::UNAUTHORIZED);
/// assert_eq!(public.clone().oneshot(get("/v1/hello")?).await?.status(), StatusCode::OK);
///
/// // A credential that is present but wrong is refused even so.
/// let wrong = Request::get("/v1/hello").header("x-api-key", "pk_nope:sk_nope").body(Body::empty())?;
/// assert_eq!(public.oneshot(wrong).await?.status(), StatusCode::UNAUTHORIZED);
/// # Ok(()) }
/// ```
///
/// Outside axum it is an ordinary [`Layer`]:
/// `tower::ServiceBuilder::new().layer(ApiKeyAuthLayer::new(validator)).service(inner)`
/// (the crate's front page has tonic, warp and hyper recipes).
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
