//! The values of the store's batch and maintenance calls: re-hashes, usage
//! counts, counts per pepper and what a retention run deleted.

use chrono::NaiveDate;
use uuid::Uuid;

#[allow(unused_imports)] // Named by the docs' links.
use super::ApiKeyRepository;
use super::StoredHash;

/// One re-hash for [`ApiKeyRepository::rewrite_hashes`]: the key's hash made
/// again under the current pepper after a successful validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashRewrite {
    /// The key.
    pub key_id: Uuid,
    /// The hash the key had when it was validated; the rewrite happens only if
    /// the row still holds it.
    pub old_hash: StoredHash,
    /// The hash under the current pepper.
    pub new_hash: StoredHash,
    /// The current pepper's id.
    pub pepper_id: String,
}

/// Requests counted for one key on one UTC day (DECISIONS.md, "Usage metering in detail"):
/// what [`ApiKeyRepository::record_usage`] adds to the table
/// `tower_api_keys_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UsageCount {
    /// The key.
    pub key_id: Uuid,
    /// The UTC day.
    pub day: NaiveDate,
    /// Requests to add to that day's count.
    pub requests: u64,
}

/// What one retention run of [`ApiKeyRepository::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Audit rows deleted.
    pub audit_rows: u64,
    /// Usage rows deleted.
    pub usage_rows: u64,
}

/// How many keys that can still validate (not revoked, not expired) name one
/// `pepper_id` (`None`: the legacy pepper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PepperCount {
    /// The stored `pepper_id`.
    pub pepper_id: Option<String>,
    /// Keys that can still validate with it.
    pub keys: u64,
}

/// Most `(key_id, used_at)` pairs written by one statement, and handed to
/// [`ApiKeyRepository::record_last_used`] by one call of the usage writer.
/// Two bound values per pair stay well below SQLite's 32,766 and MySQL's 65,535
/// parameters.
pub(crate) const LAST_USED_CHUNK: usize = 5_000;

/// Most usage rows written by one statement, and handed to
/// [`ApiKeyRepository::record_usage`] by one call of the usage writer (three
/// bound values per row).
pub(crate) const USAGE_CHUNK: usize = 5_000;
