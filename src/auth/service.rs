use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;
use zeroize::Zeroizing;

use super::{ResponseBody, ResponseFuture, extract_credential, layer::AuthConfig};
use crate::{
    identity::AuthenticatedKey,
    rejection::{Rejection, RejectionHandler},
    validator::ApiKeyValidator,
};

/// Middleware that authenticates requests by API key. Built by
/// [`ApiKeyAuthLayer`](super::ApiKeyAuthLayer), or directly.
#[derive(Clone, Debug)]
pub struct ApiKeyAuth<S> {
    inner: S,
    config: AuthConfig,
}

impl<S> ApiKeyAuth<S> {
    /// Wraps `inner`, checking keys with `validator`.
    pub fn new(inner: S, validator: ApiKeyValidator) -> Self {
        Self::from_config(inner, AuthConfig::new(validator))
    }

    pub(crate) fn from_config(inner: S, config: AuthConfig) -> Self {
        Self { inner, config }
    }

    /// See [`ApiKeyAuthLayer::with_rejection`](super::ApiKeyAuthLayer::with_rejection).
    #[must_use]
    pub fn with_rejection(mut self, handler: impl RejectionHandler) -> Self {
        self.config.rejection = std::sync::Arc::new(handler);
        self
    }

    /// See [`ApiKeyAuthLayer::allow_anonymous`](super::ApiKeyAuthLayer::allow_anonymous).
    #[must_use]
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.config.allow_anonymous = allow;
        self
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What the headers and the cache decided, before anything is awaited.
enum Decision {
    Pass(Option<AuthenticatedKey>),
    Reject(Rejection),
    AskStore {
        public_key: String,
        secret_key: Zeroizing<String>,
    },
}

pub(crate) fn insert_extensions<B>(request: &mut Request<B>, key: AuthenticatedKey) {
    let extensions = request.extensions_mut();
    extensions.insert(key.account_id());
    extensions.insert(key.key_id());
    extensions.insert(key);
}

impl<S, B, ResBody> Service<Request<B>> for ApiKeyAuth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let decision = match extract_credential(request.headers()) {
            Err(_) => Decision::Reject(Rejection::MalformedCredential),
            Ok(None) if self.config.allow_anonymous => Decision::Pass(None),
            Ok(None) => Decision::Reject(Rejection::MissingCredential),
            Ok(Some(credential)) => match self.config.validator.check_cached(&credential) {
                Some(Ok(key)) => Decision::Pass(Some(key)),
                Some(Err(rejection)) => Decision::Reject(rejection),
                None => Decision::AskStore {
                    public_key: credential.public_key().to_owned(),
                    secret_key: Zeroizing::new(credential.secret_key().to_owned()),
                },
            },
        };
        match decision {
            Decision::Reject(rejection) => {
                tracing::debug!(%rejection, "API key rejected");
                ResponseFuture::rejected(self.config.rejection.respond(rejection))
            }
            Decision::Pass(key) => {
                if let Some(key) = key {
                    insert_extensions(&mut request, key);
                }
                ResponseFuture::inner(self.inner.call(request))
            }
            Decision::AskStore {
                public_key,
                secret_key,
            } => {
                // The ready service goes into the future; a clone stays for the next call.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let validator = self.config.validator.clone();
                let check =
                    Box::pin(async move { validator.check_store(&public_key, &secret_key).await });
                ResponseFuture::checking(check, inner, request, self.config.rejection.clone())
            }
        }
    }
}
