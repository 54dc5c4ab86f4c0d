//! The one timed boundary in front of the repository: every call the crate
//! makes to the store goes through [`Store`], which applies the store timeout
//! and holds the repository as a trait object, so that the validator, the
//! usage writer and the key manager are not generic over it.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::audit::{AuditEntry, AuditQuery, ChangeRecord};
use crate::events::{OutboxEvent, Settle};

use super::{
    ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, PepperCount, Pruned, RotateOutcome,
    Rotation, StoreError, UsageCount,
};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Declares, from one list of the repository's methods, its object-safe
/// mirror, the mirror's blanket implementation and the timed wrappers on
/// [`Store`].
macro_rules! boundary {
    ($($(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        /// Object-safe mirror of [`ApiKeyRepository`].
        trait DynRepository: Send + Sync + 'static {
            $(fn $name<'a>(&'a self $(, $arg: $ty)*) -> BoxFuture<'a, Result<$ret, StoreError>>;)*
        }

        impl<R: ApiKeyRepository> DynRepository for R {
            $(fn $name<'a>(&'a self $(, $arg: $ty)*) -> BoxFuture<'a, Result<$ret, StoreError>> {
                Box::pin(ApiKeyRepository::$name(self $(, $arg)*))
            })*
        }

        #[allow(clippy::needless_lifetimes)]
        impl Store {
            $(
                $(#[$doc])*
                pub(crate) async fn $name<'a>(&'a self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    self.timed(stringify!($name), self.repository.$name($($arg),*)).await
                }
            )*
        }
    };
}

boundary! {
    /// See [`ApiKeyRepository::find_by_public_key`].
    fn find_by_public_key(&self, public_key: &'a str) -> Option<ApiKeyRecord>;
    /// See [`ApiKeyRepository::insert_within_limit`].
    fn insert_within_limit(&self, records: Vec<ApiKeyRecord>, max_keys_per_account: u64, change: &'a ChangeRecord) -> ();
    /// See [`ApiKeyRepository::list_by_account`].
    fn list_by_account(&self, account_id: Uuid) -> Vec<ApiKeyRecord>;
    /// See [`ApiKeyRepository::get`].
    fn get(&self, account_id: Uuid, key_id: Uuid) -> Option<ApiKeyRecord>;
    /// See [`ApiKeyRepository::revoke`].
    fn revoke(&self, account_id: Uuid, key_id: Uuid, change: &'a ChangeRecord) -> Option<ApiKeyRecord>;
    /// See [`ApiKeyRepository::update`].
    fn update(&self, account_id: Uuid, key_id: Uuid, changes: &'a KeyChanges, change: &'a ChangeRecord) -> Option<ApiKeyRecord>;
    /// See [`ApiKeyRepository::rotate`].
    fn rotate(&self, rotation: Rotation, change: &'a ChangeRecord) -> RotateOutcome;
    /// See [`ApiKeyRepository::delete`].
    fn delete(&self, account_id: Uuid, key_id: Uuid, change: &'a ChangeRecord) -> Option<ApiKeyRecord>;
    /// See [`ApiKeyRepository::audit`].
    fn audit(&self, query: AuditQuery) -> Vec<AuditEntry>;
    /// See [`ApiKeyRepository::claim_events`].
    fn claim_events(&self, now: DateTime<Utc>, lease: Duration, limit: u32) -> Vec<OutboxEvent>;
    /// See [`ApiKeyRepository::settle_event`].
    fn settle_event(&self, id: i64, outcome: Settle) -> ();
    /// See [`ApiKeyRepository::failed_events`].
    fn failed_events(&self, limit: u32) -> Vec<OutboxEvent>;
    /// See [`ApiKeyRepository::retry_failed`].
    fn retry_failed(&self, event_id: Option<&'a str>) -> u64;
    /// See [`ApiKeyRepository::emit_clock_events`].
    fn emit_clock_events(&self, now: DateTime<Utc>, notice: Duration) -> u64;
    /// See [`ApiKeyRepository::prune`].
    fn prune(&self, audit_before: DateTime<Utc>, usage_before: NaiveDate, every: Duration) -> Option<Pruned>;
    /// See [`ApiKeyRepository::record_last_used`].
    fn record_last_used(&self, batch: &'a [(Uuid, DateTime<Utc>)]) -> ();
    /// See [`ApiKeyRepository::rewrite_hashes`].
    fn rewrite_hashes(&self, batch: &'a [HashRewrite]) -> ();
    /// See [`ApiKeyRepository::record_usage`].
    fn record_usage(&self, batch: &'a [UsageCount]) -> ();
    /// See [`ApiKeyRepository::usage`].
    fn usage(&self, key_id: Uuid, since: NaiveDate) -> Vec<(NaiveDate, u64)>;
    /// See [`ApiKeyRepository::count_by_pepper`].
    fn count_by_pepper(&self) -> Vec<PepperCount>;
    /// See [`ApiKeyRepository::revoke_by_pepper`].
    fn revoke_by_pepper(&self, pepper_id: &'a str, include_legacy: bool, change: &'a ChangeRecord) -> u64;
}

/// The repository behind the store timeout. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    repository: Arc<dyn DynRepository>,
    timeout: Duration,
}

impl Store {
    pub(crate) fn new(repository: impl ApiKeyRepository, timeout: Duration) -> Self {
        Self {
            repository: Arc::new(repository),
            timeout,
        }
    }

    /// The same repository under another timeout.
    pub(crate) fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// How long one store call may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `operation`, or [`StoreError::Timeout`] once the timeout has passed;
    /// its duration goes to `tower_api_keys_store_duration_seconds` under
    /// the label `operation` (`name`).
    async fn timed<T>(
        &self,
        name: &'static str,
        operation: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.timeout, operation)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.timeout)));
        metrics::histogram!(crate::telemetry::STORE_DURATION, "operation" => name)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
