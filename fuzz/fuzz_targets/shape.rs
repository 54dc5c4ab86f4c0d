//! The contract's credential shape, written out independently of the crate's
//! parser, and the invariants every accepted credential must meet.

use tower_api_keys::Credential;

/// `pk_` + 32 `[A-Za-z0-9]`, `:`, `sk_` + 32 `[A-Za-z0-9]`: exactly 71 bytes.
pub fn is_credential(bytes: &[u8]) -> bool {
    fn half(bytes: &[u8], prefix: &[u8]) -> bool {
        bytes.len() == 35
            && &bytes[..3] == prefix
            && bytes[3..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_lowercase() || b.is_ascii_digit())
    }
    bytes.len() == 71
        && bytes[35] == b':'
        && half(&bytes[..35], b"pk_")
        && half(&bytes[36..], b"sk_")
}

/// Panics unless `credential` is well-formed and is exactly `source`.
pub fn assert_credential(credential: &Credential<'_>, source: &[u8]) {
    let public = credential.public_key();
    let secret = credential.secret_key();
    let joined = format!("{public}:{secret}");
    assert_eq!(
        joined.len(),
        71,
        "accepted a credential of {} bytes",
        joined.len()
    );
    assert!(
        is_credential(joined.as_bytes()),
        "accepted a malformed credential"
    );
    assert_eq!(
        joined.as_bytes(),
        source,
        "the parsed halves are not the input"
    );
    // Round trip: the formatted pair parses again to the same halves.
    let again = Credential::parse(&joined).expect("a formatted credential must parse");
    assert_eq!(again.public_key(), public);
    assert_eq!(again.secret_key(), secret);
    assert!(tower_api_keys::key::PublicKey::parse(public).is_ok());
    assert!(tower_api_keys::key::SecretKey::parse(secret).is_ok());
}
