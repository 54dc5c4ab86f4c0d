//! Key management for host code: create, list, get, update, rotate, revoke,
//! delete, each scoped to an account; revocation by the key holder.
//!
//! [`KeyManager`] and the changes of one account's keys live here; beside
//! them: what the manager returns about a key (`info`), its error (`error`),
//! revocation by the holder (`holder`), daily usage (`usage`), and the
//! operator's tools across accounts, import (`import`) and pepper rotation
//! (`pepper`).

mod audit;
mod error;
mod holder;
mod import;
mod info;
mod pepper;
mod usage;

pub(crate) mod rules;

use std::{
    future::Future,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

pub use self::{
    audit::{AuditPage, RETENTION_EVERY},
    error::ManagerError,
    holder::LeakedKey,
    info::{ApiKeyInfo, CreatedKey},
    pepper::{PepperRole, PepperStatus},
    usage::{DayUsage, KeyUsage},
};
use crate::{
    audit::ChangeRecord,
    identity::{AccountId, ApiKeyId},
    key::{KeyPair, Token},
    policy::Scopes,
    policy::limits::{DEFAULT_MAX_KEYS_PER_ACCOUNT, MAX_GRACE_PERIOD_SECONDS},
    store::{
        ApiKeyRecord, KeyChanges, KeyStatus, RotateOutcome, Rotation, Store, StoreError, Successor,
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
    /// Who acts, from where: see [`KeyManager::acting`].
    change: ChangeRecord,
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
            change: ChangeRecord::default(),
        }
    }

    /// A manager whose changes the audit log records as `change` says (who
    /// acts, from which address, why): the management router makes one per
    /// request from the `Actor` extension and the client's address. Default:
    /// no actor, no address, for the owner.
    ///
    /// ```
    /// # fn doc(manager: tower_api_keys::KeyManager) {
    /// use tower_api_keys::audit::{Actor, ChangeRecord};
    /// let manager = manager.acting(ChangeRecord::by(Actor::new("user:42")));
    /// # }
    /// ```
    pub fn acting(mut self, change: ChangeRecord) -> Self {
        self.change = change;
        self
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
            allowed_cidrs: request.allowed_cidrs,
        };
        let inserted = self
            .store
            .insert_within_limit(
                vec![record.clone()],
                self.max_keys_per_account,
                &self.change,
            )
            .await;
        // A probe of this public key before it existed must not linger as
        // "unknown" (also when the insert's outcome is unknown).
        self.validator.invalidate(&record.public_key);
        inserted.map_err(ManagerError::from_store)?;
        tracing::info!(key_id = %record.key_id, account_id = %account, "API key created");
        Ok(self.created(ApiKeyInfo::from_record(record, created_at), pair))
    }

    /// A new key with its secret and its token, in the validator's form.
    fn created(&self, key: ApiKeyInfo, pair: KeyPair) -> CreatedKey {
        let token = Token::new(
            self.validator.key_prefix(),
            &pair.public_key,
            &pair.secret_key,
        );
        CreatedKey {
            key,
            secret_key: pair.secret_key,
            token,
        }
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
        let revoked = self.store.revoke(account_id, id, &self.change).await;
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
            .update(
                account.into_inner(),
                key_id.into_inner(),
                &changes,
                &self.change,
            )
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
            .rotate(
                Rotation {
                    account_id: account.into_inner(),
                    old_key_id: key_id.into_inner(),
                    grace_period,
                    successor: successor.clone(),
                    scope_ceiling: self.scope_ceiling.clone(),
                },
                &self.change,
            )
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
        Ok(self.created(ApiKeyInfo::from_record(successor, now), pair))
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
        let deleted = self.store.delete(account_id, id, &self.change).await;
        self.validator.invalidate(&public_key);
        deleted?.ok_or(ManagerError::NotFound)?;
        tracing::info!(%key_id, account_id = %account, "API key deleted");
        Ok(())
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
        testing::fixtures::{Scripted, pepper},
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
    fn creation_times_strictly_increase() {
        let times: Vec<_> = (0..1000).map(|_| creation_time()).collect();
        assert!(times.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(times.iter().all(|t| t.timestamp_subsec_nanos() % 1000 == 0));
        assert!(times.iter().all(|t| t.timestamp_subsec_nanos() != 0));
    }
}
