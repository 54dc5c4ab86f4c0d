//! Reading a request body: JSON by `Content-Type`, at most
//! [`MAX_BODY_BYTES`], declared or streamed; raw bytes up to a given limit
//! (leak reports, whose signature covers the exact bytes).

use std::time::Duration;

use axum::{
    body::{Body, Bytes},
    extract::Request,
    http::{HeaderMap, header},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

use super::{MAX_BODY_BYTES, error::ApiError};
use crate::manager::rules::FieldError;

pub(super) fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.rsplit_once('+').is_some_and(|(ty, suffix)| {
            ty.starts_with("application/") && suffix.eq_ignore_ascii_case("json")
        })
}

/// How much of a refused body is still read, and thrown away, before the
/// answer. A client that writes its whole body before it reads then gets the
/// answer, on a connection that stays open, instead of a reset. A body
/// declared longer than this is refused without reading it.
const DRAIN_BYTES: u64 = 1 << 20;

/// How long reading a refused body may delay its answer.
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// Reads the body up to [`MAX_BODY_BYTES`], declared or streamed. `None` for an
/// empty body when none is `required`. A body must be JSON by `Content-Type`.
pub(super) async fn json_body(request: Request, required: bool) -> Result<Option<Value>, ApiError> {
    let (parts, body) = request.into_parts();
    if required && !is_json(&parts.headers) {
        let drain = drain_allowance(&parts.headers);
        return Err(refuse(body, drain, ApiError::UnsupportedMediaType).await);
    }
    let bytes = match bytes_up_to(&parts.headers, body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(BodyError::TooLarge) => return Err(ApiError::TooLarge),
        Err(BodyError::Unreadable) => return Err(ApiError::MalformedJson),
    };
    if bytes.is_empty() && !required {
        return Ok(None);
    }
    if !is_json(&parts.headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| ApiError::MalformedJson)
}

/// Why a body could not be read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyError {
    /// Longer than the limit, declared or streamed.
    TooLarge,
    /// The connection failed while the body was read.
    Unreadable,
}

/// Reads a body of at most `limit` bytes, declared or streamed; what is left
/// of a longer one is drained (within [`DRAIN_BYTES`] and [`DRAIN_TIME`])
/// before the refusal.
pub(super) async fn bytes_up_to(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<Bytes, BodyError> {
    if declared_length(headers).is_some_and(|len| len > limit as u64) {
        let drain = drain_allowance(headers);
        return Err(refuse(body, drain, BodyError::TooLarge).await);
    }
    match Limited::new(&mut body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => {
            Err(refuse(body, DRAIN_BYTES, BodyError::TooLarge).await)
        }
        Err(_) => Err(BodyError::Unreadable),
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// What may be read out of a body refused before reading it: nothing when the
/// client waits for `100 Continue` (it has not sent the body) or when the body
/// is declared past the bound.
fn drain_allowance(headers: &HeaderMap) -> u64 {
    let unsent = headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if unsent || declared_length(headers).is_some_and(|len| len > DRAIN_BYTES) {
        0
    } else {
        DRAIN_BYTES
    }
}

/// Reads out what is left of a refused body, at most `limit` bytes within
/// [`DRAIN_TIME`], then gives back `error` to answer with. Past either limit
/// the answer goes out at once and the server closes the connection.
async fn refuse<E>(mut body: Body, limit: u64, error: E) -> E {
    if limit == 0 {
        return error;
    }
    let drain = async {
        let mut left = limit;
        while let Some(Ok(frame)) = body.frame().await {
            let read = frame.data_ref().map_or(0, |data| data.len() as u64);
            left = left.saturating_sub(read);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
    error
}

pub(super) fn body_object(value: Value) -> Result<Map<String, Value>, ApiError> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::Invalid(vec![FieldError::new(
            "body",
            "must be a JSON object",
        )])),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn json_content_types() {
        let accepts = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            is_json(&headers)
        };
        assert!(accepts("application/json"));
        assert!(accepts("Application/JSON; charset=utf-8"));
        assert!(accepts("application/merge-patch+json"));
        assert!(!accepts("text/json"));
        assert!(!accepts("text/plain"));
        assert!(!accepts("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
