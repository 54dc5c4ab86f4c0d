//! A rotation: what it asks of the store, and what it writes, planned from
//! the old key as read inside the rotation's transaction.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{ApiKeyRecord, EffectiveStatus, KeyStatus, StoredHash, storage_time};
use crate::policy::Scopes;

/// One rotation for
/// [`ApiKeyRepository::rotate`](super::ApiKeyRepository::rotate): limit the
/// old key and insert its successor, atomically.
///
/// The successor's policy (title, description, scopes, metadata, rate limit, allowlist)
/// and lifetime are not given here: the store copies them from the old key as
/// it reads it *inside* the rotation's transaction, after locking its row
/// ([`Rotation::plan`]), so that a change committed just before the rotation
/// is never lost to an earlier read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The account that owns the old key.
    pub account_id: Uuid,
    /// The key being replaced.
    pub old_key_id: Uuid,
    /// How long the old key keeps working: zero revokes it at once; otherwise
    /// it expires at the end of the grace period (never later than it would
    /// have).
    pub grace_period: std::time::Duration,
    /// The successor's own values.
    pub successor: Successor,
    /// When set, the old key (and so its successor) may hold only these
    /// scopes, and may not be unrestricted: else
    /// [`RotateOutcome::ScopesNotHeld`] (see
    /// [`KeyManager::with_scope_ceiling`](crate::KeyManager::with_scope_ceiling)).
    pub scope_ceiling: Option<Scopes>,
}

/// What is new about a rotation's successor; everything else is the old key's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    /// Its key id.
    pub key_id: Uuid,
    /// Its public key, `pk_…`.
    pub public_key: String,
    /// Its secret's hash.
    pub secret_key_hash: StoredHash,
    /// The id of the pepper that made the hash.
    pub pepper_id: Option<String>,
    /// Its creation time: the moment of the rotation, from which the old key's
    /// lifetime and the grace period are counted.
    pub created_at: DateTime<Utc>,
}

impl Rotation {
    /// What the store writes, given the old key `old` as read inside the
    /// rotation's transaction with its row locked: how the old key is limited
    /// and the successor to insert (the old key's title, description, scopes,
    /// metadata and rate limit, and its lifetime, `expires_at − created_at`,
    /// counted from the rotation; for a row without `created_at`, what is
    /// left of it). [`RotateOutcome::NotActive`] for a revoked or expired key,
    /// then [`RotateOutcome::ScopesNotHeld`] for a key outside the scope
    /// ceiling. The caller still refuses a second successor
    /// ([`RotateOutcome::AlreadyRotated`]).
    pub fn plan(&self, old: &ApiKeyRecord) -> Result<(OldKeyLimit, ApiKeyRecord), RotateOutcome> {
        let now = self.successor.created_at;
        if old.effective_status(now) != EffectiveStatus::Active {
            return Err(RotateOutcome::NotActive);
        }
        if let Some(ceiling) = &self.scope_ceiling
            && !ceiling.covers(old.scopes.as_ref())
        {
            return Err(RotateOutcome::ScopesNotHeld);
        }
        let limit = if self.grace_period.is_zero() {
            OldKeyLimit::Revoke
        } else {
            let end = chrono::TimeDelta::from_std(self.grace_period)
                .ok()
                .and_then(|grace| now.checked_add_signed(grace))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            OldKeyLimit::ExpireAt(storage_time(old.expires_at.map_or(end, |at| at.min(end))))
        };
        let expires_at = old
            .expires_at
            .map(|at| storage_time(now + (at - old.created_at.unwrap_or(now))));
        let successor = ApiKeyRecord {
            key_id: self.successor.key_id,
            public_key: self.successor.public_key.clone(),
            secret_key_hash: self.successor.secret_key_hash.clone(),
            account_id: self.account_id,
            title: old.title.clone(),
            description: old.description.clone(),
            status: KeyStatus::Active,
            expires_at,
            last_used_at: None,
            created_at: Some(now),
            pepper_id: self.successor.pepper_id.clone(),
            scopes: old.scopes.clone(),
            metadata: old.metadata.clone(),
            rotated_from: Some(old.key_id),
            rate_limit: old.rate_limit,
            allowed_cidrs: old.allowed_cidrs.clone(),
        };
        Ok((limit, successor))
    }
}

/// What a rotation does to the key it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKeyLimit {
    /// Revoked at once (a grace period of 0).
    Revoke,
    /// Expires at this time (the earlier of its own expiry and the end of the
    /// grace period).
    ExpireAt(DateTime<Utc>),
}

/// What [`ApiKeyRepository::rotate`](super::ApiKeyRepository::rotate) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// Both written.
    Rotated {
        /// The old key as it is now (revoked, or expiring at the end of the
        /// grace period).
        old: Box<ApiKeyRecord>,
        /// The successor as inserted.
        successor: Box<ApiKeyRecord>,
    },
    /// No such key in the account; nothing written.
    NotFound,
    /// The old key is revoked or expired; nothing written.
    NotActive,
    /// The old key already has a successor; nothing written.
    AlreadyRotated,
    /// The old key holds a scope outside the rotation's scope ceiling, or is
    /// unrestricted while there is one; nothing written.
    ScopesNotHeld,
}
