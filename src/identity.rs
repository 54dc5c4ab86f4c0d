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
    ///
    /// With the `axum` feature it is an extractor, on routes behind
    /// [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer):
    ///
    /// ```
    /// use tower_api_keys::AccountId;
    ///
    /// async fn report(account: AccountId) -> String {
    ///     format!("report for {account}")
    /// }
    /// # let _: axum::Router = axum::Router::new().route("/v1/report", axum::routing::get(report));
    /// ```
    AccountId
);

uuid_newtype!(
    /// The id (`key_id`) of the key the request was authenticated with.
    ApiKeyId
);

/// The key a request was authenticated with. Cheap to clone; carries no secret.
///
/// With the `axum` feature it is an extractor (`Option<AuthenticatedKey>` too,
/// for routes behind [`allow_anonymous`](crate::ApiKeyAuthLayer::allow_anonymous));
/// elsewhere, read it from the request's extensions. A handler sees the key's
/// scopes and metadata as they were cached, without a store round trip:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use axum::{Json, Router, body::Body, http::{Request, StatusCode}, routing::get};
/// use serde_json::{Value, json};
/// use tower::ServiceExt as _; // `oneshot`
/// use tower_api_keys::{
///     AccountId, ApiKeyAuthLayer, ApiKeyValidator, AuthenticatedKey, KeyManager, Metadata,
///     NewApiKey, Pepper, Scopes, store::MemoryRepository,
/// };
///
/// async fn export(key: AuthenticatedKey) -> Result<Json<Value>, StatusCode> {
///     if !key.has_scope("exports:read") {
///         return Err(StatusCode::FORBIDDEN); // or `RequireScopesLayer` on the route
///     }
///     let team = key.metadata().and_then(|metadata| metadata.get("team")).cloned();
///     Ok(Json(json!({"account_id": key.account_id(), "key_id": key.key_id(), "team": team})))
/// }
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// let app: Router = Router::new()
///     .route("/v1/export", get(export))
///     .layer(ApiKeyAuthLayer::new(validator.clone()));
///
/// let account = AccountId::new(uuid::Uuid::new_v4());
/// let new_key = NewApiKey::new("nightly export")
///     .with_scopes(Scopes::new(["exports:read"])?)
///     .with_metadata(Metadata::from_value(json!({"team": "data"}))?);
/// let created = KeyManager::new(validator).create(account, new_key).await?;
///
/// let request = Request::get("/v1/export").header("x-api-key", created.credential()).body(Body::empty())?;
/// let response = app.oneshot(request).await?;
/// assert_eq!(response.status(), StatusCode::OK);
/// let body: Value = serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 4096).await?)?;
/// assert_eq!(body["team"], "data");
/// # Ok(()) }
/// ```
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
