//! The token form of a credential (CONTRACT §14.1): `P_` + the public body +
//! the secret body + a 6-character checksum, for a key prefix `P` that the
//! host chooses, so that secret scanners can recognise a leaked key and rule
//! out false positives without asking anyone.
//!
//! The checksum is the CRC-32 (IEEE, as zlib's `crc32`) of everything before
//! it, written in base 62 (`0-9A-Za-z`, most significant digit first,
//! left-padded with `0` to 6 characters). The token is only another spelling
//! of `pk_…:sk_…`: storage and hashing do not change.

use std::{fmt, str::FromStr};

use zeroize::Zeroizing;

use super::{KEY_BODY_LEN, PUBLIC_KEY_PREFIX, PublicKey, SECRET_KEY_PREFIX, SecretKey};

/// Length of a token's checksum.
pub const CHECKSUM_LEN: usize = 6;
/// Shortest key prefix.
pub const MIN_PREFIX_LEN: usize = 2;
/// Longest key prefix.
pub const MAX_PREFIX_LEN: usize = 16;

/// The checksum's digits, in order of value.
const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A host's key prefix `P`, `[a-z][a-z0-9]{1,15}`: the start of every token
/// (`P_…`), and what a secret scanner looks for.
///
/// Choose one that names the service (`acme`, `acmeprod`): it is public and
/// appears in every token the service hands out. Changing it later makes
/// every token handed out before it malformed (the `pk_…:sk_…` spelling of
/// the same keys keeps working).
///
/// ```
/// use tower_api_keys::{KeyPair, key::KeyPrefix};
///
/// let prefix: KeyPrefix = "acme".parse()?;
/// assert_eq!(prefix.as_str(), "acme");
/// assert!("Acme".parse::<KeyPrefix>().is_err());
///
/// let pair = KeyPair::generate()?;
/// let token = prefix.token(&pair.public_key, &pair.secret_key);
/// assert!(token.expose().starts_with("acme_"));
/// assert_eq!(token.expose().len(), prefix.token_len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyPrefix {
    bytes: [u8; MAX_PREFIX_LEN],
    len: u8,
}

impl KeyPrefix {
    /// Checks `text` against `[a-z][a-z0-9]{1,15}`.
    ///
    /// # Errors
    ///
    /// [`InvalidKeyPrefix`] for anything else (its message says what a prefix is).
    pub fn new(text: &str) -> Result<Self, InvalidKeyPrefix> {
        let bytes = text.as_bytes();
        let shaped = (MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&bytes.len())
            && bytes[0].is_ascii_lowercase()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !shaped {
            return Err(InvalidKeyPrefix);
        }
        let mut prefix = Self {
            bytes: [0; MAX_PREFIX_LEN],
            len: 0,
        };
        prefix.bytes[..bytes.len()].copy_from_slice(bytes);
        // At most 16, checked above.
        prefix.len = bytes.len() as u8;
        Ok(prefix)
    }

    /// The prefix, without the `_` that follows it in a token.
    pub fn as_str(&self) -> &str {
        // Only ASCII was copied in: this never falls back.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length of a token with this prefix: the prefix, `_`, 64 characters of
    /// key and 6 of checksum.
    pub fn token_len(&self) -> usize {
        usize::from(self.len) + 1 + 2 * KEY_BODY_LEN + CHECKSUM_LEN
    }

    /// The token of a key pair, `P_` + public body + secret body + checksum.
    /// Never log it.
    pub fn token(&self, public_key: &PublicKey, secret_key: &SecretKey) -> Token {
        let mut text = Zeroizing::new(String::with_capacity(self.token_len()));
        text.push_str(self.as_str());
        text.push('_');
        text.push_str(&public_key.as_str()[PUBLIC_KEY_PREFIX.len()..]);
        text.push_str(&secret_key.expose()[SECRET_KEY_PREFIX.len()..]);
        let sum = checksum(text.as_bytes());
        // The digits are ASCII.
        text.extend(sum.iter().map(|&b| char::from(b)));
        Token(text)
    }

    /// Whether `value` starts with `P_`: a Bearer value that is ours.
    pub(crate) fn starts(&self, value: &[u8]) -> bool {
        let prefix = self.as_bytes();
        value.len() > prefix.len() && value.starts_with(prefix) && value[prefix.len()] == b'_'
    }

    /// The public and secret bodies of a token with this prefix and a right
    /// checksum; `None` for anything else. Allocates nothing.
    pub(crate) fn split_token<'a>(&self, value: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        if value.len() != self.token_len() || !self.starts(value) {
            return None;
        }
        let (signed, sum) = value.split_at(value.len() - CHECKSUM_LEN);
        let bodies = &signed[usize::from(self.len) + 1..];
        let (public, secret) = bodies.split_at(KEY_BODY_LEN);
        // Only a value of the right length and prefix costs a CRC; the caller
        // checks the bodies' alphabet.
        (checksum(signed) == *sum).then_some((public, secret))
    }
}

impl FromStr for KeyPrefix {
    type Err = InvalidKeyPrefix;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl TryFrom<&str> for KeyPrefix {
    type Error = InvalidKeyPrefix;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        Self::new(text)
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyPrefix").field(&self.as_str()).finish()
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key prefix that is not `[a-z][a-z0-9]{1,15}`.
///
/// Carries no copy of the offending value (it may be a misplaced secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid key prefix: expected 2 to 16 characters of a-z and 0-9, starting with a letter (e.g. `acme`)"
)]
pub struct InvalidKeyPrefix;

/// A whole credential as handed to its owner once: the token form `P_…`
/// when the host configured a [`KeyPrefix`], else `pk_…:sk_…`.
///
/// Like [`SecretKey`], its `Debug` output is redacted, it has no `Display`,
/// and its memory is zeroed on drop.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token of a key pair under `prefix`, or its `pk_…:sk_…` credential
    /// without one.
    pub fn new(prefix: Option<&KeyPrefix>, public_key: &PublicKey, secret_key: &SecretKey) -> Self {
        match prefix {
            Some(prefix) => prefix.token(public_key, secret_key),
            None => Self(Zeroizing::new(super::credential(
                public_key.as_str(),
                secret_key,
            ))),
        }
    }

    /// The token in clear. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A regular expression for secret scanners (GitHub, GitLab, gitleaks,
/// trufflehog) that matches exactly the credentials of this service in text:
/// the token form of `prefix`, when there is one, and `pk_…:sk_…`, each
/// between word boundaries. It checks the shape only; the checksum, which a
/// regular expression cannot compute, rules out what merely looks alike.
///
/// ```
/// use tower_api_keys::key::{KeyPrefix, token::scanning_regex};
///
/// let acme = KeyPrefix::new("acme")?;
/// assert_eq!(
///     scanning_regex(Some(&acme)),
///     r"\b(?:acme_[A-Za-z0-9]{70}|pk_[A-Za-z0-9]{32}:sk_[A-Za-z0-9]{32})\b"
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn scanning_regex(prefix: Option<&KeyPrefix>) -> String {
    let body = KEY_BODY_LEN;
    let credential = format!("pk_[A-Za-z0-9]{{{body}}}:sk_[A-Za-z0-9]{{{body}}}");
    match prefix {
        Some(prefix) => format!(
            r"\b(?:{prefix}_[A-Za-z0-9]{{{}}}|{credential})\b",
            2 * body + CHECKSUM_LEN
        ),
        None => format!(r"\b{credential}\b"),
    }
}

/// The 6 base-62 digits of the CRC-32 of `signed`.
pub(crate) fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    base62(crc32fast::hash(signed))
}

/// `value` in base 62, most significant digit first, left-padded with `0`
/// (62^6 > 2^32: six digits always suffice).
fn base62(mut value: u32) -> [u8; CHECKSUM_LEN] {
    let mut digits = [DIGITS[0]; CHECKSUM_LEN];
    for digit in digits.iter_mut().rev() {
        *digit = DIGITS[(value % 62) as usize];
        value /= 62;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{Credential, KeyPair};

    // Computed independently with Python:
    // zlib.crc32(signed), then base 62 over "0-9A-Za-z", padded to 6.
    const VECTORS: [(&str, &str, &str, &str); 3] = [
        (
            "acme",
            "pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij",
            "sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6",
            "acme_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij5cQiqrdARB4q5yzCfkxZ60PitIFPL5t62Rki9u",
        ),
        (
            "tak9",
            "pk_Ndhz3gUiu1AV2DSc6pHgH89HNra53GZI",
            "sk_EhcWqXqUCSWVsT9XxehrSv91pULUlEwk",
            "tak9_Ndhz3gUiu1AV2DSc6pHgH89HNra53GZIEhcWqXqUCSWVsT9XxehrSv91pULUlEwk2oChDR",
        ),
        (
            "ab",
            "pk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sk_00000000000000000000000000000000",
            "ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA000000000000000000000000000000002t3cYj",
        ),
    ];

    fn prefix(text: &str) -> KeyPrefix {
        KeyPrefix::new(text).unwrap()
    }

    #[test]
    fn tokens_match_independently_computed_vectors() {
        for (p, pk, sk, token) in VECTORS {
            let made = prefix(p).token(
                &PublicKey::parse(pk).unwrap(),
                &SecretKey::parse(sk).unwrap(),
            );
            assert_eq!(made.expose(), token);
            let parsed = Credential::parse_with_prefix(token, Some(&prefix(p))).unwrap();
            assert_eq!(parsed.public_key(), pk);
            assert_eq!(parsed.secret_key(), sk);
        }
    }

    #[test]
    fn base62_pads_and_reaches_the_largest_checksum() {
        assert_eq!(&base62(0), b"000000");
        assert_eq!(&base62(61), b"00000z");
        assert_eq!(&base62(62), b"000010");
        // Computed with Python, as above.
        assert_eq!(&base62(u32::MAX), b"4gfFC3");
        assert_eq!(&base62(2_242_359_574), b"2Rki9u");
    }

    #[test]
    fn prefixes_follow_the_contract() {
        for good in ["ab", "acme", "a1", "z0123456789abcde"] {
            assert_eq!(prefix(good).as_str(), good);
        }
        for bad in [
            "",
            "a",
            "1acme",
            "Acme",
            "acme_",
            "ac-me",
            "a0123456789abcdef",
            "acmé",
            " acme",
        ] {
            assert_eq!(KeyPrefix::new(bad), Err(InvalidKeyPrefix), "{bad:?}");
        }
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let (p, _, _, token) = VECTORS[0];
        let prefix = prefix(p);
        let bytes = token.as_bytes();
        for position in 0..bytes.len() {
            for &byte in DIGITS.iter().chain(b"_:-") {
                if byte == bytes[position] {
                    continue;
                }
                let mut changed = bytes.to_vec();
                changed[position] = byte;
                assert!(
                    Credential::parse_bytes_with_prefix(&changed, Some(&prefix)).is_err(),
                    "{byte:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn foreign_prefixes_lengths_and_missing_prefixes_are_refused() {
        let (p, _, _, token) = VECTORS[0];
        let acme = prefix(p);
        // The right token under another prefix, or with none configured.
        assert!(Credential::parse_with_prefix(token, Some(&prefix("acmf"))).is_err());
        assert!(Credential::parse_with_prefix(token, None).is_err());
        assert!(Credential::parse(token).is_err());
        // Another prefix's valid token.
        let (_, _, _, other) = VECTORS[1];
        assert!(Credential::parse_with_prefix(other, Some(&acme)).is_err());
        for bad in [
            String::new(),
            "acme_".to_owned(),
            token[..token.len() - 1].to_owned(),
            format!("{token}0"),
            format!("ACME{}", &token[4..]),
            token.replacen('_', "-", 1),
        ] {
            assert!(
                Credential::parse_with_prefix(&bad, Some(&acme)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_credential_form_still_parses_with_a_prefix() {
        let (p, pk, sk, _) = VECTORS[0];
        let credential = format!("{pk}:{sk}");
        let parsed = Credential::parse_with_prefix(&credential, Some(&prefix(p))).unwrap();
        assert_eq!(parsed.public_key(), pk);
    }

    #[test]
    fn generated_tokens_parse_back_to_their_pair() {
        let acme = prefix("acme");
        for _ in 0..50 {
            let pair = KeyPair::generate().unwrap();
            let token = acme.token(&pair.public_key, &pair.secret_key);
            let parsed = Credential::parse_with_prefix(token.expose(), Some(&acme)).unwrap();
            assert_eq!(parsed.public_key(), pair.public_key.as_str());
            assert_eq!(parsed.secret_key(), pair.secret_key.expose());
        }
    }

    #[test]
    fn without_a_prefix_the_token_is_the_credential() {
        let pair = KeyPair::generate().unwrap();
        let token = Token::new(None, &pair.public_key, &pair.secret_key);
        assert_eq!(token.expose(), pair.credential());
    }

    #[test]
    fn debug_redacts_the_token() {
        let pair = KeyPair::generate().unwrap();
        let token = prefix("acme").token(&pair.public_key, &pair.secret_key);
        let debug = format!("{token:?}");
        assert!(!debug.contains(&pair.secret_key.expose()[3..]), "{debug}");
    }
}
