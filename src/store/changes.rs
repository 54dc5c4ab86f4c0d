//! A change to a key's policy (`PATCH`), as the store writes it.

use super::ApiKeyRecord;
use crate::{
    policy::{AllowedNetworks, Metadata, Scopes},
    ratelimit::RateLimit,
};

/// A change to a key (`PATCH`): each `Some` field is written, `None` leaves the
/// column as it is. `Some(None)` clears an optional column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyChanges {
    /// A new title (already trimmed and checked).
    pub title: Option<String>,
    /// A new description, or `Some(None)` to clear it.
    pub description: Option<Option<String>>,
    /// New scopes, or `Some(None)` to make the key unrestricted.
    pub scopes: Option<Option<Scopes>>,
    /// New metadata, or `Some(None)` to clear it.
    pub metadata: Option<Option<Metadata>>,
    /// A new rate limit, or `Some(None)` to remove it.
    pub rate_limit: Option<Option<RateLimit>>,
    /// A new allowlist, or `Some(None)` to allow any address.
    pub allowed_cidrs: Option<Option<AllowedNetworks>>,
}

impl KeyChanges {
    /// Whether nothing would change.
    pub fn is_empty(&self) -> bool {
        self.title.is_none()
            && self.description.is_none()
            && self.scopes.is_none()
            && self.metadata.is_none()
            && self.rate_limit.is_none()
            && self.allowed_cidrs.is_none()
    }

    /// Applies the changes to a record (what the store does to the row).
    pub fn apply_to(&self, record: &mut ApiKeyRecord) {
        if let Some(title) = &self.title {
            record.title.clone_from(title);
        }
        if let Some(description) = &self.description {
            record.description.clone_from(description);
        }
        if let Some(scopes) = &self.scopes {
            record.scopes.clone_from(scopes);
        }
        if let Some(metadata) = &self.metadata {
            record.metadata.clone_from(metadata);
        }
        if let Some(rate_limit) = self.rate_limit {
            record.rate_limit = rate_limit;
        }
        if let Some(allowed_cidrs) = &self.allowed_cidrs {
            record.allowed_cidrs.clone_from(allowed_cidrs);
        }
    }
}
