//! Route-level scope checks: [`RequireScopesLayer`] → [`RequireScopes`] →
//! [`ScopeFuture`].
//!
//! Place the guard *inside* [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) (so it
//! runs after it): it reads the [`AuthenticatedKey`] the layer attached and
//! lets the request through only if the key grants every required scope. An
//! unrestricted key (no `scopes`) passes every guard. A key that lacks one gets
//! `403` with `WWW-Authenticate: Bearer error="insufficient_scope",
//! scope="<required>"` (RFC 6750 §3.1); with
//! [`GrpcRejection`](crate::auth::grpc::GrpcRejection), `PERMISSION_DENIED` (7). The
//! check is a binary search in the key's cached scopes: no store round trip.
//!
//! In axum, per route (the route's layer runs after the outer auth layer):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, routing::get};
//! use tower_api_keys::{ApiKeyAuthLayer, ApiKeyValidator, Pepper, RequireScopesLayer, store::MemoryRepository};
//!
//! let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
//! let app: Router = Router::new()
//!     .route(
//!         "/v1/reports",
//!         get(|| async { "read" })
//!             .layer(RequireScopesLayer::new(["reports:read"])),
//!     )
//!     .layer(ApiKeyAuthLayer::new(validator));
//! # Ok(()) }
//! ```

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response, StatusCode, header};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::body::ResponseBody;
use crate::{
    headers::INSUFFICIENT_SCOPE,
    identity::AuthenticatedKey,
    policy::is_valid_scope,
    policy::rejection::{ProblemJson, Rejection, RejectionBody, RejectionHandler},
};

/// Requires every one of a list of scopes. Wraps services in [`RequireScopes`].
///
/// Put it *inside* [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer), which must run
/// first: in axum, on the route (or on a router that the auth layer wraps).
/// A key without a required scope gets `403` and a `WWW-Authenticate:
/// Bearer error="insufficient_scope"` challenge; an unrestricted key passes.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Router, body::Body, http::{Request, StatusCode}, routing::get};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::{
///     AccountId, ApiKeyAuthLayer, ApiKeyValidator, CreatedKey, KeyManager, NewApiKey, Pepper,
///     RequireScopesLayer, Scopes, store::MemoryRepository,
/// };
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// let app: Router = Router::new()
///     .route(
///         "/v1/reports",
///         get(|| async { "the reports" }).layer(RequireScopesLayer::new(["reports:read"])),
///     )
///     .route("/v1/profile", get(|| async { "any key" }))
///     .layer(ApiKeyAuthLayer::new(validator.clone()));
///
/// let manager = KeyManager::new(validator);
/// let account = AccountId::new(uuid::Uuid::new_v4());
/// let scoped = |scope: &str| -> Result<NewApiKey, tower_api_keys::policy::ScopesError> {
///     Ok(NewApiKey::new(scope).with_scopes(Scopes::new([scope])?))
/// };
/// let billing = manager.create(account, scoped("billing:read")?).await?;
/// let reports = manager.create(account, scoped("reports:read")?).await?;
///
/// let call = |path: &str, key: &CreatedKey| {
///     Request::get(path).header("x-api-key", key.credential()).body(Body::empty())
/// };
/// let refused = app.clone().oneshot(call("/v1/reports", &billing)?).await?;
/// assert_eq!(refused.status(), StatusCode::FORBIDDEN);
/// assert!(refused.headers()["www-authenticate"].to_str()?.contains("insufficient_scope"));
/// assert_eq!(app.clone().oneshot(call("/v1/reports", &reports)?).await?.status(), StatusCode::OK);
/// assert_eq!(app.oneshot(call("/v1/profile", &billing)?).await?.status(), StatusCode::OK);
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RequireScopesLayer {
    guard: Arc<Guard>,
}

struct Guard {
    /// `tower_api_keys_verifications_total{outcome="forbidden"}`.
    forbidden: metrics::Counter,
    required: Box<[Box<str>]>,
    /// `Bearer error="insufficient_scope", scope="a b"`.
    challenge: HeaderValue,
    rejection: Arc<dyn RejectionHandler>,
}

impl RequireScopesLayer {
    /// A guard requiring all of `scopes`. A scope that is not valid syntax
    /// ([`is_valid_scope`](crate::policy::is_valid_scope): 1–64 characters of
    /// `[a-z0-9_.:-]`, starting with a letter or digit) can be held by no key:
    /// a guard requiring one refuses every restricted key, and logs a warning
    /// when built.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(scopes, Arc::new(ProblemJson))
    }

    /// Replaces the refusal (default: the problem document of
    /// [`Rejection::InsufficientScope`]); pass the same handler as the auth
    /// layer's, for example
    #[cfg_attr(
        feature = "tonic",
        doc = "[`GrpcRejection`](crate::grpc::GrpcRejection)."
    )]
    #[cfg_attr(
        not(feature = "tonic"),
        doc = "`grpc::GrpcRejection` (feature `tonic`)."
    )]
    /// A `403` answer still gets the `WWW-Authenticate` challenge naming the
    /// required scopes.
    pub fn with_rejection(self, handler: impl RejectionHandler) -> Self {
        let required: Vec<&str> = self.guard.required.iter().map(|scope| &**scope).collect();
        Self::build(required, Arc::new(handler))
    }

    fn build<I, S>(scopes: I, rejection: Arc<dyn RejectionHandler>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let required: Box<[Box<str>]> = scopes
            .into_iter()
            .map(|scope| Box::from(scope.as_ref()))
            .collect();
        let valid: Vec<&str> = required
            .iter()
            .map(|scope| &**scope)
            .filter(|scope| is_valid_scope(scope))
            .collect();
        if valid.len() != required.len() {
            tracing::warn!(
                "a scope guard requires a scope that is not valid syntax; no restricted key can pass it"
            );
        }
        // Only valid scopes (visible ASCII) go into the header.
        let challenge = HeaderValue::from_str(&format!(
            "{INSUFFICIENT_SCOPE}, scope=\"{}\"",
            valid.join(" ")
        ))
        .unwrap_or(HeaderValue::from_static(INSUFFICIENT_SCOPE));
        Self {
            guard: Arc::new(Guard {
                forbidden: metrics::counter!(crate::telemetry::VERIFICATIONS, "outcome" => "forbidden"),
                required,
                challenge,
                rejection,
            }),
        }
    }

    /// The scopes this guard requires.
    pub fn required(&self) -> impl ExactSizeIterator<Item = &str> {
        self.guard.required.iter().map(|scope| &**scope)
    }
}

impl fmt::Debug for RequireScopesLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopesLayer")
            .field("required", &self.guard.required)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for RequireScopesLayer {
    type Service = RequireScopes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireScopes {
            inner,
            guard: self.guard.clone(),
        }
    }
}

/// Middleware that refuses keys lacking a required scope. Built by
/// [`RequireScopesLayer`].
#[derive(Clone)]
pub struct RequireScopes<S> {
    inner: S,
    guard: Arc<Guard>,
}

impl<S: fmt::Debug> fmt::Debug for RequireScopes<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireScopes")
            .field("inner", &self.inner)
            .field("required", &self.guard.required)
            .finish()
    }
}

impl Guard {
    /// `None` when the request may pass, else the refusal.
    fn check<B>(&self, request: &Request<B>) -> Option<Response<RejectionBody>> {
        let rejection = match request.extensions().get::<AuthenticatedKey>() {
            // No key: the auth layer is missing or lets anonymous requests
            // through; a guarded route needs a key.
            None => Rejection::MissingCredential,
            Some(key) if key.missing_scope(&self.required).is_none() => return None,
            Some(_) => {
                self.forbidden.increment(1);
                Rejection::InsufficientScope
            }
        };
        let mut response = self.rejection.respond(rejection);
        if response.status() == StatusCode::FORBIDDEN {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
        }
        Some(response)
    }
}

impl<S, B, ResBody> Service<Request<B>> for RequireScopes<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ScopeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.guard.check(&request) {
            None => ScopeFuture {
                state: State::Inner {
                    future: self.inner.call(request),
                },
            },
            Some(response) => ScopeFuture {
                state: State::Rejected {
                    response: Some(response),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`RequireScopes`]: the inner service's, or a refusal
    /// ready at once.
    pub struct ScopeFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<RejectionBody>> },
    }
}

impl<F> fmt::Debug for ScopeFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeFuture")
    }
}

impl<F, ResBody, E> Future for ScopeFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future
                .poll(cx)
                .map(|result| result.map(|response| response.map(ResponseBody::inner))),
            StateProj::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| Rejection::InsufficientScope.problem_response())
                .map(ResponseBody::rejection))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};
    use uuid::Uuid;

    use super::*;
    use crate::{
        identity::{AccountId, ApiKeyId},
        policy::Scopes,
    };

    fn key(scopes: Option<&[&str]>) -> AuthenticatedKey {
        AuthenticatedKey::new(
            AccountId::new(Uuid::new_v4()),
            ApiKeyId::new(Uuid::new_v4()),
            "pk_x",
            None,
            scopes.map(|scopes| Scopes::new(scopes).unwrap()),
            None,
        )
    }

    async fn status(
        layer: &RequireScopesLayer,
        key: Option<AuthenticatedKey>,
    ) -> Response<ResponseBody<String>> {
        let service = layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }));
        let mut request = Request::new(());
        if let Some(key) = key {
            request.extensions_mut().insert(key);
        }
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn every_required_scope_must_be_granted() {
        let layer = RequireScopesLayer::new(["reports:read", "reports:write"]);
        let both = Some(&["reports:read", "reports:write", "x"][..]);
        assert_eq!(
            status(&layer, Some(key(both))).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            status(&layer, Some(key(None))).await.status(),
            StatusCode::OK
        );
        for lacking in [&["reports:read"][..], &[]] {
            let response = status(&layer, Some(key(Some(lacking)))).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                response.headers()[header::WWW_AUTHENTICATE],
                r#"Bearer error="insufficient_scope", scope="reports:read reports:write""#
            );
        }
        let anonymous = status(&layer, None).await;
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn an_invalid_required_scope_refuses_restricted_keys_without_a_bad_header() {
        let layer = RequireScopesLayer::new(["Bad Scope\n"]);
        let response = status(&layer, Some(key(Some(&["a"])))).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer error="insufficient_scope", scope="""#
        );
    }
}
