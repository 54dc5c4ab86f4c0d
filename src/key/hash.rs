//! Hashing secrets: `lowercase hex(HMAC-SHA256(key = pepper, msg = secret))`.
//!
//! # Why HMAC-SHA256 and not a password hash
//!
//! Password hashes (Argon2, bcrypt, scrypt) are slow on purpose, to make guessing
//! *low-entropy* human passwords expensive. Secret keys here are 32 characters drawn
//! uniformly from 62 by the OS CSPRNG: about 190 bits. No amount of guessing
//! speed makes a 2^190 search feasible, so a slow hash would buy nothing and would
//! cost every request milliseconds. The HMAC key (the *pepper*) lives outside the
//! database, so a stolen table alone does not even allow checking a guess. This is
//! also the scheme of the reference service, whose rows must validate unchanged.

use std::fmt;

use hmac::{Hmac, Mac, digest::KeyInit};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::pepper::Pepper;

/// The stored form of a secret: the 32 bytes of its HMAC-SHA256.
///
/// Stored as 64 lowercase hex characters. `Debug` is redacted.
#[derive(Clone, Copy, Zeroize)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Parses 64 hex characters (either case). `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            *slot = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
        }
        Some(Self(out))
    }

    /// The 64-character lowercase hex form, as stored in `secret_key_hash`.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Compares two hashes in constant time.
    pub fn ct_eq(&self, other: &SecretHash) -> bool {
        // As four words rather than 32 bytes: `subtle` hides every element
        // from the optimiser, so four cost an eighth of thirty-two, and the
        // comparison stays constant-time.
        self.words()[..].ct_eq(&other.words()[..]).into()
    }

    fn words(&self) -> [u64; 4] {
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(self.0.chunks_exact(8)) {
            *word = u64::from_ne_bytes(bytes.try_into().expect("chunks of 8 bytes"));
        }
        words
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Hashes secrets with a pre-keyed HMAC state, cloned for each use.
///
/// Keying HMAC costs two SHA-256 blocks; cloning the keyed state skips that.
#[derive(Clone)]
pub struct KeyHasher {
    keyed: Hmac<Sha256>,
}

impl KeyHasher {
    /// Keys the hasher with the pepper.
    pub fn new(pepper: &Pepper) -> Self {
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(pepper.expose())
            .expect("HMAC accepts keys of any length");
        Self { keyed }
    }

    /// `HMAC-SHA256(pepper, secret)`.
    pub fn hash(&self, secret: &str) -> SecretHash {
        let mut mac = self.keyed.clone();
        mac.update(secret.as_bytes());
        SecretHash(mac.finalize().into_bytes().into())
    }

    /// Hashes `secret` and compares it with `stored` in constant time.
    pub fn verify(&self, secret: &str, stored: &SecretHash) -> bool {
        self.hash(secret).ct_eq(stored)
    }
}

impl fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher(<keyed>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts() {
        let pepper = Pepper::try_from("a-very-secret-pepper-value").unwrap();
        assert!(!format!("{pepper:?}").contains("secret-pepper"));
        let hash = KeyHasher::new(&pepper).hash("sk_x");
        assert!(!format!("{hash:?}").contains(&hash.to_hex()[..8]));
        assert!(!format!("{:?}", KeyHasher::new(&pepper)).contains("pepper"));
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        let hasher = KeyHasher::new(&Pepper::try_from("0123456789abcdef").unwrap());
        let hash = hasher.hash("sk_abc");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(hex, hex.to_lowercase());
        assert!(SecretHash::from_hex(&hex).unwrap().ct_eq(&hash));
        assert!(
            SecretHash::from_hex(&hex.to_uppercase())
                .unwrap()
                .ct_eq(&hash)
        );
        assert!(SecretHash::from_hex(&hex[..63]).is_none());
        assert!(SecretHash::from_hex(&format!("{}g", &hex[..63])).is_none());
        assert!(SecretHash::from_hex("").is_none());
    }

    #[test]
    fn ct_eq_sees_a_difference_in_any_byte_and_bit() {
        let hash = KeyHasher::new(&Pepper::try_from("0123456789abcdef").unwrap()).hash("sk_abc");
        let same = hash;
        assert!(hash.ct_eq(&same));
        for index in 0..32 {
            for bit in 0..8 {
                let mut other = hash;
                other.0[index] ^= 1 << bit;
                assert!(!hash.ct_eq(&other), "byte {index}, bit {bit}");
                assert!(!other.ct_eq(&hash), "byte {index}, bit {bit}");
            }
        }
    }

    #[test]
    fn verify_accepts_only_the_right_secret() {
        let hasher = KeyHasher::new(&Pepper::try_from("0123456789abcdef").unwrap());
        let stored = hasher.hash("sk_right");
        assert!(hasher.verify("sk_right", &stored));
        assert!(!hasher.verify("sk_wrong", &stored));
    }
}
