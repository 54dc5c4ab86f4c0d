use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http::{Request, Response};
use tower_service::Service;
use zeroize::Zeroizing;

use super::body::ResponseBody;
use super::{
    ResponseFuture, extract_credential_with_prefix,
    future::Check,
    outcome::{insert_extensions, outcome, record_key, refusal_response},
};
use crate::validator::{Hit, admission::Now};
use crate::{
    policy::rejection::{ProblemJson, Rejection, RejectionHandler},
    validator::ApiKeyValidator,
};

/// Settings shared by the layer and every service it builds.
#[derive(Clone)]
pub(crate) struct AuthConfig {
    pub(crate) validator: ApiKeyValidator,
    pub(crate) rejection: Arc<dyn RejectionHandler>,
    pub(crate) allow_anonymous: bool,
}

impl AuthConfig {
    pub(crate) fn new(validator: ApiKeyValidator) -> Self {
        Self {
            validator,
            rejection: Arc::new(ProblemJson),
            allow_anonymous: false,
        }
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("validator", &self.validator)
            .field("allow_anonymous", &self.allow_anonymous)
            .finish_non_exhaustive()
    }
}

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
enum Verdict {
    Pass(Option<Hit>),
    Reject(Rejection),
    AskStore {
        public_key: String,
        secret_key: Zeroizing<String>,
    },
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
        // Disabled (a few nanoseconds) unless a subscriber enables debug for
        // `tower_api_keys::auth`.
        let span = tracing::debug_span!(
            "api_key_auth",
            outcome = tracing::field::Empty,
            key_id = tracing::field::Empty,
            account_id = tracing::field::Empty,
        );
        // The request's one clock reading: cache freshness, expiry, the
        // `last_used_at` throttle and the usage day all use it.
        let now = Instant::now();
        let verdict = match extract_credential_with_prefix(
            request.headers(),
            self.config.validator.key_prefix(),
        ) {
            Err(_) => Verdict::Reject(Rejection::MalformedCredential),
            Ok(None) if self.config.allow_anonymous => Verdict::Pass(None),
            Ok(None) => Verdict::Reject(Rejection::MissingCredential),
            Ok(Some(credential)) => match self.config.validator.check_cached(&credential, now) {
                Some(Ok(hit)) => Verdict::Pass(Some(hit)),
                Some(Err(rejection)) => Verdict::Reject(rejection),
                None => Verdict::AskStore {
                    public_key: credential.public_key().to_owned(),
                    secret_key: Zeroizing::new(credential.secret_key().to_owned()),
                },
            },
        };
        let verdict = match verdict {
            Verdict::Pass(Some(hit))
                if !self.config.validator.address_allowed(&hit, || {
                    self.config
                        .validator
                        .client_address(request.extensions(), request.headers())
                }) =>
            {
                Verdict::Reject(Rejection::AddressNotAllowed)
            }
            verdict => verdict,
        };
        match verdict {
            Verdict::Reject(rejection) => {
                self.config.validator.telemetry().verified(Err(rejection));
                span.record("outcome", outcome(rejection));
                let response =
                    span.in_scope(|| refusal_response(&*self.config.rejection, rejection.into()));
                ResponseFuture::rejected(response, span)
            }
            Verdict::Pass(None) => {
                span.record("outcome", "anonymous");
                let future = span.in_scope(|| self.inner.call(request));
                ResponseFuture::inner(future, None, span)
            }
            Verdict::Pass(Some(hit)) => match self.config.validator.admit_now(hit, now) {
                Now::Decided(Ok(admitted)) => {
                    record_key(&span, &admitted.key);
                    insert_extensions(&mut request, admitted.key);
                    let future = span.in_scope(|| self.inner.call(request));
                    ResponseFuture::inner(future, admitted.rate, span)
                }
                Now::Decided(Err(refused)) => {
                    span.record("outcome", outcome(refused.rejection));
                    let response =
                        span.in_scope(|| refusal_response(&*self.config.rejection, refused));
                    ResponseFuture::rejected(response, span)
                }
                Now::Later(hit) => {
                    let validator = self.config.validator.clone();
                    let check = Box::pin(async move { validator.admit(hit).await });
                    self.checking(check, request, span)
                }
            },
            Verdict::AskStore {
                public_key,
                secret_key,
            } => {
                let validator = self.config.validator.clone();
                let client = validator.client_address(request.extensions(), request.headers());
                let check = Box::pin(async move {
                    let checked = validator.check_store(&public_key, &secret_key).await;
                    match checked.and_then(|hit| {
                        if validator.address_allowed(&hit, || client) {
                            Ok(hit)
                        } else {
                            Err(Rejection::AddressNotAllowed)
                        }
                    }) {
                        Ok(hit) => validator.admit(hit).await,
                        Err(rejection) => {
                            validator.telemetry().verified(Err(rejection));
                            Err(rejection.into())
                        }
                    }
                });
                self.checking(check, request, span)
            }
        }
    }
}

impl<S: Clone> ApiKeyAuth<S> {
    /// A future that awaits `check`, then calls the inner service.
    fn checking<B>(
        &mut self,
        check: Check,
        request: Request<B>,
        span: tracing::Span,
    ) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::checking(check, inner, request, self.config.rejection.clone(), span)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode, header};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;
    use uuid::Uuid;

    use super::*;
    use crate::{
        headers::{PROBLEM_JSON, WWW_AUTHENTICATE, X_API_KEY},
        identity::{AccountId, ApiKeyId, AuthenticatedKey},
        key::KeyPair,
        store::ApiKeyRepository,
        testing::fixtures::{Scripted, pepper, row},
    };

    /// Answers with the authenticated account, checking that the three
    /// extensions agree, or `anonymous`.
    async fn echo(request: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
        let extensions = request.extensions();
        let text = match extensions.get::<AuthenticatedKey>() {
            Some(key) => {
                assert_eq!(extensions.get::<AccountId>(), Some(&key.account_id()));
                assert_eq!(extensions.get::<ApiKeyId>(), Some(&key.key_id()));
                key.account_id().to_string()
            }
            None => "anonymous".to_owned(),
        };
        Ok(Response::new(Full::from(text)))
    }

    fn request(credential: Option<&str>) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::default());
        if let Some(credential) = credential {
            request
                .headers_mut()
                .insert(X_API_KEY, HeaderValue::from_str(credential).unwrap());
        }
        request
    }

    async fn text<B: http_body::Body>(response: Response<B>) -> String
    where
        B::Error: std::fmt::Debug,
    {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    async fn stored_key(repository: &Scripted) -> (KeyPair, Uuid) {
        let pair = KeyPair::generate().unwrap();
        let account = Uuid::new_v4();
        repository.inner.insert(row(&pair, account)).await.unwrap();
        (pair, account)
    }

    #[tokio::test]
    async fn a_missing_credential_is_a_401_problem_without_a_lookup() {
        let repository = Scripted::default();
        let service = ApiKeyAuth::new(
            tower::service_fn(echo),
            ApiKeyValidator::new(repository.clone(), pepper()),
        );
        let response = service.oneshot(request(None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            WWW_AUTHENTICATE
        );
        assert!(text(response).await.contains("\"Missing API key\""));
        assert_eq!(repository.lookups(), 0);
    }

    #[tokio::test]
    async fn a_malformed_credential_is_refused_before_any_lookup() {
        let repository = Scripted::default();
        let service = ApiKeyAuth::new(
            tower::service_fn(echo),
            ApiKeyValidator::new(repository.clone(), pepper()),
        );
        let response = service.oneshot(request(Some("pk_short:sk_short"))).await;
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            text(response)
                .await
                .contains("Expected format: pk_xxx:sk_xxx")
        );
        assert_eq!(repository.lookups(), 0);
    }

    #[tokio::test]
    async fn a_valid_key_reaches_the_inner_service_and_then_hits_the_cache() {
        let repository = Scripted::default();
        let (pair, account) = stored_key(&repository).await;
        let service = ApiKeyAuth::new(
            tower::service_fn(echo),
            ApiKeyValidator::new(repository.clone(), pepper()),
        );
        for _ in 0..3 {
            let response = service
                .clone()
                .oneshot(request(Some(&pair.credential())))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(text(response).await, account.to_string());
        }
        assert_eq!(
            repository.lookups(),
            1,
            "only the first request asks the store"
        );
    }

    #[tokio::test]
    async fn anonymous_mode_passes_only_requests_without_a_credential() {
        let repository = Scripted::default();
        let service = ApiKeyAuth::new(
            tower::service_fn(echo),
            ApiKeyValidator::new(repository.clone(), pepper()),
        )
        .allow_anonymous(true);
        let response = service.clone().oneshot(request(None)).await.unwrap();
        assert_eq!(text(response).await, "anonymous");
        let unknown = KeyPair::generate().unwrap().credential();
        let response = service.oneshot(request(Some(&unknown))).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(text(response).await.contains("\"Invalid API key\""));
    }

    /// One span per request at debug level, with the outcome and the key's
    /// ids, never the secret or the credential.
    #[tokio::test]
    async fn each_request_gets_a_span_with_outcome_and_ids() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter("tower_api_keys::auth=debug")
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        // Tests on other threads may have registered the span's callsite with
        // no subscriber meanwhile: ask every callsite again, with this one.
        tracing::callsite::rebuild_interest_cache();

        let repository = Scripted::default();
        let (pair, account) = stored_key(&repository).await;
        let service = ApiKeyAuth::new(
            tower::service_fn(echo),
            ApiKeyValidator::new(repository.clone(), pepper()),
        );
        for credential in [Some(pair.credential()), Some(pair.credential()), None] {
            service
                .clone()
                .oneshot(request(credential.as_deref()))
                .await
                .unwrap();
        }
        let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let spans: Vec<&str> = logs
            .lines()
            .filter(|line| {
                line.contains("\"name\":\"api_key_auth\"") && line.contains("\"message\":\"close\"")
            })
            .collect();
        assert_eq!(spans.len(), 3, "{logs}");
        assert_eq!(
            spans
                .iter()
                .filter(|line| line.contains("\"outcome\":\"valid\"")
                    && line.contains(&account.to_string()))
                .count(),
            2,
            "{logs}"
        );
        assert!(spans[2].contains("\"outcome\":\"missing\""), "{logs}");
        assert!(!logs.contains(pair.secret_key.expose()), "{logs}");
    }
}
