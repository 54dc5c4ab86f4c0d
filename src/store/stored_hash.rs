//! The stored hash of a secret key, the type of `secret_key_hash` in every
//! store (and a column type of the SQL store's entity).

use std::{fmt, ops::Deref};

/// The stored `secret_key_hash`: 64 lowercase hex characters.
///
/// Not a secret key, but it lets whoever also holds the pepper test guesses, so
/// its `Debug` prints `StoredHash(<redacted>)`; [`as_str`](Self::as_str) (or
/// `Deref` to `str`) gives the text.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "sql", derive(sea_orm::DeriveValueType))]
pub struct StoredHash(String);

impl StoredHash {
    /// Wraps the hex text of a hash.
    pub fn new(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    /// The hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The hex text, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoredHash(<redacted>)")
    }
}

impl Deref for StoredHash {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for StoredHash {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<String> for StoredHash {
    fn from(hex: String) -> Self {
        Self(hex)
    }
}

impl From<&str> for StoredHash {
    fn from(hex: &str) -> Self {
        Self(hex.to_owned())
    }
}

impl PartialEq<str> for StoredHash {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StoredHash {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for StoredHash {
    fn eq(&self, other: &String) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn stored_hash_reads_as_its_text() {
        let hash = StoredHash::from(HASH);
        assert_eq!(hash.as_str(), HASH);
        assert_eq!(&*hash, HASH);
        assert_eq!(hash, HASH);
        assert_eq!(hash.clone().into_inner(), HASH);
    }
}
