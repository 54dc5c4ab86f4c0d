use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::body::ResponseBody;
use super::outcome::{add_rate_headers, insert_extensions, record_key, refusal_response};
use crate::{
    policy::rejection::{RejectionBody, RejectionHandler},
    ratelimit::headers::Rated,
    validator::admission::{Admitted, Refused},
};

/// The awaited part of a request's check: the store lookup on a cache miss,
/// and a shared rate limiter's answer.
pub(crate) type Check = Pin<Box<dyn Future<Output = Result<Admitted, Refused>> + Send>>;

pin_project! {
    /// Response future of [`ApiKeyAuth`](super::ApiKeyAuth).
    ///
    /// A cache hit goes straight to the inner service's future; only a cache miss
    /// (or a rate limit kept in Redis) allocates, for the awaited check.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // The request's span (disabled unless a subscriber wants it), entered
        // while the inner service runs.
        span: tracing::Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Checking {
            check: Check,
            inner: Option<S>,
            request: Option<Request<B>>,
            rejection: Arc<dyn RejectionHandler>,
        },
        Inner {
            #[pin]
            future: S::Future,
            rate: Option<Rated>,
        },
        Rejected {
            response: Option<Response<RejectionBody>>,
        },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn inner(future: S::Future, rate: Option<Rated>, span: tracing::Span) -> Self {
        Self {
            state: State::Inner { future, rate },
            span,
        }
    }

    pub(crate) fn rejected(response: Response<RejectionBody>, span: tracing::Span) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
            span,
        }
    }

    pub(crate) fn checking(
        check: Check,
        inner: S,
        request: Request<B>,
        rejection: Arc<dyn RejectionHandler>,
        span: tracing::Span,
    ) -> Self {
        Self {
            state: State::Checking {
                check,
                inner: Some(inner),
                request: Some(request),
                rejection,
            },
            span,
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A disabled span has nothing to enter.
        let _entered = (!this.span.is_disabled()).then(|| this.span.enter());
        loop {
            match this.state.as_mut().project() {
                StateProj::Inner { future, rate } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(rate) = rate.take() {
                        add_rate_headers(response.headers_mut(), rate);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::rejection)));
                }
                StateProj::Checking {
                    check,
                    inner,
                    request,
                    rejection,
                } => {
                    let outcome = ready!(check.as_mut().poll(cx));
                    let next = match outcome {
                        Ok(admitted) => {
                            record_key(this.span, &admitted.key);
                            let mut request = request
                                .take()
                                .expect("ResponseFuture polled after completion");
                            insert_extensions(&mut request, admitted.key);
                            let mut inner = inner
                                .take()
                                .expect("ResponseFuture polled after completion");
                            State::Inner {
                                future: inner.call(request),
                                rate: admitted.rate,
                            }
                        }
                        Err(refused) => {
                            this.span
                                .record("outcome", super::outcome::outcome(refused.rejection));
                            State::Rejected {
                                response: Some(refusal_response(&**rejection, refused)),
                            }
                        }
                    };
                    this.state.set(next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, sync::atomic::Ordering};

    use bytes::Bytes;
    use http::{HeaderValue, StatusCode, header};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;

    use crate::{
        ApiKeyAuth, ApiKeyValidator, Rejection, RejectionBody,
        headers::X_API_KEY,
        key::KeyPair,
        testing::fixtures::{Scripted, pepper},
    };

    async fn ok(_: http::Request<Full<Bytes>>) -> Result<http::Response<Full<Bytes>>, Infallible> {
        Ok(http::Response::new(Full::from("inner")))
    }

    fn request(credential: &str) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::default());
        request
            .headers_mut()
            .insert(X_API_KEY, HeaderValue::from_str(credential).unwrap());
        request
    }

    #[tokio::test]
    async fn a_store_failure_while_checking_is_a_503_with_retry_after() {
        let repository = Scripted::default();
        repository.failing.store(true, Ordering::SeqCst);
        let service = ApiKeyAuth::new(
            tower::service_fn(ok),
            ApiKeyValidator::new(repository.clone(), pepper()),
        );
        let credential = KeyPair::generate().unwrap().credential();
        let response = service.oneshot(request(&credential)).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(repository.lookups(), 1);
    }

    #[tokio::test]
    async fn the_rejection_handler_answers_after_a_store_check() {
        let repository = Scripted::default();
        let service = ApiKeyAuth::new(
            tower::service_fn(ok),
            ApiKeyValidator::new(repository.clone(), pepper()),
        )
        .with_rejection(|rejection: Rejection| {
            let mut response = http::Response::new(RejectionBody::from(format!("{rejection:?}")));
            *response.status_mut() = StatusCode::IM_A_TEAPOT;
            response
        });
        let credential = KeyPair::generate().unwrap().credential();
        let response = service.oneshot(request(&credential)).await.unwrap();
        assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "InvalidCredential");
        assert_eq!(
            repository.lookups(),
            1,
            "the refusal came from the store check"
        );
    }
}
