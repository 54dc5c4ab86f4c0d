//! What a successful authentication attaches to the request.
//!
//! [`ApiKeyAuthLayer`](crate::ApiKeyAuthLayer) inserts an [`AccountId`], an
//! [`ApiKeyId`] and an [`AuthenticatedKey`] into the request extensions. With the
//! `axum` feature, [`AccountId`], [`ApiKeyId`] and [`AuthenticatedKey`] are also
//! extractors (and `Option<…>` of each, for routes behind
//! [`allow_anonymous`](crate::ApiKeyAuthLayer::allow_anonymous)).

use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use uuid::Uuid;

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
    public_key: Arc<str>,
    expires_at: Option<DateTime<Utc>>,
}

impl AuthenticatedKey {
    pub(crate) fn new(
        account_id: AccountId,
        key_id: ApiKeyId,
        public_key: Arc<str>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Self {
        Self {
            account_id,
            key_id,
            public_key,
            expires_at,
        }
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
        &self.public_key
    }

    /// When the key expires, if it does.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }
}

impl fmt::Debug for AuthenticatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthenticatedKey")
            .field("account_id", &self.account_id)
            .field("key_id", &self.key_id)
            .field("public_key", &&*self.public_key)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[cfg(feature = "axum")]
mod axum_impls {
    use axum::{
        extract::{FromRequestParts, OptionalFromRequestParts},
        http::request::Parts,
        response::{IntoResponse, Response},
    };

    use super::{AccountId, ApiKeyId, AuthenticatedKey};
    use crate::problem::Problem;

    /// Rejection of the extractors when the request carries no authentication
    /// extension: a `500` problem response, since it means a routing mistake.
    #[derive(Debug, Clone, Copy, thiserror::Error)]
    #[error(
        "no authenticated API key on this request: is `ApiKeyAuthLayer` installed on this route?"
    )]
    pub struct MissingAuthentication;

    impl IntoResponse for MissingAuthentication {
        fn into_response(self) -> Response {
            tracing::error!("{self}");
            Problem::new(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "Missing authentication layer; is `ApiKeyAuthLayer` installed?",
            )
            .into_response()
        }
    }

    macro_rules! extension_extractor {
        ($ty:ty) => {
            impl<S: Send + Sync> FromRequestParts<S> for $ty {
                type Rejection = MissingAuthentication;

                async fn from_request_parts(
                    parts: &mut Parts,
                    _state: &S,
                ) -> Result<Self, Self::Rejection> {
                    parts
                        .extensions
                        .get::<$ty>()
                        .cloned()
                        .ok_or(MissingAuthentication)
                }
            }

            impl<S: Send + Sync> OptionalFromRequestParts<S> for $ty {
                type Rejection = std::convert::Infallible;

                async fn from_request_parts(
                    parts: &mut Parts,
                    _state: &S,
                ) -> Result<Option<Self>, Self::Rejection> {
                    Ok(parts.extensions.get::<$ty>().cloned())
                }
            }
        };
    }

    extension_extractor!(AccountId);
    extension_extractor!(ApiKeyId);
    extension_extractor!(AuthenticatedKey);
}

#[cfg(feature = "axum")]
pub use axum_impls::MissingAuthentication;
