//! Key policy: the scopes a key grants and the metadata it carries (README,
//! "Key management and policy").
//!
//! Both travel with the cached key, so a handler reads them from
//! [`AuthenticatedKey`](crate::AuthenticatedKey) without a store round trip, and
//! a scope guard ([`RequireScopes`](crate::RequireScopes)) checks them in a few
//! nanoseconds. Both are cheap to clone (shared, immutable).

pub(crate) mod client;
pub mod limits;
pub(crate) mod networks;
pub(crate) mod rejection;

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::client::{PeerAddr, TrustedProxies};
pub use self::networks::{AllowedNetworks, MAX_ALLOWED_CIDRS, NetworksError};

/// Most scopes one key may carry.
pub const MAX_SCOPES: usize = 32;

/// Longest scope, in characters.
pub const MAX_SCOPE_LEN: usize = 64;

/// Largest metadata object, in bytes of its compact JSON serialization.
pub const MAX_METADATA_BYTES: usize = 4_096;

/// Deepest metadata nesting: the object itself is level 1, and every object
/// or array inside it one level more. (MariaDB refuses JSON nested 32 deep,
/// so the bound is the crate's, the same on every backend.)
pub const MAX_METADATA_DEPTH: usize = 16;

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
    /// JSON that is neither an array of strings nor `null`
    /// ([`Scopes::from_json`]).
    #[error("must be an array of strings or null")]
    NotAnArray,
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

    /// Whether a key with `scopes` (`None`: unrestricted) holds only scopes
    /// of these. An unrestricted key is never covered.
    pub(crate) fn covers(&self, scopes: Option<&Scopes>) -> bool {
        scopes.is_some_and(|scopes| scopes.iter().all(|scope| self.contains(scope)))
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

    /// Scopes from their JSON form, as a request body or an import line
    /// gives them: `null` (`None`: unrestricted) or an array of strings, each
    /// checked as by [`Scopes::new`].
    pub fn from_json(value: &Value) -> Result<Option<Self>, ScopesError> {
        let Value::Array(items) = value else {
            return match value {
                Value::Null => Ok(None),
                _ => Err(ScopesError::NotAnArray),
            };
        };
        let scopes: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
        Self::new(scopes.ok_or(ScopesError::NotAnArray)?).map(Some)
    }

    /// The scopes as a JSON array, for storage.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(&self.iter().collect::<Vec<_>>()).unwrap_or_else(|_| "[]".to_owned())
    }

    /// Reads stored JSON; `None` for text that is not a valid list of scopes.
    /// The caller fails closed: such a key is refused.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
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
/// serialization), nested at most 16 levels deep, with no U+0000 in any
/// string (member names included), returned as given. `Debug` prints only its
/// size, so that it never reaches a log.
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
    /// Nested deeper than [`MAX_METADATA_DEPTH`].
    #[error("must not nest objects and arrays more than 16 levels deep")]
    TooDeep,
    /// A string or member name holds U+0000, which PostgreSQL cannot store.
    #[error("must not contain U+0000 (NUL) in any string or member name")]
    Nul,
}

impl Metadata {
    /// Metadata from a JSON object.
    pub fn new(object: Map<String, Value>) -> Result<Self, MetadataError> {
        check_members(&object, 1)?;
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
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(&*self.0).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Reads stored JSON; `None` for text that [`Metadata::from_value`] would
    /// refuse (not a JSON object, too large, too deep, a NUL): only a foreign
    /// writer stores such text. The caller fails closed: such a key is refused.
    #[cfg_attr(not(feature = "sql"), allow(dead_code))]
    pub(crate) fn from_stored(json: &str) -> Option<Self> {
        serde_json::from_str::<Value>(json)
            .ok()
            .and_then(|value| Self::from_value(value).ok())
    }
}

/// Checks the members of an object or array at nesting `level` (the metadata
/// object is level 1): no NUL in a string or member name, no container deeper
/// than [`MAX_METADATA_DEPTH`]. Stops descending at the first level too deep,
/// so the recursion is bounded whatever the value.
fn check_members(object: &Map<String, Value>, level: usize) -> Result<(), MetadataError> {
    for (name, value) in object {
        if name.contains('\0') {
            return Err(MetadataError::Nul);
        }
        check_value(value, level)?;
    }
    Ok(())
}

/// Checks one value held by a container at nesting `parent` (see
/// [`check_members`]): a container there is at level `parent + 1`.
fn check_value(value: &Value, parent: usize) -> Result<(), MetadataError> {
    match value {
        Value::String(text) if text.contains('\0') => Err(MetadataError::Nul),
        Value::Object(_) | Value::Array(_) if parent >= MAX_METADATA_DEPTH => {
            Err(MetadataError::TooDeep)
        }
        Value::Object(object) => check_members(object, parent + 1),
        Value::Array(items) => items
            .iter()
            .try_for_each(|item| check_value(item, parent + 1)),
        _ => Ok(()),
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
        assert!(scopes.covers(Some(&Scopes::new(["a:read"]).unwrap())));
        assert!(scopes.covers(Some(&Scopes::default())));
        assert!(!scopes.covers(Some(&Scopes::new(["a:read", "c"]).unwrap())));
        assert!(!scopes.covers(None), "an unrestricted key is never covered");
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
        assert_eq!(Metadata::from_stored(r#"{"k":"\u0000"}"#), None);
        let stored_over = format!(r#"{{"k":"{}"}}"#, "a".repeat(MAX_METADATA_BYTES));
        assert_eq!(Metadata::from_stored(&stored_over), None);
    }

    /// `{"k": … {"k": leaf} …}` with the top object at level 1 and `levels`
    /// levels in all; every other level an array when `arrays` is set.
    fn nested(levels: usize, arrays: bool, leaf: Value) -> Value {
        let mut value = leaf;
        for level in (2..=levels).rev() {
            value = if arrays && level % 2 == 0 {
                json!([value])
            } else {
                json!({ "k": value })
            };
        }
        json!({ "k": value })
    }

    #[test]
    fn metadata_nests_at_most_16_levels_arrays_included() {
        for arrays in [false, true] {
            assert!(Metadata::from_value(nested(16, arrays, json!(1))).is_ok());
            assert!(Metadata::from_value(nested(16, arrays, json!({}))).is_err());
            assert_eq!(
                Metadata::from_value(nested(17, arrays, json!(1))).unwrap_err(),
                MetadataError::TooDeep,
                "arrays: {arrays}"
            );
        }
        assert!(Metadata::from_value(json!({"a": [[1], {"b": []}]})).is_ok());
        let deep = nested(200, true, json!(1));
        assert_eq!(
            Metadata::from_value(deep).unwrap_err(),
            MetadataError::TooDeep
        );
    }

    #[test]
    fn metadata_refuses_nul_in_any_string_or_member_name() {
        for bad in [
            json!({"k": "a\u{0}b"}),
            json!({"a\u{0}": 1}),
            json!({"k": {"deeper": ["ok", "\u{0}"]}}),
            json!({"k": [{"\u{0}": null}]}),
        ] {
            assert_eq!(
                Metadata::from_value(bad.clone()).unwrap_err(),
                MetadataError::Nul,
                "{bad}"
            );
        }
        assert!(Metadata::from_value(json!({"k": "\u{1}", "é": "\\0"})).is_ok());
    }
}
