//! Arbitrary bytes into the credential parser.
//!
//! Invariants: never panics; `parse_bytes` accepts exactly the contract's shape
//! (71 bytes, `pk_`/`sk_`, alphanumeric bodies); whatever parses round-trips
//! through `format!("{pk}:{sk}")`; `parse` on UTF-8 input agrees with
//! `parse_bytes`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_api_keys::Credential;

mod shape;

fuzz_target!(|data: &[u8]| {
    let from_bytes = Credential::parse_bytes(data);
    assert_eq!(
        from_bytes.is_ok(),
        shape::is_credential(data),
        "parse_bytes disagrees with the contract's shape"
    );
    if let Ok(credential) = &from_bytes {
        shape::assert_credential(credential, data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let from_str = Credential::parse(text);
        assert_eq!(
            from_str.is_ok(),
            from_bytes.is_ok(),
            "parse and parse_bytes disagree"
        );
        if let Ok(credential) = &from_str {
            shape::assert_credential(credential, data);
        }
    }
});
