//! Key management for host code: create, list, get, update, rotate, revoke,
//! delete, each scoped to an account; revocation by the key holder.

pub(crate) mod rules;

use std::{
    fmt,
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    identity::{AccountId, ApiKeyId},
    key::ring::PepperId,
    key::{KeyPair, RandomSourceError, SecretKey},
    policy::limits::{DEFAULT_MAX_KEYS_PER_ACCOUNT, MAX_GRACE_PERIOD_SECONDS},
    policy::rejection::Rejection,
    policy::{Metadata, Scopes},
    ratelimit::RateLimit,
    store::{
        ApiKeyRecord, EffectiveStatus, KeyChanges, KeyStatus, RotateOutcome, Rotation, Store,
        StoreError, Successor,
    },
    validator::ApiKeyValidator,
};
use rules::{FieldError, NewApiKey};

/// Creates, lists and retires keys of one account at a time.
///
/// Shares the [`ApiKeyValidator`]'s cache: revoking or deleting a key evicts it,
/// so the very next request on this process is refused.
///
/// Every change (create, update, rotate, revoke, delete, import, revocation
/// by the holder, retiring a pepper) runs to its end on a Tokio task of its
/// own, which the method awaits: if the caller stops waiting (an HTTP handler
/// dropped because its client disconnected), a write that reached the store
/// still evicts the key from this process's cache.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tower_api_keys::{AccountId, ApiKeyValidator, KeyManager, NewApiKey, Pepper, store::MemoryRepository};
///
/// let validator = ApiKeyValidator::new(MemoryRepository::new(), Pepper::try_from("a-pepper-of-at-least-16-bytes")?);
/// let manager = KeyManager::new(validator.clone());
/// let account = AccountId::new(uuid::Uuid::new_v4());
///
/// let created = manager.create(account, NewApiKey::new("CI deploys")).await?;
/// let key = validator.validate(&created.credential()).await?;
/// assert_eq!(key.account_id(), account);
///
/// manager.revoke(account, created.key.key_id).await?;
/// assert!(validator.validate(&created.credential()).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct KeyManager {
    validator: ApiKeyValidator,
    store: Store,
    /// Set by [`KeyManager::with_scope_ceiling`]: every key this manager
    /// creates, rotates into or changes holds only these scopes.
    scope_ceiling: Option<Scopes>,
    /// See [`KeyManager::with_max_keys_per_account`].
    max_keys_per_account: u64,
}

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
}

impl ApiKeyInfo {
    fn from_record(record: ApiKeyRecord, now: DateTime<Utc>) -> Self {
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
}

impl CreatedKey {
    /// The credential a client sends: `pk_…:sk_…`. Never log it.
    pub fn credential(&self) -> String {
        crate::key::credential(&self.key.public_key, &self.secret_key)
    }
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("key", &self.key)
            .field("secret_key", &self.secret_key)
            .finish()
    }
}

/// The role of a pepper in the validator's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PepperRole {
    /// Makes every new hash.
    Current,
    /// An older pepper, still accepted.
    Previous,
    /// The oldest pepper: it also covers rows that name no pepper.
    Legacy,
    /// Named by rows but not in the ring: those keys are refused.
    Missing,
}

/// One line of [`KeyManager::pepper_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PepperStatus {
    /// The pepper's id (`None` only for a stored id that is not a valid one).
    pub pepper_id: Option<PepperId>,
    /// Its role.
    pub role: PepperRole,
    /// Whether the validator holds this pepper.
    pub in_ring: bool,
    /// Keys that can still validate and were hashed with it.
    pub keys: u64,
}

/// One UTC day of a key's usage, in [`KeyUsage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DayUsage {
    /// The UTC day; serialized `YYYY-MM-DD`.
    pub date: NaiveDate,
    /// Requests the authentication layer let through with the key that day,
    /// summed over every replica, as far as flushed to the store.
    pub requests: u64,
}

/// A key's daily request counts, from [`KeyManager::usage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    /// The key.
    pub key_id: ApiKeyId,
    /// One entry per UTC day, today first, days without requests included.
    pub days: Vec<DayUsage>,
}

/// Most days [`KeyManager::usage`] reports.
const MAX_USAGE_DAYS: u32 = 90;

/// A key-management operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No such key in this account.
    #[error("API key not found")]
    NotFound,
    /// The key to rotate is revoked or expired.
    #[error("API key is not active")]
    NotActive,
    /// The key to rotate already has a successor (it is in its grace period).
    #[error("API key has already been rotated")]
    AlreadyRotated,
    /// The key store could not be reached to check a credential.
    #[error("the key store is unavailable")]
    Unavailable,
    /// The key would hold a scope the acting party does not (see
    /// [`KeyManager::with_scope_ceiling`]): nothing was written.
    #[error("the API key cannot create, rotate into or change a key with scopes it does not hold")]
    ScopesNotHeld,
    /// The account already has the most keys allowed
    /// ([`KeyManager::with_max_keys_per_account`]): nothing was written.
    #[error("too many API keys for account {account_id} (at most {limit})")]
    TooManyKeys {
        /// The account.
        account_id: AccountId,
        /// The most keys an account may have.
        limit: u64,
    },
    /// The request broke a rule; one entry per field.
    #[error("invalid API key request: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomSourceError),
    /// The store failed or timed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A credential as a key holder presents it for revocation, without ASCII
/// whitespace around it and without a `Bearer ` prefix (the scheme in any
/// case, then any ASCII whitespace).
fn presented_credential(text: &str) -> &str {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    match text.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            rest.trim_start_matches(|c: char| c.is_ascii_whitespace())
        }
        _ => text,
    }
}

/// Runs a change (its store calls and the cache evictions after them) to the
/// end on a task of its own, and waits for it. The caller's future may be
/// dropped at any await, as hyper drops a handler whose client disconnected;
/// the change then still completes, and a committed write still evicts the
/// key from this process's cache.
async fn to_completion<T: Send + 'static>(
    change: impl Future<Output = Result<T, ManagerError>> + Send + 'static,
) -> Result<T, ManagerError> {
    match tokio::spawn(change).await {
        Ok(result) => result,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down: the change's outcome is unknown.
        Err(err) => Err(ManagerError::Store(StoreError::Database(Box::new(err)))),
    }
}

impl ManagerError {
    /// A store error, with the per-account limit lifted to
    /// [`ManagerError::TooManyKeys`].
    fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::TooManyKeys { account_id, limit } => Self::TooManyKeys {
                account_id: account_id.into(),
                limit,
            },
            err => Self::Store(err),
        }
    }
}

/// `created_at` values that strictly increase within this process, at the
/// microsecond precision every backend keeps, so that "newest first" follows
/// creation order even for keys created in the same microsecond.
fn creation_time() -> DateTime<Utc> {
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let now = Utc::now().timestamp_micros();
    let mut previous = LAST.load(Ordering::Relaxed);
    loop {
        let next = crate::store::off_whole_second(now.max(previous.saturating_add(1)));
        match LAST.compare_exchange_weak(previous, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return DateTime::from_timestamp_micros(next).unwrap_or_else(Utc::now),
            Err(actual) => previous = actual,
        }
    }
}

impl KeyManager {
    /// A manager over the validator's store and cache.
    pub fn new(validator: ApiKeyValidator) -> Self {
        Self {
            store: validator.store().clone(),
            validator,
            scope_ceiling: None,
            max_keys_per_account: DEFAULT_MAX_KEYS_PER_ACCOUNT,
        }
    }

    /// The most keys one account may have: creating or importing one more is
    /// [`ManagerError::TooManyKeys`]. Every key that is not deleted counts,
    /// revoked and expired ones too; a rotation is allowed at the limit (its
    /// old key ends with the grace period, and counts until deleted). The
    /// count is atomic with the insert, also under concurrent creates.
    /// Default: [`DEFAULT_MAX_KEYS_PER_ACCOUNT`] (1,000).
    pub fn with_max_keys_per_account(mut self, max: u64) -> Self {
        self.max_keys_per_account = max;
        self
    }

    /// A manager that acts for someone holding only `scopes` (an API key used
    /// on the management API, say): every key it creates, rotates into or
    /// changes must hold only scopes of `scopes`, and so never be
    /// unrestricted; otherwise [`ManagerError::ScopesNotHeld`]. Revoking,
    /// deleting and reading are not limited. Default: no ceiling.
    ///
    /// The management router applies the acting key's scopes this way when
    /// the host lets API keys manage keys
    /// (`ManagementRouter::allow_api_key_auth`).
    pub fn with_scope_ceiling(mut self, scopes: Scopes) -> Self {
        self.scope_ceiling = Some(scopes);
        self
    }

    /// Whether a key with `scopes` is within the ceiling, if any.
    fn within_ceiling(&self, scopes: Option<&Scopes>) -> Result<(), ManagerError> {
        match &self.scope_ceiling {
            Some(ceiling) if !ceiling.covers(scopes) => Err(ManagerError::ScopesNotHeld),
            _ => Ok(()),
        }
    }

    /// The validator this manager evicts from.
    pub fn validator(&self) -> &ApiKeyValidator {
        &self.validator
    }

    /// Creates a key for `account`. The returned secret is not stored and cannot
    /// be read again.
    pub async fn create(
        &self,
        account: AccountId,
        request: NewApiKey,
    ) -> Result<CreatedKey, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.create_now(account, request).await }).await
    }

    async fn create_now(
        &self,
        account: AccountId,
        request: NewApiKey,
    ) -> Result<CreatedKey, ManagerError> {
        request.validate().map_err(ManagerError::Invalid)?;
        self.within_ceiling(request.scopes.as_ref())?;
        let created_at = creation_time();
        let expires_at = request
            .expires_in_days
            .map(|days| created_at + TimeDelta::days(days));
        let pair = KeyPair::generate()?;
        let (hash, pepper_id) = self.validator.hash_new_secret(pair.secret_key.expose());
        let record = ApiKeyRecord {
            key_id: Uuid::new_v4(),
            public_key: pair.public_key.as_str().to_owned(),
            secret_key_hash: hash.to_hex().into(),
            account_id: account.into_inner(),
            title: request.title.trim().to_owned(),
            description: request.description,
            status: KeyStatus::Active,
            expires_at,
            last_used_at: None,
            created_at: Some(created_at),
            pepper_id: Some(pepper_id.as_str().to_owned()),
            scopes: request.scopes,
            metadata: request.metadata,
            rotated_from: None,
            rate_limit: request.rate_limit,
        };
        let inserted = self
            .store
            .insert_within_limit(vec![record.clone()], self.max_keys_per_account)
            .await;
        // A probe of this public key before it existed must not linger as
        // "unknown" (also when the insert's outcome is unknown).
        self.validator.invalidate(&record.public_key);
        inserted.map_err(ManagerError::from_store)?;
        tracing::info!(key_id = %record.key_id, account_id = %account, "API key created");
        Ok(CreatedKey {
            key: ApiKeyInfo::from_record(record, created_at),
            secret_key: pair.secret_key,
        })
    }

    /// The account's keys, newest first.
    pub async fn list(&self, account: AccountId) -> Result<Vec<ApiKeyInfo>, ManagerError> {
        let records = self.store.list_by_account(account.into_inner()).await?;
        let now = Utc::now();
        Ok(records
            .into_iter()
            .map(|record| ApiKeyInfo::from_record(record, now))
            .collect())
    }

    /// One key of the account.
    pub async fn get(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
    ) -> Result<ApiKeyInfo, ManagerError> {
        self.store
            .get(account.into_inner(), key_id.into_inner())
            .await?
            .map(|record| ApiKeyInfo::from_record(record, Utc::now()))
            .ok_or(ManagerError::NotFound)
    }

    /// Revokes the key (idempotent). Requests on this process are refused from
    /// the moment this returns, whatever it returns: if the store fails or times
    /// out after the revoke was sent, it may have committed, so the key leaves
    /// the cache all the same.
    pub async fn revoke(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
    ) -> Result<ApiKeyInfo, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.revoke_now(account, key_id).await }).await
    }

    async fn revoke_now(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
    ) -> Result<ApiKeyInfo, ManagerError> {
        let (account_id, id) = (account.into_inner(), key_id.into_inner());
        let public_key = self.public_key_of(account, key_id).await?;
        let revoked = self.store.revoke(account_id, id).await;
        self.validator.invalidate(&public_key);
        let record = revoked?.ok_or(ManagerError::NotFound)?;
        tracing::info!(%key_id, account_id = %account, "API key revoked");
        Ok(ApiKeyInfo::from_record(record, Utc::now()))
    }

    /// Changes the key's title, description, scopes, metadata or rate limit and returns it
    /// as it is now. Takes effect on the next request on this process (the key
    /// leaves the cache) and, through the change feed, on every replica.
    pub async fn update(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        changes: KeyChanges,
    ) -> Result<ApiKeyInfo, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.update_now(account, key_id, changes).await }).await
    }

    async fn update_now(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        changes: KeyChanges,
    ) -> Result<ApiKeyInfo, ManagerError> {
        changes.validate().map_err(ManagerError::Invalid)?;
        let changes = KeyChanges {
            title: changes.title.map(|title| title.trim().to_owned()),
            ..changes
        };
        let current = self
            .store
            .get(account.into_inner(), key_id.into_inner())
            .await?
            .ok_or(ManagerError::NotFound)?;
        self.within_ceiling(current.scopes.as_ref())?;
        if let Some(scopes) = &changes.scopes {
            self.within_ceiling(scopes.as_ref())?;
        }
        let public_key = current.public_key;
        let updated = self
            .store
            .update(account.into_inner(), key_id.into_inner(), &changes)
            .await;
        self.validator.invalidate(&public_key);
        let record = updated?.ok_or(ManagerError::NotFound)?;
        tracing::info!(%key_id, account_id = %account, "API key updated");
        Ok(ApiKeyInfo::from_record(record, Utc::now()))
    }

    /// Replaces the key with a new one that copies its title, description,
    /// scopes, metadata and rate limit, and its lifetime counted from now, as
    /// the key is when the rotation commits (a change that commits first is
    /// copied, never lost to an earlier read). The old key is
    /// revoked at once for a zero `grace_period`, else it expires at the end of
    /// the grace period (never later than it would have). Atomic in the store:
    /// the new key exists if and only if the old one was limited; a key has at
    /// most one successor.
    ///
    /// Errors: [`ManagerError::NotActive`] for a revoked or expired key,
    /// [`ManagerError::AlreadyRotated`] for a key in its grace period,
    /// [`ManagerError::Invalid`] for a grace period over 7 days.
    pub async fn rotate(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        grace_period: Duration,
    ) -> Result<CreatedKey, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.rotate_now(account, key_id, grace_period).await }).await
    }

    async fn rotate_now(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        grace_period: Duration,
    ) -> Result<CreatedKey, ManagerError> {
        if grace_period.as_secs() > MAX_GRACE_PERIOD_SECONDS {
            return Err(ManagerError::Invalid(vec![FieldError::new(
                "grace_period_seconds",
                format!("must be an integer from 0 to {MAX_GRACE_PERIOD_SECONDS}"),
            )]));
        }
        // Read first only for the public key, which leaves the cache whatever
        // the outcome; the successor copies the old key as the store reads it
        // inside the rotation's transaction.
        let old_public_key = self.public_key_of(account, key_id).await?;
        let pair = KeyPair::generate()?;
        let (hash, pepper_id) = self.validator.hash_new_secret(pair.secret_key.expose());
        let successor = Successor {
            key_id: Uuid::new_v4(),
            public_key: pair.public_key.as_str().to_owned(),
            secret_key_hash: hash.to_hex().into(),
            pepper_id: Some(pepper_id.as_str().to_owned()),
            created_at: creation_time(),
        };
        let outcome = self
            .store
            .rotate(Rotation {
                account_id: account.into_inner(),
                old_key_id: key_id.into_inner(),
                grace_period,
                successor: successor.clone(),
                scope_ceiling: self.scope_ceiling.clone(),
            })
            .await;
        // Whatever the outcome, neither key may stay cached as it was.
        self.validator.invalidate(&old_public_key);
        self.validator.invalidate(&successor.public_key);
        let successor = match outcome? {
            RotateOutcome::Rotated { successor, .. } => *successor,
            RotateOutcome::NotFound => return Err(ManagerError::NotFound),
            RotateOutcome::NotActive => return Err(ManagerError::NotActive),
            RotateOutcome::AlreadyRotated => return Err(ManagerError::AlreadyRotated),
            RotateOutcome::ScopesNotHeld => return Err(ManagerError::ScopesNotHeld),
        };
        tracing::info!(%key_id, new_key_id = %successor.key_id, account_id = %account, grace_seconds = grace_period.as_secs(), "API key rotated");
        let now = successor.created_at.unwrap_or_else(Utc::now);
        Ok(CreatedKey {
            key: ApiKeyInfo::from_record(successor, now),
            secret_key: pair.secret_key,
        })
    }

    /// Revokes the key a full credential names, for its holder (for example a
    /// leaked key reported by a secret scanner). Succeeds the same way whether
    /// or not the credential was valid, malformed, unknown or already revoked,
    /// so that it cannot be used to test keys; the credential is checked by the
    /// same constant-time path as the layer. ASCII whitespace around the
    /// credential and a `Bearer ` prefix (as copied from a header) are
    /// removed first. [`ManagerError::Unavailable`] or [`ManagerError::Store`]
    /// only when the store could not be reached.
    pub async fn revoke_by_credential(&self, credential: &str) -> Result<(), ManagerError> {
        let credential = credential.to_owned();
        let this = self.clone();
        to_completion(async move { this.revoke_by_credential_now(&credential).await }).await
    }

    async fn revoke_by_credential_now(&self, credential: &str) -> Result<(), ManagerError> {
        let credential = presented_credential(credential);
        let key = match self.validator.validate(credential).await {
            Ok(key) => key,
            Err(Rejection::StoreUnavailable) => return Err(ManagerError::Unavailable),
            Err(Rejection::MalformedCredential | Rejection::MissingCredential) => {
                // The layer refuses these before any HMAC; here the answer must
                // not come back faster than for an unknown key.
                let secret = credential.get(credential.len().saturating_sub(35)..);
                self.validator.verify_dummy(secret.unwrap_or(credential));
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let revoked = self
            .store
            .revoke(key.account_id().into_inner(), key.key_id().into_inner())
            .await;
        self.validator.invalidate(key.public_key());
        revoked?;
        tracing::info!(key_id = %key.key_id(), account_id = %key.account_id(), "API key revoked by its holder");
        Ok(())
    }

    /// Imports keys that were made elsewhere (already hashed; the secrets are
    /// not known here), across accounts: an operator's tool. Every record is
    /// checked before any is written ([`ManagerError::Invalid`], field names
    /// `records[i].field`), and they are written in one transaction: a
    /// duplicate id or public key (in the store or twice in `records`) writes
    /// nothing and is [`ManagerError::Store`] with [`StoreError::Conflict`];
    /// an account that would have more than the most keys allowed writes
    /// nothing and is [`ManagerError::TooManyKeys`]. A row without
    /// `created_at` gets the current time. Returns how many were written.
    pub async fn import(&self, records: Vec<ApiKeyRecord>) -> Result<usize, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.import_now(records).await }).await
    }

    async fn import_now(&self, records: Vec<ApiKeyRecord>) -> Result<usize, ManagerError> {
        let mut errors = Vec::new();
        for (index, record) in records.iter().enumerate() {
            rules::check_record(record, &format!("records[{index}]."), &mut errors);
        }
        if !errors.is_empty() {
            return Err(ManagerError::Invalid(errors));
        }
        for record in &records {
            self.within_ceiling(record.scopes.as_ref())?;
        }
        let count = records.len();
        let public_keys: Vec<String> = records.iter().map(|r| r.public_key.clone()).collect();
        let records = records
            .into_iter()
            .map(|mut record| {
                record.created_at = Some(record.created_at.unwrap_or_else(creation_time));
                record
            })
            .collect();
        let inserted = self
            .store
            .insert_within_limit(records, self.max_keys_per_account)
            .await;
        for public_key in &public_keys {
            self.validator.invalidate(public_key);
        }
        inserted.map_err(ManagerError::from_store)?;
        tracing::info!(keys = count, "API keys imported");
        Ok(count)
    }

    /// Deletes the key. Requests on this process are refused from the moment
    /// this returns, whatever it returns (as [`revoke`](Self::revoke)).
    pub async fn delete(&self, account: AccountId, key_id: ApiKeyId) -> Result<(), ManagerError> {
        let this = self.clone();
        to_completion(async move { this.delete_now(account, key_id).await }).await
    }

    async fn delete_now(&self, account: AccountId, key_id: ApiKeyId) -> Result<(), ManagerError> {
        let (account_id, id) = (account.into_inner(), key_id.into_inner());
        let public_key = self.public_key_of(account, key_id).await?;
        let deleted = self.store.delete(account_id, id).await;
        self.validator.invalidate(&public_key);
        deleted?.ok_or(ManagerError::NotFound)?;
        tracing::info!(%key_id, account_id = %account, "API key deleted");
        Ok(())
    }

    /// How far a pepper rotation has come: for each pepper of the validator's
    /// ring (current first) and each pepper id rows name that the ring lacks,
    /// how many keys that can still validate (not revoked, not expired) it
    /// covers. A previous pepper can be dropped from the configuration once its
    /// count is 0 (keys re-hash on their first use), or after
    /// [`retire_pepper`](Self::retire_pepper) revoked the unused rest. Across
    /// every account: an operator's view.
    pub async fn pepper_status(&self) -> Result<Vec<PepperStatus>, ManagerError> {
        let counts = self.store.count_by_pepper().await?;
        let ring: Vec<PepperId> = self.validator.pepper_ids().cloned().collect();
        let legacy = ring.last().cloned();
        let count_of = |id: Option<&str>| {
            counts
                .iter()
                .filter(|count| count.pepper_id.as_deref() == id)
                .map(|count| count.keys)
                .sum::<u64>()
        };
        let mut status: Vec<PepperStatus> = ring
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let is_legacy = Some(id) == legacy.as_ref();
                PepperStatus {
                    pepper_id: Some(id.clone()),
                    role: if index == 0 {
                        PepperRole::Current
                    } else if is_legacy {
                        PepperRole::Legacy
                    } else {
                        PepperRole::Previous
                    },
                    in_ring: true,
                    // The legacy pepper also covers the rows that name none.
                    keys: count_of(Some(id.as_str())) + if is_legacy { count_of(None) } else { 0 },
                }
            })
            .collect();
        for count in &counts {
            let Some(id) = &count.pepper_id else { continue };
            if !ring.iter().any(|known| known.as_str() == id) && count.keys > 0 {
                status.push(PepperStatus {
                    pepper_id: id.parse().ok(),
                    role: PepperRole::Missing,
                    in_ring: false,
                    keys: count.keys,
                });
            }
        }
        Ok(status)
    }

    /// Revokes every key that can still validate and was hashed with the
    /// pepper `pepper_id` (for the legacy pepper, also the rows that name no
    /// pepper): the end of a rotation, for keys unused since it began. Returns
    /// how many were revoked. The current pepper cannot be retired.
    pub async fn retire_pepper(&self, pepper_id: &PepperId) -> Result<u64, ManagerError> {
        let pepper_id = pepper_id.clone();
        let this = self.clone();
        to_completion(async move { this.retire_pepper_now(&pepper_id).await }).await
    }

    async fn retire_pepper_now(&self, pepper_id: &PepperId) -> Result<u64, ManagerError> {
        let ring: Vec<PepperId> = self.validator.pepper_ids().cloned().collect();
        if ring.first() == Some(pepper_id) {
            return Err(ManagerError::Invalid(vec![FieldError::new(
                "pepper_id",
                "the current pepper cannot be retired",
            )]));
        }
        let include_legacy = ring.len() > 1 && ring.last() == Some(pepper_id);
        let revoked = self
            .store
            .revoke_by_pepper(pepper_id.as_str(), include_legacy)
            .await;
        // Many keys may have changed: none of them may stay cached.
        self.validator.invalidate_all();
        let revoked = revoked?;
        tracing::info!(pepper_id = %pepper_id, keys = revoked, "pepper retired: its remaining keys revoked");
        Ok(revoked)
    }

    /// The key's request counts for the last `days` UTC days (1 to 90),
    /// today first: exactly `days` entries, zeros
    /// included. A request counts when the authentication layer lets it
    /// through (a `429` does not); counts are summed over every replica
    /// sharing the store.
    ///
    /// Reads the store only: counts still held in memory by a validator
    /// appear once it has flushed them (with `last_used_at`, every flush
    /// interval, at [`ApiKeyValidator::shutdown`], or on
    /// [`ApiKeyValidator::flush`]).
    ///
    /// Errors: [`ManagerError::Invalid`] (field `days`) outside 1 to 90,
    /// [`ManagerError::NotFound`] for a key that is not the account's.
    pub async fn usage(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        days: u32,
    ) -> Result<KeyUsage, ManagerError> {
        if !(1..=MAX_USAGE_DAYS).contains(&days) {
            return Err(ManagerError::Invalid(vec![FieldError::new(
                "days",
                format!("must be an integer from 1 to {MAX_USAGE_DAYS}"),
            )]));
        }
        self.store
            .get(account.into_inner(), key_id.into_inner())
            .await?
            .ok_or(ManagerError::NotFound)?;
        let today = Utc::now().date_naive();
        let since = today - TimeDelta::days(i64::from(days) - 1);
        let stored = self.store.usage(key_id.into_inner(), since).await?;
        let days = (0..i64::from(days))
            .map(|back| today - TimeDelta::days(back))
            .map(|date| DayUsage {
                date,
                requests: stored
                    .iter()
                    .filter(|(day, _)| *day == date)
                    .map(|(_, requests)| *requests)
                    .sum(),
            })
            .collect();
        Ok(KeyUsage { key_id, days })
    }

    /// The public key of the account's key, read before a change so that the
    /// key can leave the cache whatever the change's outcome.
    async fn public_key_of(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
    ) -> Result<String, ManagerError> {
        self.store
            .get(account.into_inner(), key_id.into_inner())
            .await?
            .map(|record| record.public_key)
            .ok_or(ManagerError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::Ordering, time::Duration};

    use super::*;
    use crate::{
        policy::rejection::Rejection,
        test_support::{Scripted, pepper},
    };

    /// A revoke or delete whose store call times out after the statement
    /// committed returns an error, and the key is refused all the same.
    #[tokio::test]
    async fn a_change_whose_outcome_is_unknown_still_evicts_the_key() {
        for delete in [false, true] {
            let repository = Scripted::default();
            let validator = ApiKeyValidator::builder(repository.clone(), pepper())
                .with_store_timeout(Duration::from_millis(50))
                .build();
            let manager = KeyManager::new(validator.clone());
            let account = AccountId::new(Uuid::new_v4());
            let created = manager.create(account, NewApiKey::new("k")).await.unwrap();
            assert!(validator.validate(&created.credential()).await.is_ok());

            repository.hang_after_write.store(true, Ordering::SeqCst);
            let result = if delete {
                manager.delete(account, created.key.key_id).await
            } else {
                manager.revoke(account, created.key.key_id).await.map(drop)
            };
            assert!(
                matches!(result, Err(ManagerError::Store(StoreError::Timeout(_)))),
                "{result:?}"
            );
            assert_eq!(
                validator.validate(&created.credential()).await,
                Err(Rejection::InvalidCredential),
                "delete: {delete}"
            );
        }
    }

    #[test]
    fn a_presented_credential_loses_whitespace_and_a_bearer_prefix() {
        let credential = "pk_a:sk_b";
        for presented in [
            "pk_a:sk_b",
            "  pk_a:sk_b\r\n",
            "\tpk_a:sk_b ",
            "Bearer pk_a:sk_b",
            " bearer\t pk_a:sk_b \n",
            "BEARER  pk_a:sk_b",
        ] {
            assert_eq!(presented_credential(presented), credential, "{presented:?}");
        }
        // Anything else is passed on as it is, to be refused as malformed.
        assert_eq!(presented_credential("Basic pk_a:sk_b"), "Basic pk_a:sk_b");
        assert_eq!(presented_credential("pk_a: sk_b"), "pk_a: sk_b");
        assert_eq!(presented_credential("Bearer"), "Bearer");
        assert_eq!(presented_credential("\u{a0}pk_a:sk_b"), "\u{a0}pk_a:sk_b");
    }

    #[test]
    fn creation_times_strictly_increase() {
        let times: Vec<_> = (0..1000).map(|_| creation_time()).collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(times.iter().all(|t| t.timestamp_subsec_nanos() % 1000 == 0));
        assert!(times.iter().all(|t| t.timestamp_subsec_nanos() != 0));
    }
}
