//! Arbitrary bytes into the credential parser with a key prefix (`acme`),
//! which also accepts the token form `acme_<32><32><checksum>`.
//!
//! Invariants: never panics; `parse_bytes_with_prefix` accepts exactly the
//! contract's `pk_…:sk_…` shape or a token of `acme` whose checksum is right,
//! checked against an independent model (a bitwise CRC-32 and base 62 written
//! out here); a parsed token's keys are `pk_` and `sk_` + its two bodies, and
//! `KeyPrefix::token` of them gives the input back; `parse_with_prefix` on
//! UTF-8 input agrees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_api_keys::{
    Credential, KeyPrefix,
    key::{PublicKey, SecretKey},
};

mod shape;

const PREFIX: &[u8] = b"acme";

/// CRC-32 (IEEE, reflected, as zlib's), one bit at a time.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// `value` as 6 base-62 digits `0-9A-Za-z`, most significant first.
fn base62(value: u32) -> Vec<u8> {
    let digits = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut value = u64::from(value);
    let mut out = vec![b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = digits[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// `acme_` + 64 `[A-Za-z0-9]` + the right checksum.
fn is_token(bytes: &[u8]) -> bool {
    let signed_len = PREFIX.len() + 1 + 64;
    bytes.len() == signed_len + 6
        && bytes.starts_with(PREFIX)
        && bytes[PREFIX.len()] == b'_'
        && bytes[PREFIX.len() + 1..signed_len]
            .iter()
            .all(u8::is_ascii_alphanumeric)
        && bytes[signed_len..] == base62(crc32(&bytes[..signed_len]))[..]
}

fuzz_target!(|data: &[u8]| {
    let prefix = KeyPrefix::new("acme").unwrap();
    let parsed = Credential::parse_bytes_with_prefix(data, Some(&prefix));
    let (credential, token) = (shape::is_credential(data), is_token(data));
    assert_eq!(
        parsed.is_ok(),
        credential || token,
        "parse_bytes_with_prefix disagrees with the model"
    );
    if let Ok(parsed) = &parsed {
        if token {
            let start = PREFIX.len() + 1;
            assert_eq!(&parsed.public_key().as_bytes()[3..], &data[start..start + 32]);
            assert_eq!(&parsed.secret_key().as_bytes()[3..], &data[start + 32..start + 64]);
            let again = prefix.token(
                &PublicKey::parse(parsed.public_key()).unwrap(),
                &SecretKey::parse(parsed.secret_key()).unwrap(),
            );
            assert_eq!(again.expose().as_bytes(), data, "the token does not round-trip");
        } else {
            shape::assert_credential(parsed, data);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert_eq!(
            Credential::parse_with_prefix(text, Some(&prefix)).is_ok(),
            parsed.is_ok(),
            "parse_with_prefix and parse_bytes_with_prefix disagree"
        );
    }
});
