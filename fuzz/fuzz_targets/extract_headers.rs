//! A whole header map, built from fuzz input, into `extract_credential`.
//!
//! Input format: lines separated by `\n`. The first byte of a line picks the
//! header name (modulo 6: `x-api-key`, `authorization`, `X-Api-Key`,
//! `AUTHORIZATION`, `x-api-keys`, `cookie`); the rest is the value. Values that
//! `HeaderValue::from_bytes` refuses are skipped, as a server would never pass
//! them on.
//!
//! Invariants: never panics; `Ok(Some(c))` only for a well-formed credential that
//! is exactly one header's value (OWS-trimmed, or a Bearer token); the result
//! matches the contract's rules (X-API-Key wins, several are malformed, foreign
//! `Authorization` values are no credential).
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_api_keys::extract_credential;

mod shape;

const NAMES: [&str; 6] = [
    "x-api-key",
    "authorization",
    "X-Api-Key",
    "AUTHORIZATION",
    "x-api-keys",
    "cookie",
];

/// What the contract says `extract_credential` must return.
#[derive(Debug, PartialEq, Eq)]
enum Expected<'a> {
    None,
    Malformed,
    Credential(&'a [u8]),
}

/// The token of `Bearer pk_…` (scheme case-insensitive, `pk_` case-sensitive),
/// or `None` when the value is not ours.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let value = trim_ows(value);
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = trim_ows(rest);
    token.starts_with(b"pk_").then_some(token)
}

/// Optional whitespace (SP / HTAB) removed at both ends, as HTTP parsing does.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn expected<'a>(api_keys: &[&'a [u8]], authorizations: &[&'a [u8]]) -> Expected<'a> {
    let classify = |value: &'a [u8]| {
        if shape::is_credential(value) {
            Expected::Credential(value)
        } else {
            Expected::Malformed
        }
    };
    match api_keys {
        [] => {}
        [one] => return classify(trim_ows(one)),
        _ => return Expected::Malformed,
    }
    let ours: Vec<&[u8]> = authorizations
        .iter()
        .filter_map(|v| bearer_token(v))
        .collect();
    match ours.as_slice() {
        [] => Expected::None,
        [one] => classify(one),
        _ => Expected::Malformed,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some((&selector, value)) = line.split_first() else {
            continue;
        };
        let name = NAMES[usize::from(selector) % NAMES.len()];
        let Ok(value) = HeaderValue::from_bytes(value) else {
            continue;
        };
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), value);
    }

    let result = extract_credential(&map);

    let api_keys: Vec<&[u8]> = map
        .get_all("x-api-key")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let authorizations: Vec<&[u8]> = map
        .get_all("authorization")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let want = expected(&api_keys, &authorizations);
    match (&result, &want) {
        (Ok(None), Expected::None) | (Err(_), Expected::Malformed) => {}
        (Ok(Some(credential)), Expected::Credential(source)) => {
            shape::assert_credential(credential, source);
        }
        _ => panic!("extract_credential returned {result:?}, the contract says {want:?}"),
    }
});
