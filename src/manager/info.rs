//! What the manager returns about a key: [`ApiKeyInfo`] (no secret) and
//! [`CreatedKey`] (with the secret, once).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    identity::ApiKeyId,
    key::{SecretKey, Token},
    policy::{AllowedNetworks, Metadata, Scopes},
    ratelimit::RateLimit,
    store::{ApiKeyRecord, EffectiveStatus},
};

/// A key as its owner sees it: no secret, no hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub key_id: ApiKeyId,
    /// The public key, `pk_…`.
    pub public_key: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// `active`, `revoked` or `expired`.
    pub status: EffectiveStatus,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Last use, if recorded.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Creation time; `None` (serialized as `null`) only for a row written by
    /// another program into a table that allows it, such as the reference
    /// service's.
    pub created_at: Option<DateTime<Utc>>,
    /// The scopes the key grants, ascending; `None` (`null`): unrestricted.
    pub scopes: Option<Scopes>,
    /// The key's metadata, as given.
    pub metadata: Option<Metadata>,
    /// The key this one replaced in a rotation, if any.
    pub rotated_from: Option<ApiKeyId>,
    /// The key's own rate limit, if any.
    pub rate_limit: Option<RateLimit>,
    /// The networks the key may be used from, normalised; `None` (`null`):
    /// any address.
    pub allowed_cidrs: Option<AllowedNetworks>,
}

impl ApiKeyInfo {
    pub(super) fn from_record(record: ApiKeyRecord, now: DateTime<Utc>) -> Self {
        Self {
            status: record.effective_status(now),
            key_id: record.key_id.into(),
            public_key: record.public_key,
            title: record.title,
            description: record.description,
            expires_at: record.expires_at,
            last_used_at: record.last_used_at,
            created_at: record.created_at,
            scopes: record.scopes,
            metadata: record.metadata,
            rotated_from: record.rotated_from.map(ApiKeyId::new),
            rate_limit: record.rate_limit,
            allowed_cidrs: record.allowed_cidrs,
        }
    }
}

/// A key just created: the only time its secret is available.
#[derive(Clone)]
pub struct CreatedKey {
    /// The stored key.
    pub key: ApiKeyInfo,
    /// The secret half. Show it to its owner once; it is not stored.
    pub secret_key: SecretKey,
    /// The whole credential in the form to hand out: the token `P_…` when
    /// the validator has a [`KeyPrefix`](crate::KeyPrefix), else
    /// `pk_…:sk_…`. Shown once, as the secret is.
    pub token: Token,
}

impl CreatedKey {
    /// The credential a client sends: `pk_…:sk_…` (whatever the
    /// [`token`](Self::token) form). Never log it.
    pub fn credential(&self) -> String {
        crate::key::credential(&self.key.public_key, &self.secret_key)
    }
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret_key", &self.secret_key)
            .field("token", &self.token)
            .finish()
    }
}
