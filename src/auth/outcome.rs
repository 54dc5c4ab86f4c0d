//! What the service and its future both do with a check's outcome: label it,
//! record it on the request's span, hand an admitted key to the inner service
//! and answer a refusal.

use http::{HeaderMap, Request, Response, header};

use crate::{
    identity::AuthenticatedKey,
    policy::rejection::{Rejection, RejectionBody, RejectionHandler},
    ratelimit::headers::{RATELIMIT, RATELIMIT_POLICY, Rated},
    validator::admission::Refused,
};

/// The outcome label of a refusal, as in the metrics.
pub(crate) fn outcome(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::MissingCredential => "missing",
        Rejection::MalformedCredential => "malformed",
        Rejection::InvalidCredential => "invalid",
        Rejection::StoreUnavailable => "unavailable",
        Rejection::RateLimited => "rate_limited",
        Rejection::InsufficientScope | Rejection::AddressNotAllowed => "forbidden",
    }
}

/// Records an admitted key on the request's span: ids only, never the
/// secret, the credential or the hash.
pub(crate) fn record_key(span: &tracing::Span, key: &AuthenticatedKey) {
    // Formatting the ids costs more than the rest of a disabled span.
    if span.is_disabled() {
        return;
    }
    span.record("outcome", "valid");
    span.record("key_id", tracing::field::display(key.key_id()));
    span.record("account_id", tracing::field::display(key.account_id()));
}

/// Puts an admitted key, and its account and key ids, in the request's
/// extensions for the inner service.
pub(crate) fn insert_extensions<B>(request: &mut Request<B>, key: AuthenticatedKey) {
    let extensions = request.extensions_mut();
    extensions.insert(key.account_id());
    extensions.insert(key.key_id());
    extensions.insert(key);
}

/// Adds the rate-limit state of a limited key's request to its response: the
/// `RateLimit-Policy` and `RateLimit` header fields (DECISIONS.md, "Rate limits in detail").
pub(crate) fn add_rate_headers(headers: &mut HeaderMap, rate: Rated) {
    headers.insert(RATELIMIT, rate.decision.ratelimit_header());
    headers.insert(RATELIMIT_POLICY, rate.policy);
}

/// The response to a refusal: the handler's, plus the rate-limit headers and
/// the real `Retry-After` of a `429`.
pub(crate) fn refusal_response(
    handler: &dyn RejectionHandler,
    refused: Refused,
) -> Response<RejectionBody> {
    tracing::debug!(rejection = %refused.rejection, "API key rejected");
    let mut response = handler.respond(refused.rejection);
    if let Some(rate) = refused.rate {
        let headers = response.headers_mut();
        if refused.rejection == Rejection::RateLimited
            && let Some(seconds) = rate.decision.retry_after_seconds()
        {
            headers.insert(header::RETRY_AFTER, seconds.into());
        }
        add_rate_headers(headers, rate);
    }
    response
}
