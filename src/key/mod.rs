//! Key material: generation, the `pk_…:sk_…` credential and its strict parser,
//! the [`token`] form `P_…` for a host's [`KeyPrefix`]; below it, what checks a secret: the [`hash`] of a secret under a pepper, the
//! pepper itself and the ring of peppers a validator knows.

pub mod hash;
pub(crate) mod pepper;
pub(crate) mod ring;
pub mod token;

pub use self::token::{InvalidKeyPrefix, KeyPrefix, Token};

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the random part of a public or secret key.
pub const KEY_BODY_LEN: usize = 32;
/// Prefix of every public key.
pub const PUBLIC_KEY_PREFIX: &str = "pk_";
/// Prefix of every secret key.
pub const SECRET_KEY_PREFIX: &str = "sk_";
/// Length of a public or secret key, prefix included (35).
pub const KEY_LEN: usize = PUBLIC_KEY_PREFIX.len() + KEY_BODY_LEN;
/// Length of a whole credential `pk_<32>:sk_<32>` (71).
pub const CREDENTIAL_LEN: usize = 2 * KEY_LEN + 1;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A public key, `pk_` followed by 32 characters of `[A-Za-z0-9]`.
///
/// The public key identifies a key pair and is not secret: it is stored in clear
/// and may be logged.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(String);

impl PublicKey {
    /// Parses a public key, refusing anything that is not exactly `pk_` + 32 alphanumerics.
    pub fn parse(value: &str) -> Result<Self, MalformedCredential> {
        if is_key_shaped(value.as_bytes(), PUBLIC_KEY_PREFIX) {
            Ok(Self(value.to_owned()))
        } else {
            Err(MalformedCredential)
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublicKey").field(&self.0).finish()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PublicKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A secret key, `sk_` followed by 32 characters of `[A-Za-z0-9]`.
///
/// Its `Debug` output is redacted, it has no `Display`, and its memory is zeroed
/// on drop. Read it with [`SecretKey::expose`] only where it must leave the process
/// (the one response that shows it to its owner).
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(String);

impl SecretKey {
    /// Parses a secret key, refusing anything that is not exactly `sk_` + 32 alphanumerics.
    pub fn parse(value: &str) -> Result<Self, MalformedCredential> {
        if is_key_shaped(value.as_bytes(), SECRET_KEY_PREFIX) {
            Ok(Self(value.to_owned()))
        } else {
            Err(MalformedCredential)
        }
    }

    /// The secret in clear. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// A freshly generated key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The public half, stored in clear.
    pub public_key: PublicKey,
    /// The secret half, shown to its owner once and stored only as a hash.
    pub secret_key: SecretKey,
}

impl KeyPair {
    /// Generates a key pair from the operating system's CSPRNG.
    ///
    /// One `getrandom` call fills a buffer that is mapped to the alphabet by
    /// rejection sampling (bytes `>= 248` are skipped so that every character is
    /// equally likely); a second call happens only when more than 32 of the 96
    /// bytes were rejected, which is vanishingly rare.
    ///
    /// # Errors
    ///
    /// Fails only if the operating system's random source fails.
    pub fn generate() -> Result<Self, RandomSourceError> {
        let mut body = [0u8; 2 * KEY_BODY_LEN];
        let mut pool = [0u8; 96];
        let mut filled = 0;
        while filled < body.len() {
            getrandom::fill(&mut pool).map_err(RandomSourceError)?;
            for &byte in &pool {
                // 248 = 4 * 62: the largest multiple of 62 that fits in a byte.
                if byte < 248 {
                    body[filled] = ALPHABET[usize::from(byte % 62)];
                    filled += 1;
                    if filled == body.len() {
                        break;
                    }
                }
            }
        }
        pool.zeroize();
        let mut public = String::with_capacity(KEY_LEN);
        public.push_str(PUBLIC_KEY_PREFIX);
        public.extend(body[..KEY_BODY_LEN].iter().map(|&b| char::from(b)));
        let mut secret = String::with_capacity(KEY_LEN);
        secret.push_str(SECRET_KEY_PREFIX);
        secret.extend(body[KEY_BODY_LEN..].iter().map(|&b| char::from(b)));
        body.zeroize();
        Ok(Self {
            public_key: PublicKey(public),
            secret_key: SecretKey(secret),
        })
    }

    /// The credential a client sends: `pk_…:sk_…`. Never log it.
    pub fn credential(&self) -> String {
        credential(&self.public_key.0, &self.secret_key)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .field("secret_key", &self.secret_key)
            .finish()
    }
}

/// A parsed credential: `pk_…:sk_…`, or the [`token`] form `P_…` when the host
/// configured a [`KeyPrefix`].
///
/// Parsing checks the exact shape (and a token's checksum) and nothing else;
/// it allocates nothing. Both halves are held inline, in their `pk_…` and
/// `sk_…` spellings whatever form was presented; the secret is zeroed on drop.
#[derive(Clone)]
pub struct Credential<'a> {
    public_key: [u8; KEY_LEN],
    secret_key: [u8; KEY_LEN],
    /// Borrowed from the presented value, as the shape of the API promises.
    _presented: std::marker::PhantomData<&'a [u8]>,
}

impl<'a> Credential<'a> {
    /// Parses `pk_<32 alphanumerics>:sk_<32 alphanumerics>`, exactly 71 bytes.
    ///
    /// Everything else is refused: other lengths, other characters, other
    /// prefixes (`PK_`, `pk-`), whitespace anywhere, a second `:`, a token.
    pub fn parse(value: &'a str) -> Result<Self, MalformedCredential> {
        Self::parse_bytes(value.as_bytes())
    }

    /// Same as [`Credential::parse`], for raw header bytes (which may not be UTF-8).
    pub fn parse_bytes(value: &'a [u8]) -> Result<Self, MalformedCredential> {
        Self::parse_bytes_with_prefix(value, None)
    }

    /// Parses either spelling: `pk_…:sk_…`, or with `prefix` also the token
    /// `P_<32><32><checksum>` of that prefix. A token of another prefix, or
    /// with a wrong checksum, is malformed.
    ///
    /// ```
    /// use tower_api_keys::{Credential, key::KeyPrefix};
    ///
    /// let acme: KeyPrefix = "acme".parse()?;
    /// let token = "acme_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij5cQiqrdARB4q5yzCfkxZ60PitIFPL5t62Rki9u";
    /// let credential = Credential::parse_with_prefix(token, Some(&acme))?;
    /// assert_eq!(credential.public_key(), "pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij");
    /// // One character off: the checksum no longer matches.
    /// let typo = token.replace("2Rki9u", "2Rki9v");
    /// assert!(Credential::parse_with_prefix(&typo, Some(&acme)).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse_with_prefix(
        value: &'a str,
        prefix: Option<&KeyPrefix>,
    ) -> Result<Self, MalformedCredential> {
        Self::parse_bytes_with_prefix(value.as_bytes(), prefix)
    }

    /// Same as [`Credential::parse_with_prefix`], for raw header bytes.
    pub fn parse_bytes_with_prefix(
        value: &'a [u8],
        prefix: Option<&KeyPrefix>,
    ) -> Result<Self, MalformedCredential> {
        // A token is at least 73 bytes: the two lengths never meet.
        let (public, secret) = if value.len() == CREDENTIAL_LEN {
            if value[KEY_LEN] != b':' {
                return Err(MalformedCredential);
            }
            let (public, rest) = value.split_at(KEY_LEN);
            let secret = &rest[1..];
            if !is_key_shaped(public, PUBLIC_KEY_PREFIX)
                || !is_key_shaped(secret, SECRET_KEY_PREFIX)
            {
                return Err(MalformedCredential);
            }
            (
                &public[PUBLIC_KEY_PREFIX.len()..],
                &secret[SECRET_KEY_PREFIX.len()..],
            )
        } else {
            let (public, secret) = prefix
                .and_then(|prefix| prefix.split_token(value))
                .ok_or(MalformedCredential)?;
            if !is_body_shaped(public) || !is_body_shaped(secret) {
                return Err(MalformedCredential);
            }
            (public, secret)
        };
        Ok(Self {
            public_key: spelled(PUBLIC_KEY_PREFIX, public),
            secret_key: spelled(SECRET_KEY_PREFIX, secret),
            _presented: std::marker::PhantomData,
        })
    }

    /// The public key, `pk_…`.
    pub fn public_key(&self) -> &str {
        // Checked ASCII: this never falls back.
        std::str::from_utf8(&self.public_key).unwrap_or_default()
    }

    /// The secret key in clear, `sk_…`. Never log it.
    pub fn secret_key(&self) -> &str {
        std::str::from_utf8(&self.secret_key).unwrap_or_default()
    }
}

impl Drop for Credential<'_> {
    fn drop(&mut self) {
        self.secret_key.zeroize();
    }
}

impl fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("public_key", &self.public_key())
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// `prefix` + `body` inline (both checked ASCII, `body` 32 bytes).
fn spelled(prefix: &str, body: &[u8]) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..prefix.len()].copy_from_slice(prefix.as_bytes());
    key[prefix.len()..].copy_from_slice(body);
    key
}

/// The credential `pk_…:sk_…` for a public key and its secret.
pub(crate) fn credential(public_key: &str, secret_key: &SecretKey) -> String {
    format!("{public_key}:{}", secret_key.expose())
}

/// The operating system's random source failed (it practically never does).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomSourceError(getrandom::Error);

/// The credential is not of the shape `pk_<32>:sk_<32>`.
///
/// Deliberately carries no copy of the offending value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid API key format, expected pk_xxx:sk_xxx")]
pub struct MalformedCredential;

/// A public key's text of the generated length (`pk_` and 32 characters),
/// held inline: what the caches key on and what an
/// [`AuthenticatedKey`](crate::AuthenticatedKey) carries.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PublicKeyBytes([u8; KEY_LEN]);

impl PublicKeyBytes {
    /// `None` for a text of another length.
    pub(crate) fn new(public_key: &str) -> Option<Self> {
        public_key.as_bytes().try_into().ok().map(Self)
    }

    /// The text back.
    pub(crate) fn as_str(&self) -> &str {
        // The bytes were copied from a `&str`: this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

fn is_key_shaped(value: &[u8], prefix: &str) -> bool {
    value.len() == KEY_LEN
        && value.starts_with(prefix.as_bytes())
        && is_body_shaped(&value[prefix.len()..])
}

/// Whether `body` is 32 characters of `[A-Za-z0-9]`.
fn is_body_shaped(body: &[u8]) -> bool {
    body.len() == KEY_BODY_LEN
        // A table and no early exit: the loop has no branch per byte.
        && body
            .iter()
            .fold(true, |shaped, &byte| shaped & ALPHANUMERIC[usize::from(byte)])
}

/// `ALPHANUMERIC[b]`: whether byte `b` is `[A-Za-z0-9]`.
const ALPHANUMERIC: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = (byte as u8).is_ascii_alphanumeric();
        byte += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    const PK: &str = "pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij";
    const SK: &str = "sk_5cQiqrdARB4q5yzCfkxZ60PitIFPL5t6";

    fn good() -> String {
        format!("{PK}:{SK}")
    }

    #[test]
    fn parses_a_well_formed_credential() {
        let value = good();
        let credential = Credential::parse(&value).unwrap();
        assert_eq!(credential.public_key(), PK);
        assert_eq!(credential.secret_key(), SK);
    }

    #[test]
    fn refuses_every_malformed_class() {
        let long = "x".repeat(4096);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            (format!("{PK}:{}", &SK[..34]), "short secret"),
            (format!("{}:{SK}", &PK[..34]), "short public"),
            (format!("{PK}:{SK}a"), "long secret"),
            (format!("{PK}a:{SK}"), "long public"),
            (format!("{PK}:{SK}:"), "extra colon at end"),
            (format!("{PK}::{}", &SK[1..]), "double colon"),
            (format!("{PK} : {SK}"), "whitespace around colon"),
            (
                format!("{PK}:{}", SK.replace('5', " ")),
                "whitespace inside",
            ),
            (format!("PK_{}:{SK}", &PK[3..]), "uppercase PK prefix"),
            (format!("pk-{}:{SK}", &PK[3..]), "pk- prefix"),
            (format!("{PK}:SK_{}", &SK[3..]), "uppercase SK prefix"),
            (format!("{PK}:sk-{}", &SK[3..]), "sk- prefix"),
            (format!("{SK}:{PK}"), "halves swapped"),
            (
                format!("{PK}:{}", SK.replace('5', "_")),
                "underscore in body",
            ),
            (format!("{PK}:{}", SK.replace('5', "-")), "dash in body"),
            (format!("{PK}:{}é", &SK[..33]), "non-ascii"),
            (format!("{PK}{SK}"), "no colon"),
            (PK.to_owned(), "public only"),
            (format!("{PK}:"), "public and colon"),
            (long, "kilobytes"),
        ];
        for (value, class) in cases {
            assert_eq!(
                Credential::parse(&value).err(),
                Some(MalformedCredential),
                "{class} must be refused"
            );
        }
    }

    #[test]
    fn every_byte_in_every_body_position_is_judged_alone() {
        let good = good().into_bytes();
        let bodies = (3..KEY_LEN).chain(KEY_LEN + 4..CREDENTIAL_LEN);
        for position in bodies {
            for byte in 0..=u8::MAX {
                let mut bytes = good.clone();
                bytes[position] = byte;
                assert_eq!(
                    Credential::parse_bytes(&bytes).is_ok(),
                    byte.is_ascii_alphanumeric(),
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn refuses_non_utf8_bytes() {
        let mut bytes = good().into_bytes();
        bytes[10] = 0xff;
        assert!(Credential::parse_bytes(&bytes).is_err());
    }

    #[test]
    fn generated_pairs_have_the_contract_shape_and_differ() {
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        let credential = a.credential();
        let parsed = Credential::parse(&credential).unwrap();
        assert_eq!(parsed.public_key(), a.public_key.as_str());
        assert_eq!(parsed.secret_key(), a.secret_key.expose());
        assert_ne!(a.public_key, b.public_key);
        assert_ne!(a.secret_key.expose(), b.secret_key.expose());
    }

    #[test]
    fn generated_characters_cover_the_alphabet() {
        let mut seen = [false; 128];
        for _ in 0..200 {
            let pair = KeyPair::generate().unwrap();
            for b in pair.public_key.as_str()[3..].bytes() {
                seen[usize::from(b)] = true;
            }
        }
        assert!(ALPHABET.iter().all(|&c| seen[usize::from(c)]));
    }

    #[test]
    fn debug_redacts_secrets() {
        let pair = KeyPair::generate().unwrap();
        let secret = pair.secret_key.expose().to_owned();
        let credential = pair.credential();
        let parsed = Credential::parse(&credential).unwrap();
        for debug in [
            format!("{pair:?}"),
            format!("{:?}", pair.secret_key),
            format!("{parsed:?}"),
        ] {
            assert!(!debug.contains(&secret), "{debug}");
            assert!(!debug.contains(&secret[3..]), "{debug}");
        }
        assert!(format!("{pair:?}").contains(pair.public_key.as_str()));
    }
}
