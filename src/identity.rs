//! Who a request is: the identity types a successful authentication attaches.
//!
//! [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) inserts an [`AccountId`], an
//! [`ApiKeyId`] and an [`AuthenticatedKey`] into the request extensions. They sit
//! at the bottom of the crate's module graph: every other module may use them,
//! they use none. (With the `axum` feature the `extract` module makes them
//! extractors.)

use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    key::PublicKeyBytes,
    policy::{Metadata, Scopes},
    ratelimit::RateLimit,
};

macro_rules! uuid_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID.
            pub const fn new(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID.
            pub const fn into_inner(self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_newtype!(
    /// The account that owns the key the request was authenticated with.
    ///
    /// The key-management router also reads the account from this extension, put
    /// there by the host's own authentication.
    AccountId
);

uuid_newtype!(
    /// The id (`key_id`) of the key the request was authenticated with.
    ApiKeyId
);

/// The key a request was authenticated with. Cheap to clone; carries no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthenticatedKey {
    account_id: AccountId,
    key_id: ApiKeyId,
    public_key: KeyText,
    expires_at: Option<DateTime<Utc>>,
    scopes: Option<Scopes>,
    metadata: Option<Metadata>,
    rate_limit: Option<RateLimit>,
}

/// A public key's text: inline when it has the generated length, as every
/// key the layer admits does, so that a copy for a request's extensions
/// writes no memory other threads share (no reference count); otherwise
/// shared.
#[derive(Clone, PartialEq, Eq)]
enum KeyText {
    Inline(PublicKeyBytes),
    Shared(Arc<str>),
}

impl KeyText {
    fn new(text: &str) -> Self {
        PublicKeyBytes::new(text).map_or_else(|| Self::Shared(Arc::from(text)), Self::Inline)
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Inline(bytes) => bytes.as_str(),
            Self::Shared(text) => text,
        }
    }
}

impl AuthenticatedKey {
    pub(crate) fn new(
        account_id: AccountId,
        key_id: ApiKeyId,
        public_key: &str,
        expires_at: Option<DateTime<Utc>>,
        scopes: Option<Scopes>,
        metadata: Option<Metadata>,
    ) -> Self {
        Self {
            account_id,
            key_id,
            public_key: KeyText::new(public_key),
            expires_at,
            scopes,
            metadata,
            rate_limit: None,
        }
    }

    pub(crate) fn with_rate_limit(mut self, rate_limit: Option<RateLimit>) -> Self {
        self.rate_limit = rate_limit;
        self
    }

    /// The key's own rate limit, if it has one (the layer may apply a default
    /// to keys without one).
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.rate_limit
    }

    /// The owning account.
    pub fn account_id(&self) -> AccountId {
        self.account_id
    }

    /// The key's id.
    pub fn key_id(&self) -> ApiKeyId {
        self.key_id
    }

    /// The key's public half, `pk_…` (not secret).
    pub fn public_key(&self) -> &str {
        self.public_key.as_str()
    }

    /// When the key expires, if it does.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The key's scopes; `None` for an unrestricted key (every key the
    /// reference service wrote, and every key created without `scopes`).
    pub fn scopes(&self) -> Option<&Scopes> {
        self.scopes.as_ref()
    }

    /// Whether the key grants `scope`: always for an unrestricted key.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|scopes| scopes.contains(scope))
    }

    /// The first of `required` the key does not grant, if any.
    pub fn missing_scope<'a>(&self, required: &'a [impl AsRef<str>]) -> Option<&'a str> {
        let scopes = self.scopes.as_ref()?;
        required
            .iter()
            .map(AsRef::as_ref)
            .find(|scope| !scopes.contains(scope))
    }

    /// The key's metadata, if it has any. Read from the cache: no store round
    /// trip.
    pub fn metadata(&self) -> Option<&Metadata> {
        self.metadata.as_ref()
    }
}

impl fmt::Debug for AuthenticatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedKey")
            .field("account_id", &self.account_id)
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key.as_str())
            .field("expires_at", &self.expires_at)
            .field("scopes", &self.scopes)
            .field("metadata", &self.metadata)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(public_key: &str) -> AuthenticatedKey {
        let id = Uuid::new_v4();
        AuthenticatedKey::new(id.into(), id.into(), public_key, None, None, None)
    }

    #[test]
    fn the_public_key_reads_back_whatever_its_length() {
        let generated = "pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij";
        for text in [generated, "pk_x", "", "pk_é-not-generated-but-35-bytes-xy"] {
            let key = key(text);
            assert_eq!(key.public_key(), text);
            assert_eq!(key.clone().public_key(), text);
            assert!(format!("{key:?}").contains(&format!("{text:?}")));
        }
        assert!(matches!(key(generated).public_key, KeyText::Inline(_)));
        assert!(matches!(key("pk_x").public_key, KeyText::Shared(_)));
    }

    #[test]
    fn keys_with_the_same_text_are_equal() {
        let one = key("pk_yrnTu6uwTKEiuUnscbyAm7BdtEt8Wmij");
        let mut other = one.clone();
        assert_eq!(one, other);
        other.public_key = KeyText::new("pk_Ndhz3gUiu1AV2DSc6pHgH89HNra53GZI");
        assert_ne!(one, other);
    }
}
