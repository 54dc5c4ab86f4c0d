//! GitHub's secret-scanning public keys, and the check of a report's
//! signature against them.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use p256::{
    ecdsa::{Signature, VerifyingKey, signature::Verifier as _},
    pkcs8::DecodePublicKey as _,
};
use serde::Deserialize;

/// The public keys GitHub signs secret-scanning reports with, read from a
/// document shaped like the answer of GitHub's
/// `GET https://api.github.com/meta/public_keys/secret_scanning`:
///
/// ```json
/// {"public_keys": [{"key_identifier": "…", "key": "-----BEGIN PUBLIC KEY-----\n…", "is_current": true}]}
/// ```
///
/// Every listed key verifies reports (`is_current` only says which one
/// GitHub signs with now; an older one may still sign reports in flight), so
/// the file can be refreshed from that URL at any time. Each `key` is a PEM
/// SubjectPublicKeyInfo of a P-256 key; other fields are ignored.
///
/// ```
/// use tower_api_keys::router::ScanningKeys;
///
/// let document = r#"{"public_keys": [{
///     "key_identifier": "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a",
///     "key": "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE4+mYWdFsKYzQjaMeKmp0hrWUvdZj\nT3AVwdT0JQ+HaXyUowvhxVsfseOnqGsQIUhkripZwMrJ+a/JcKNCt2nFxQ==\n-----END PUBLIC KEY-----",
///     "is_current": true
/// }]}"#;
/// let keys = ScanningKeys::from_json(document)?;
/// assert_eq!(keys.identifiers().count(), 1);
/// # Ok::<(), tower_api_keys::router::ScanningKeysError>(())
/// ```
#[derive(Clone)]
pub struct ScanningKeys {
    keys: Arc<[(String, VerifyingKey)]>,
}

/// Why a document of GitHub's public keys could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanningKeysError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The document is not `{"public_keys": [{"key_identifier", "key", …}, …]}`.
    #[error(
        "not a document of GitHub's public keys ({{\"public_keys\": [{{\"key_identifier\", \"key\"}}, …]}}): {0}"
    )]
    Shape(#[source] serde_json::Error),
    /// It lists no key: no report could ever be verified.
    #[error("the document lists no public key")]
    Empty,
    /// A `key` is not a PEM public key of the P-256 curve.
    #[error("public key {key_identifier:?} is not a PEM (SubjectPublicKeyInfo) P-256 public key")]
    Key {
        /// The key's `key_identifier`.
        key_identifier: String,
    },
    /// Two keys share a `key_identifier`.
    #[error("public key identifier {key_identifier:?} is listed twice")]
    Duplicate {
        /// The repeated `key_identifier`.
        key_identifier: String,
    },
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    key_identifier: String,
    key: String,
}

impl ScanningKeys {
    /// The keys of a document shaped like GitHub's answer (see the type's
    /// docs). It must list at least one key, each a P-256 public key in PEM.
    pub fn from_json(document: &str) -> Result<Self, ScanningKeysError> {
        let document: Document =
            serde_json::from_str(document).map_err(ScanningKeysError::Shape)?;
        if document.public_keys.is_empty() {
            return Err(ScanningKeysError::Empty);
        }
        let mut keys: Vec<(String, VerifyingKey)> = Vec::with_capacity(document.public_keys.len());
        for Entry {
            key_identifier,
            key,
        } in document.public_keys
        {
            if keys.iter().any(|(known, _)| *known == key_identifier) {
                return Err(ScanningKeysError::Duplicate { key_identifier });
            }
            match VerifyingKey::from_public_key_pem(key.trim()) {
                Ok(key) => keys.push((key_identifier, key)),
                Err(_) => return Err(ScanningKeysError::Key { key_identifier }),
            }
        }
        Ok(Self { keys: keys.into() })
    }

    /// The keys of the document in the file at `path` (see
    /// [`Self::from_json`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ScanningKeysError> {
        let path = path.as_ref();
        let document = std::fs::read_to_string(path).map_err(|source| ScanningKeysError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&document)
    }

    /// The `key_identifier` of every key, in the document's order.
    pub fn identifiers(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// The key named `key_identifier`, if configured.
    pub(super) fn get(&self, key_identifier: &str) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|(id, _)| id == key_identifier)
            .map(|(_, key)| key)
    }
}

/// A `Github-Public-Key-Signature` value: the base64 (standard alphabet,
/// padded) of an ASN.1 DER ECDSA signature. `None` for anything else.
pub(super) fn decode_signature(value: &[u8]) -> Option<Signature> {
    let der = STANDARD.decode(value.trim_ascii()).ok()?;
    Signature::from_der(&der).ok()
}

/// Whether `signature` is `key`'s ECDSA P-256/SHA-256 signature of `body`,
/// the raw bytes as received.
pub(super) fn verifies(key: &VerifyingKey, body: &[u8], signature: &Signature) -> bool {
    key.verify(body, signature).is_ok()
}

impl fmt::Debug for ScanningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScanningKeys")
            .field("key_identifiers", &self.identifiers().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use p256::{
        ecdsa::{SigningKey, signature::Signer as _},
        pkcs8::{EncodePublicKey as _, LineEnding},
    };

    use super::*;

    fn signing_key() -> SigningKey {
        SigningKey::from_slice(&[7; 32]).unwrap()
    }

    fn document(keys: &[(&str, &SigningKey)]) -> String {
        let keys: Vec<_> = keys
            .iter()
            .map(|(id, key)| {
                let pem = key
                    .verifying_key()
                    .to_public_key_pem(LineEnding::LF)
                    .unwrap();
                serde_json::json!({"key_identifier": id, "key": pem, "is_current": false})
            })
            .collect();
        serde_json::json!({ "public_keys": keys }).to_string()
    }

    #[test]
    fn every_listed_key_verifies_its_own_signatures() {
        let (old, new) = (signing_key(), SigningKey::from_slice(&[9; 32]).unwrap());
        let keys = ScanningKeys::from_json(&document(&[("old", &old), ("new", &new)])).unwrap();
        let body = br#"[{"token":"pk_x","type":"t","url":"u","source":"content"}]"#;
        for (id, signer) in [("old", &old), ("new", &new)] {
            let signature: Signature = signer.sign(body);
            let header = STANDARD.encode(signature.to_der());
            let decoded = decode_signature(header.as_bytes()).unwrap();
            assert!(verifies(keys.get(id).unwrap(), body, &decoded));
            assert!(!verifies(keys.get(id).unwrap(), b"[]", &decoded));
        }
        assert!(keys.get("other").is_none());
    }

    #[test]
    fn a_signature_with_a_high_s_verifies_as_go_makes_them() {
        // GitHub signs with Go's crypto/ecdsa, which does not normalise S.
        let key = signing_key();
        let body = b"[]";
        let signature: Signature = key.sign(body);
        let (r, s) = signature.split_scalars();
        let high = Signature::from_scalars(r, -*s).unwrap();
        let header = STANDARD.encode(high.to_der());
        let decoded = decode_signature(header.as_bytes()).unwrap();
        assert!(verifies(key.verifying_key(), body, &decoded));
    }

    #[test]
    fn unusable_documents_are_refused_with_what_is_wrong() {
        let key = signing_key();
        let twice = document(&[("a", &key), ("a", &key)]);
        for (text, wanted) in [
            ("[]", "not a document"),
            (r#"{"public_keys": []}"#, "no public key"),
            (
                r#"{"public_keys": [{"key_identifier": "k", "key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}]}"#,
                "\"k\" is not a PEM",
            ),
            (twice.as_str(), "listed twice"),
        ] {
            let err = ScanningKeys::from_json(text).unwrap_err().to_string();
            assert!(err.contains(wanted), "{err}");
        }
        assert!(decode_signature(b"not base64!").is_none());
        assert!(decode_signature(STANDARD.encode(b"not DER").as_bytes()).is_none());
    }
}
