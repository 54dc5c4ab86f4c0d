//! Key policy: the scopes a key grants and the metadata it carries (CONTRACT §8).
//!
//! Both travel with the cached key, so a handler reads them from
//! [`AuthenticatedKey`](crate::AuthenticatedKey) without a store round trip, and
//! a scope guard ([`RequireScopes`](crate::RequireScopes)) checks them in a few
//! nanoseconds. Both are cheap to clone (shared, immutable).

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most scopes one key may carry.
pub const MAX_SCOPES: usize = 32;

/// Longest scope, in characters.
pub const MAX_SCOPE_LEN: usize = 64;

/// Largest metadata object, in bytes of its compact JSON serialization.
pub const MAX_METADATA_BYTES: usize = 4_096;

/// Whether `scope` is a valid scope: 1–64 characters of `[a-z0-9_.:-]`,
/// starting with `[a-z0-9]` (for example `reports:read`).
pub fn is_valid_scope(scope: &str) -> bool {
    let bytes = scope.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SCOPE_LEN
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"_.:-".contains(&byte)
        })
}

/// The scopes of a key: 0–32 distinct valid scopes, kept sorted ascending.
///
/// A key *without* scopes (`None` where a key's scopes are optional) is
/// unrestricted: every scope check passes. An empty `Scopes` grants nothing.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Scopes(Arc<[Box<str>]>);

/// Scopes that break the rules of [`Scopes::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopesError {
    /// More than [`MAX_SCOPES`].
    #[error("must hold at most 32 scopes")]
    TooMany,
    /// A scope of the wrong syntax (the scope is not echoed: it may be anything).
    #[error(
        "each scope must be 1-64 characters of a-z, 0-9, '_', '.', ':' or '-', starting with a letter or digit"
    )]
    Invalid,
    /// The same scope twice.
    #[error("scopes must be distinct")]
    Duplicate,
}

impl Scopes {
    /// Validated, sorted scopes.
    pub fn new<I, S>(scopes: I) -> Result<Self, ScopesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut sorted: Vec<Box<str>> = Vec::new();
        for scope in scopes {
            let scope = scope.as_ref();
            if sorted.len() == MAX_SCOPES {
                return Err(ScopesError::TooMany);
            }
            if !is_valid_scope(scope) {
                return Err(ScopesError::Invalid);
            }
            sorted.push(scope.into());
        }
        sorted.sort_unstable();
        if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(ScopesError::Duplicate);
        }
        Ok(Self(sorted.into()))
    }

    /// Whether the key has `scope`.
    pub fn contains(&self, scope: &str) -> bool {
        self.0.binary_search_by(|held| (**held).cmp(scope)).is_ok()
    }

    /// The scopes, ascending.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|scope| &**scope)
    }

    /// How many scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none (the key grants no scope).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes as a JSON array, for storage.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(&self.iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Reads stored JSON; `None` (and a warning) for text that is not a valid
    /// list of scopes. The caller fails closed: such a key grants no scope.
    pub(crate) fn from_stored(json: &str) -> Option<Self> {
        serde_json::from_str::<Vec<String>>(json)
            .ok()
            .and_then(|scopes| Self::new(scopes).ok())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let scopes = Vec::<String>::deserialize(deserializer)?;
        Self::new(scopes).map_err(serde::de::Error::custom)
    }
}

/// A key's metadata: a JSON object of at most 4,096 bytes (compact
/// serialization), returned as given. `Debug` prints only its size, so that it
/// never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata(Arc<Map<String, Value>>);

/// Metadata that breaks the rules of [`Metadata::new`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not a JSON object.
    #[error("must be a JSON object or null")]
    NotAnObject,
    /// Over [`MAX_METADATA_BYTES`].
    #[error("must be at most 4096 bytes as compact JSON")]
    TooLarge,
}

impl Metadata {
    /// Metadata from a JSON object.
    pub fn new(object: Map<String, Value>) -> Result<Self, MetadataError> {
        let size = serde_json::to_vec(&object).map_or(usize::MAX, |bytes| bytes.len());
        if size > MAX_METADATA_BYTES {
            return Err(MetadataError::TooLarge);
        }
        Ok(Self(Arc::new(object)))
    }

    /// Metadata from any JSON value; only an object is accepted.
    pub fn from_value(value: Value) -> Result<Self, MetadataError> {
        match value {
            Value::Object(object) => Self::new(object),
            _ => Err(MetadataError::NotAnObject),
        }
    }

    /// The object.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// One member.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The compact JSON text, for storage.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(&*self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads stored JSON; `None` for text that is not a JSON object (the
    /// store's own check keeps that from happening but for foreign writers).
    pub(crate) fn from_stored(json: &str) -> Option<Self> {
        match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(object)) => Some(Self(Arc::new(object))),
            _ => None,
        }
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metadata(<{} members>)", self.0.len())
    }
}

impl Serialize for Metadata {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn scope_syntax_follows_the_contract() {
        for good in ["reports:read", "a", "0", "x.y_z-w:v", &"a".repeat(64)] {
            assert!(is_valid_scope(good), "{good}");
        }
        for bad in [
            "",
            "Reports:read",
            ":read",
            "_a",
            "-a",
            "a b",
            "é",
            "a/b",
            &"a".repeat(65),
        ] {
            assert!(!is_valid_scope(bad), "{bad}");
        }
    }

    #[test]
    fn scopes_are_sorted_distinct_and_bounded() {
        let scopes = Scopes::new(["b:write", "a:read"]).unwrap();
        assert_eq!(scopes.iter().collect::<Vec<_>>(), ["a:read", "b:write"]);
        assert!(scopes.contains("a:read") && scopes.contains("b:write"));
        assert!(!scopes.contains("c") && !scopes.contains("a:rea"));
        assert_eq!(Scopes::new(["a", "a"]).unwrap_err(), ScopesError::Duplicate);
        assert_eq!(Scopes::new(["A"]).unwrap_err(), ScopesError::Invalid);
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert_eq!(Scopes::new(&many).unwrap_err(), ScopesError::TooMany);
        assert_eq!(Scopes::new(&many[..32]).unwrap().len(), 32);
        assert!(Scopes::new(Vec::<String>::new()).unwrap().is_empty());
        assert_eq!(
            serde_json::to_value(&scopes).unwrap(),
            json!(["a:read", "b:write"])
        );
        assert_eq!(Scopes::from_stored(&scopes.to_json()), Some(scopes));
        assert_eq!(Scopes::from_stored("{\"a\":1}"), None);
        assert!(serde_json::from_value::<Scopes>(json!(["ok", "NO"])).is_err());
    }

    #[test]
    fn metadata_is_an_object_of_bounded_size_and_never_printed() {
        let metadata = Metadata::from_value(json!({"plan": "pro", "名前": "ключ 🔑"})).unwrap();
        assert_eq!(metadata.get("plan"), Some(&json!("pro")));
        assert_eq!(
            Metadata::from_stored(&metadata.to_json()),
            Some(metadata.clone())
        );
        let printed = format!("{metadata:?}");
        assert!(
            !printed.contains("pro") && printed.contains("2 members"),
            "{printed}"
        );
        for not_object in [json!([]), json!("x"), json!(1), json!(null)] {
            assert_eq!(
                Metadata::from_value(not_object).unwrap_err(),
                MetadataError::NotAnObject
            );
        }
        // {"k":"…"} is 8 bytes of overhead.
        let fits = json!({ "k": "a".repeat(MAX_METADATA_BYTES - 8) });
        assert!(Metadata::from_value(fits).is_ok());
        let over = json!({ "k": "a".repeat(MAX_METADATA_BYTES - 7) });
        assert_eq!(
            Metadata::from_value(over).unwrap_err(),
            MetadataError::TooLarge
        );
        assert_eq!(Metadata::from_stored("[1]"), None);
    }
}
