//! The key store: a repository trait at the boundary, and its implementations.
//!
//! The layer, the cache and the key manager talk only to [`ApiKeyRepository`],
//! each through one timed boundary of the crate's that applies the store
//! timeout. [`SeaOrmRepository`] is the production implementation (SQLite,
//! PostgreSQL, MySQL/MariaDB; feature `sql`, which each driver feature turns
//! on); [`MemoryRepository`] keeps everything in memory for unit tests and
//! examples. A host with a store of its own implements the trait, and builds
//! without the feature `sql` (no SeaORM, no sqlx).

use std::future::Future;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use self::feed::ChangeSource;
use crate::{
    audit::{AuditEntry, AuditQuery, ChangeRecord},
    events::{OutboxEvent, Settle},
    policy::{AllowedNetworks, Metadata, Scopes},
    ratelimit::RateLimit,
};

#[cfg(feature = "sql")]
mod conn;
// The schema and the change feed serve the SQL store and live beside it;
// their public paths are the crate root's (`tower_api_keys::entity`,
// `::feed`, `::migration`), where they are documented. The feed's types stay
// without the feature `sql`, for the repository trait and the validator.
mod batches;
mod changes;
#[cfg(feature = "sql")]
#[doc(hidden)]
pub mod entity;
#[doc(hidden)]
pub mod feed;
mod memory;
#[cfg(feature = "sql")]
#[doc(hidden)]
pub mod migration;
#[cfg(feature = "postgres")]
pub(crate) mod replica;
mod rotation;
#[cfg(feature = "sql")]
mod sql;
mod stored_hash;
mod timed;
#[cfg(feature = "postgres")]
mod unprepared;

pub use self::batches::{HashRewrite, PepperCount, Pruned, UsageCount};
pub(crate) use self::batches::{LAST_USED_CHUNK, USAGE_CHUNK};
pub use self::changes::KeyChanges;
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub use self::conn::{PoolMode, UnknownPoolMode};
pub use self::memory::MemoryRepository;
pub use self::rotation::{OldKeyLimit, RotateOutcome, Rotation, Successor};
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub use self::sql::{ConnectError, RepositoryBuilder, SeaOrmRepository, connect_options};
pub use self::stored_hash::StoredHash;
pub(crate) use self::timed::Store;
pub use crate::telemetry::redact::{redact_secrets, redact_url, url_has_secret};

/// A timestamp as the crate stores it: microsecond precision (what every backend
/// keeps), moved off a whole second by one microsecond if it lands on one, so that
/// the RFC 3339 text SQLite stores always carries its fraction (the contract asks
/// for at least millisecond precision; sqlx omits a zero fraction).
pub(crate) fn storage_time(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(off_whole_second(at.timestamp_micros())).unwrap_or(at)
}

/// Unix microseconds moved one microsecond off a whole second; see [`storage_time`].
pub(crate) const fn off_whole_second(micros: i64) -> i64 {
    if micros % 1_000_000 == 0 {
        micros + 1
    } else {
        micros
    }
}

/// The stored status of a key (`status` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// The key may be used (unless past `expires_at`).
    Active,
    /// The key was revoked and is refused.
    Revoked,
    /// Marked expired in the store (the reference service's `expired` label);
    /// refused like a key past its `expires_at`.
    Expired,
}

impl KeyStatus {
    /// The text stored in the `status` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// The status a client sees: `active`, `revoked`, or `expired` for an active key
/// past its `expires_at` (or stored as `expired`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EffectiveStatus {
    /// Usable.
    Active,
    /// Revoked by its owner.
    Revoked,
    /// Past `expires_at`, or stored as `expired`.
    Expired,
}

/// One row of `api_keys`. `Debug` prints the hash redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Primary key.
    pub key_id: Uuid,
    /// The public key, `pk_…`.
    pub public_key: String,
    /// 64 hex characters: HMAC-SHA256 of the secret under the pepper.
    pub secret_key_hash: StoredHash,
    /// The owning account.
    pub account_id: Uuid,
    /// A human-readable title.
    pub title: String,
    /// An optional description.
    pub description: Option<String>,
    /// Stored status.
    pub status: KeyStatus,
    /// When the key stops working; `None` for never.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the key was last used (written in batches).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the key was created. `None` only for rows written by another program
    /// into a table that allows it (the reference service's `created_at` is
    /// nullable); keys this crate creates always have one.
    pub created_at: Option<DateTime<Utc>>,
    /// The id of the pepper that made `secret_key_hash` (see [`crate::PepperRing`]);
    /// `None` for the legacy pepper, as in every row of the reference service.
    pub pepper_id: Option<String>,
    /// The scopes the key grants; `None` for an unrestricted key (every row of
    /// the reference service).
    pub scopes: Option<Scopes>,
    /// The key's metadata, a JSON object.
    pub metadata: Option<Metadata>,
    /// The key this one replaced in a rotation.
    pub rotated_from: Option<Uuid>,
    /// The key's own rate limit; `None`: the layer's default, if any.
    pub rate_limit: Option<RateLimit>,
    /// The networks the key may be used from; `None`: any address.
    pub allowed_cidrs: Option<AllowedNetworks>,
}

impl ApiKeyRecord {
    /// The status as of `now`.
    pub fn effective_status(&self, now: DateTime<Utc>) -> EffectiveStatus {
        match self.status {
            KeyStatus::Revoked => EffectiveStatus::Revoked,
            KeyStatus::Expired => EffectiveStatus::Expired,
            KeyStatus::Active if self.expires_at.is_some_and(|at| at <= now) => {
                EffectiveStatus::Expired
            }
            KeyStatus::Active => EffectiveStatus::Active,
        }
    }
}

/// A store operation failed. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer within the configured timeout.
    #[error("the key store did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// A row with the same key id or public key already exists.
    #[error("an API key with the same id or public key already exists")]
    Conflict,
    /// The account would have more keys than allowed
    /// ([`ApiKeyRepository::insert_within_limit`]).
    #[error("account {account_id} would have more than {limit} API keys")]
    TooManyKeys {
        /// The account.
        account_id: Uuid,
        /// The most keys an account may have.
        limit: u64,
    },
    /// The database reported an error.
    #[error("key store error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// The storage boundary for API keys.
///
/// Every method but [`find_by_public_key`](Self::find_by_public_key), the
/// writer's batches ([`record_last_used`](Self::record_last_used),
/// [`rewrite_hashes`](Self::rewrite_hashes), [`record_usage`](Self::record_usage)),
/// [`usage`](Self::usage) and the pepper counts is scoped to an account: a key of
/// another account behaves as if it did not exist.
pub trait ApiKeyRepository: Send + Sync + 'static {
    /// The key with this public key, whatever its status.
    fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Inserts a new key. [`StoreError::Conflict`] if its id or public key exists.
    fn insert(&self, record: ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts every record in one transaction: all or none.
    /// [`StoreError::Conflict`] (and nothing written) if any id or public key
    /// exists, in the store or twice in `records`.
    fn insert_many(
        &self,
        records: Vec<ApiKeyRecord>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts every record in one transaction, as
    /// [`insert_many`](Self::insert_many), unless an account would then have
    /// more than `max_keys_per_account` keys (every stored key counts, revoked
    /// and expired ones too): then [`StoreError::TooManyKeys`] and nothing
    /// written. The count and the inserts are one atomic step: concurrent
    /// calls for one account never take it past the limit ([`SeaOrmRepository`]
    /// counts inside the inserts' transaction, serialized per account: an
    /// advisory transaction lock on PostgreSQL, a locking read on
    /// MySQL/MariaDB, the database's write lock on SQLite).
    ///
    /// Each record is audited `created` (or `imported`, for
    /// [`ChangeReason::Import`](crate::audit::ChangeReason::Import)) as
    /// `change` says, in the same transaction, with its `key.created` event
    /// in the outbox (none for an import).
    fn insert_within_limit(
        &self,
        records: Vec<ApiKeyRecord>,
        max_keys_per_account: u64,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The account's keys, newest first (`created_at` descending; rows without a
    /// `created_at` last).
    fn list_by_account(
        &self,
        account_id: Uuid,
    ) -> impl Future<Output = Result<Vec<ApiKeyRecord>, StoreError>> + Send;

    /// One key of the account.
    fn get(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Sets the key's status to revoked (idempotent) and returns the updated key.
    /// A key that was not revoked yet is audited (`revoked`,
    /// `revoked_by_holder` or `revoked_leaked`, as `change` says) and gets a
    /// `key.revoked` event, in the revoke's transaction.
    fn revoke(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Writes `changes` to the key and returns it as it is now (`None`: no such
    /// key in the account). With no changes, the key as it is. Audited
    /// `updated` (detail: the fields written) with a `key.updated` event, in
    /// the update's transaction.
    fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Limits the old key and inserts its successor in one transaction: the
    /// successor exists if and only if the old key was limited. Both come
    /// from [`Rotation::plan`] applied to the old key as read inside that
    /// transaction, after its row is locked against concurrent changes. A key has at
    /// most one successor ([`RotateOutcome::AlreadyRotated`] otherwise), also
    /// under concurrent rotations. Audited `rotated` on the old key and
    /// `created` on the successor, with the events `key.rotated` then
    /// `key.created`, in the rotation's transaction.
    fn rotate(
        &self,
        rotation: Rotation,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<RotateOutcome, StoreError>> + Send;

    /// Deletes the key and returns what was deleted; audited `deleted` with a
    /// `key.deleted` event, in the delete's transaction.
    fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<Option<ApiKeyRecord>, StoreError>> + Send;

    /// Writes `last_used_at` for every `(key_id, used_at)` pair where that moves
    /// it forward (the stored value is NULL or older); unknown ids are ignored.
    ///
    /// The usage writer calls it with at most 5,000 pairs at a time, each call
    /// under the store timeout; [`SeaOrmRepository`] writes each 5,000 pairs with
    /// one statement whose cost is linear in the pairs.
    fn record_last_used(
        &self,
        batch: &[(Uuid, DateTime<Utc>)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes each key's new hash and pepper id where the row still holds the
    /// old hash; changes nothing else (a re-hash racing a revoke cannot revive
    /// the key). One statement per chunk, as [`record_last_used`](Self::record_last_used).
    fn rewrite_hashes(
        &self,
        batch: &[HashRewrite],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds each count to the stored count of its key and day (an upsert that
    /// increments, so that the counts of several replicas add up); a row is
    /// created for a key and day not yet counted. Entries for the same key and
    /// day within `batch` add up too. Key ids are not checked against
    /// `api_keys`.
    ///
    /// The usage writer calls it with at most 5,000 counts at a time, each call
    /// under the store timeout; [`SeaOrmRepository`] writes them with one
    /// multi-row `INSERT … ON CONFLICT`/`ON DUPLICATE KEY UPDATE` statement per
    /// 5,000 rows.
    ///
    /// Deleting a key leaves its usage rows in place (they name a key id that
    /// is never reused); a host that wants them gone, or wants to keep only
    /// recent days, deletes from `tower_api_keys_usage` itself.
    fn record_usage(
        &self,
        batch: &[UsageCount],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The stored daily counts of `key_id` from `since` (inclusive) on, newest
    /// first; days without a row are left out. Not scoped to an account: the
    /// caller checks that the key is the account's.
    fn usage(
        &self,
        key_id: Uuid,
        since: NaiveDate,
    ) -> impl Future<Output = Result<Vec<(NaiveDate, u64)>, StoreError>> + Send;

    /// For each `pepper_id`, how many keys that can still validate name it.
    fn count_by_pepper(&self) -> impl Future<Output = Result<Vec<PepperCount>, StoreError>> + Send;

    /// Revokes every key that can still validate and names `pepper_id` (with
    /// `include_legacy`, also the rows with no `pepper_id`); returns how many.
    /// Each key revoked is audited `revoked` as `change` says, in the same
    /// transaction.
    fn revoke_by_pepper(
        &self,
        pepper_id: &str,
        include_legacy: bool,
        change: &ChangeRecord,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The audit rows `query` asks for, newest first (`id` descending).
    /// Default: none (a store that keeps no audit log).
    fn audit(
        &self,
        query: AuditQuery,
    ) -> impl Future<Output = Result<Vec<AuditEntry>, StoreError>> + Send {
        let _ = query;
        async { Ok(Vec::new()) }
    }

    /// Deletes audit rows older than `audit_before` and usage rows of days
    /// before `usage_before`, if no replica has done so within `every`
    /// (one replica at a time: the first to claim the task runs it). `None`
    /// when another replica ran it within `every`. Default: `None`.
    fn prune(
        &self,
        audit_before: DateTime<Utc>,
        usage_before: NaiveDate,
        every: std::time::Duration,
    ) -> impl Future<Output = Result<Option<Pruned>, StoreError>> + Send {
        let _ = (audit_before, usage_before, every);
        async { Ok(None) }
    }

    /// Leases until `now + lease` up to `limit` due events, each the earliest
    /// pending one of its key, oldest first, that no other caller gets meanwhile
    /// (`FOR UPDATE SKIP LOCKED`, or SQLite's write lock). Default: none.
    fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send {
        let _ = (now, lease, limit);
        async { Ok(Vec::new()) }
    }

    /// Records what became of an attempt to deliver event `id`, and ends
    /// its lease. Default: nothing.
    fn settle_event(
        &self,
        id: i64,
        outcome: Settle,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (id, outcome);
        async { Ok(()) }
    }

    /// Up to `limit` events kept as failed, oldest first. Default: none.
    fn failed_events(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<OutboxEvent>, StoreError>> + Send {
        let _ = limit;
        async { Ok(Vec::new()) }
    }

    /// Puts failed events back (the one with this `event_id`, or all), due
    /// now, with a new 24 h of retries; returns how many. Default: 0.
    fn retry_failed(
        &self,
        event_id: Option<&str>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = event_id;
        async { Ok(0) }
    }

    /// Writes `key.expiring` (expiry within `notice`) and `key.expired` (within
    /// the past week), once per key and expiry, never for a revoked key; how many. Default: 0.
    fn emit_clock_events(
        &self,
        now: DateTime<Utc>,
        notice: std::time::Duration,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = (now, notice);
        async { Ok(0) }
    }

    /// Where the validator learns of changes made by other writers (see
    /// [`crate::feed`]). Default: none, so changes made elsewhere reach a
    /// validator within its positive TTL. A wrapper around another repository
    /// should pass its inner repository's source on.
    fn change_source(&self) -> Option<ChangeSource> {
        None
    }
}

/// How many keys of each account `records` add, by account (in account
/// order, so that writers that lock accounts lock them in the same order).
pub(crate) fn keys_per_account(records: &[ApiKeyRecord]) -> std::collections::BTreeMap<Uuid, u64> {
    let mut adding = std::collections::BTreeMap::new();
    for record in records {
        *adding.entry(record.account_id).or_default() += 1;
    }
    adding
}
