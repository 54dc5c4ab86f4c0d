use http::{HeaderMap, header::AUTHORIZATION};

use crate::{
    headers::X_API_KEY,
    key::{Credential, KeyPrefix, MalformedCredential},
};

/// Finds the API-key credential `pk_…:sk_…` in a request's headers; the same
/// as [`extract_credential_with_prefix`] without a key prefix.
pub fn extract_credential(
    headers: &HeaderMap,
) -> Result<Option<Credential<'_>>, MalformedCredential> {
    extract_credential_with_prefix(headers, None)
}

/// Finds the API-key credential in a request's headers, in either spelling
/// when the host configured a key `prefix` (`pk_…:sk_…` or the token `P_…`).
///
/// - `X-API-Key` wins when present; more than one `X-API-Key` header is malformed.
/// - Otherwise `Authorization: Bearer pk_…` or `Bearer P_…` (scheme
///   case-insensitive, `pk_` and `P_` case-sensitive) is ours. Any other
///   `Authorization` value (`Basic …`, a JWT, `Bearer PK_…`, another
///   service's token) belongs to the host and counts as no credential.
/// - A credential that is ours but not exactly `pk_<32>:sk_<32>` or a token
///   of `prefix` with its right checksum is malformed. The shape check looks
///   at the length first, so an over-long value costs nothing more.
///
/// `Ok(None)` means no credential at all.
pub fn extract_credential_with_prefix<'h>(
    headers: &'h HeaderMap,
    prefix: Option<&KeyPrefix>,
) -> Result<Option<Credential<'h>>, MalformedCredential> {
    let mut api_keys = headers.get_all(&X_API_KEY).iter();
    if let Some(value) = api_keys.next() {
        if api_keys.next().is_some() {
            return Err(MalformedCredential);
        }
        return Credential::parse_bytes_with_prefix(trim(value.as_bytes()), prefix).map(Some);
    }
    let mut ours = None;
    for value in headers.get_all(AUTHORIZATION) {
        if let Some(token) = bearer_api_key(value.as_bytes(), prefix) {
            if ours.is_some() {
                return Err(MalformedCredential);
            }
            ours = Some(token);
        }
    }
    ours.map(|token| Credential::parse_bytes_with_prefix(token, prefix))
        .transpose()
}

/// The token of `Bearer pk_…` or `Bearer P_…`, or `None` when the value is
/// not ours.
fn bearer_api_key<'v>(value: &'v [u8], prefix: Option<&KeyPrefix>) -> Option<&'v [u8]> {
    let value = trim(value);
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = trim(rest);
    let ours = token.starts_with(b"pk_") || prefix.is_some_and(|prefix| prefix.starts(token));
    ours.then_some(token)
}

/// Removes optional whitespace (RFC 9110 §5.6.3) around a field value. HTTP/1
/// parsers already do; this covers headers built by hand.
fn trim(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    const GOOD: &str = "pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij:sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6";
    const OTHER: &str = "pk_Ndhz3gUiu1AV2DSc6pHgH89HNra53GZI:sk_EhcWqXqUCSWVsT9XxehrSv91pULUlEwk";

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        map
    }

    fn public_key(map: &HeaderMap) -> Result<Option<String>, MalformedCredential> {
        extract_credential(map).map(|c| c.map(|c| c.public_key().to_owned()))
    }

    #[test]
    fn no_headers_is_no_credential() {
        assert_eq!(public_key(&HeaderMap::new()), Ok(None));
    }

    #[test]
    fn x_api_key_and_bearer_are_read() {
        assert_eq!(
            public_key(&headers(&[("x-api-key", GOOD.as_bytes())]))
                .unwrap()
                .unwrap(),
            &GOOD[..35]
        );
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme} {GOOD}");
            assert_eq!(
                public_key(&headers(&[("authorization", value.as_bytes())]))
                    .unwrap()
                    .unwrap(),
                &GOOD[..35]
            );
        }
    }

    #[test]
    fn x_api_key_wins_over_bearer() {
        let bearer = format!("Bearer {OTHER}");
        let map = headers(&[
            ("authorization", bearer.as_bytes()),
            ("x-api-key", GOOD.as_bytes()),
        ]);
        assert_eq!(public_key(&map).unwrap().unwrap(), &GOOD[..35]);
    }

    #[test]
    fn foreign_authorization_is_no_credential() {
        for value in [
            "Basic dXNlcjpwYXNz",
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
            "Bearer PK_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij:sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6",
            "Bearer",
            "Token pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij:sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6",
            "",
        ] {
            assert_eq!(
                public_key(&headers(&[("authorization", value.as_bytes())])),
                Ok(None),
                "{value}"
            );
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        let long = "a".repeat(8192);
        for value in [
            &b""[..],
            b"pk_short:sk_short",
            long.as_bytes(),
            b"pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij:sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t\xff",
        ] {
            assert_eq!(
                public_key(&headers(&[("x-api-key", value)])),
                Err(MalformedCredential)
            );
        }
        assert_eq!(
            public_key(&headers(&[("authorization", b"Bearer pk_short")])),
            Err(MalformedCredential)
        );
    }

    const TOKEN: &str =
        "acme_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij5cQiqrdARB4q5yzCfkxZ60PitIFPL5t62Rki9u";

    fn with_prefix(map: &HeaderMap) -> Result<Option<String>, MalformedCredential> {
        let acme = KeyPrefix::new("acme").unwrap();
        extract_credential_with_prefix(map, Some(&acme))
            .map(|c| c.map(|c| c.public_key().to_owned()))
    }

    #[test]
    fn a_token_of_the_prefix_is_read_from_either_header() {
        for (name, value) in [
            ("x-api-key", TOKEN.to_owned()),
            ("authorization", format!("Bearer {TOKEN}")),
            ("authorization", format!("bearer  {TOKEN} ")),
        ] {
            let map = headers(&[(name, value.as_bytes())]);
            assert_eq!(with_prefix(&map).unwrap().unwrap(), &GOOD[..35]);
            // Without the prefix configured, the token is not a credential.
            let expected = if name == "x-api-key" {
                Err(MalformedCredential)
            } else {
                Ok(None)
            };
            assert_eq!(public_key(&map), expected, "{value}");
        }
        let map = headers(&[("x-api-key", GOOD.as_bytes())]);
        assert_eq!(with_prefix(&map).unwrap().unwrap(), &GOOD[..35]);
    }

    #[test]
    fn a_bad_token_is_malformed_and_a_foreign_bearer_is_no_credential() {
        let bad = TOKEN.replace("2Rki9u", "2Rki9v");
        let foreign = TOKEN.replacen("acme_", "acmf_", 1);
        for value in [&bad, &foreign] {
            let map = headers(&[("x-api-key", value.as_bytes())]);
            assert_eq!(with_prefix(&map), Err(MalformedCredential), "{value}");
        }
        let bearer = format!("Bearer {bad}");
        assert_eq!(
            with_prefix(&headers(&[("authorization", bearer.as_bytes())])),
            Err(MalformedCredential)
        );
        for value in [
            format!("Bearer {foreign}"),
            format!("Bearer {}", TOKEN.to_uppercase()),
            "Bearer acme".to_owned(),
            "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned(),
        ] {
            assert_eq!(
                with_prefix(&headers(&[("authorization", value.as_bytes())])),
                Ok(None),
                "{value}"
            );
        }
    }

    #[test]
    fn several_x_api_key_headers_are_malformed() {
        let map = headers(&[
            ("x-api-key", GOOD.as_bytes()),
            ("x-api-key", GOOD.as_bytes()),
        ]);
        assert_eq!(public_key(&map), Err(MalformedCredential));
    }

    #[test]
    fn surrounding_whitespace_is_not_part_of_the_credential() {
        let value = format!(" \t{GOOD}\t ");
        assert!(
            public_key(&headers(&[("x-api-key", value.as_bytes())]))
                .unwrap()
                .is_some()
        );
    }
}
