//! A test double for the key store (feature `test-util`).
//!
//! [`Probe`] wraps any [`ApiKeyRepository`] (by default a
//! [`MemoryRepository`]) and lets a test see and steer what reaches it: it
//! counts lookups (in all and per public key), notes every batch the writer
//! sends, fails every call on demand or a given flush or usage write, stalls
//! lookups, answers them from a script, and awaits hooks around lookups and
//! writes so that a test can hold a request at a chosen point.
//!
//! The crate's unit tests and its integration tests share it; a host may use it
//! in its own tests the same way:
//!
//! ```toml
//! [dev-dependencies]
//! tower-api-keys = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! Nothing here is meant for production: every counter and script sits behind
//! a lock or an atomic that a real store would not need.

#[cfg(test)]
pub(crate) mod fixtures;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::{
    audit::{AuditEntry, AuditQuery, ChangeRecord},
    events::{OutboxEvent, Settle},
    feed::ChangeSource,
    store::{
        ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, MemoryRepository, PepperCount,
        RotateOutcome, Rotation, StoreError, UsageCount,
    },
    sync::lock,
};

/// Runs after a lookup has read the store, before its answer is returned;
/// given the public key looked up.
pub type LookupHook = Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Runs before or after a write of [`Probe`]'s, given the operation's name
/// (`insert` for either insert with a limit or without, `insert_many`,
/// `revoke`, `update`, `rotate`, `delete`).
pub type WriteHook =
    Arc<dyn Fn(&'static str) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

type Answer = Box<dyn Fn(&str) -> Option<ApiKeyRecord> + Send + Sync>;

/// The error every injected failure returns.
fn injected() -> StoreError {
    StoreError::Database("injected failure".into())
}

/// A repository wrapper whose lookups can be counted, failed, stalled forever,
/// held in a hook, or answered by a script, and whose writes are noted and can
/// fail (or hang) on demand.
///
/// Clones share every counter, switch and script, so a test keeps one clone
/// and gives another to the validator.
#[derive(Clone)]
pub struct Probe<R = MemoryRepository> {
    /// The wrapped repository, for writing or reading behind the probe's back.
    pub inner: R,
    /// Lookups, in all (failed and stalled ones included).
    pub lookups: Arc<AtomicUsize>,
    /// While set, every call fails with a [`StoreError::Database`].
    pub failing: Arc<AtomicBool>,
    /// While set, every lookup (after being counted) never answers.
    pub stalled: Arc<AtomicBool>,
    /// While set, revokes, updates, rotations and deletes are done, then never
    /// answered (a timeout after the statement committed).
    pub hang_after_write: Arc<AtomicBool>,
    /// `record_usage` calls numbered (from 1) this or higher fail; 0: none.
    pub fail_usage_from: Arc<AtomicUsize>,
    /// Re-hashes written, in all.
    pub rewrites: Arc<AtomicUsize>,
    /// Lookups per public key.
    per_key: Arc<Mutex<HashMap<String, usize>>>,
    answer: Arc<Mutex<Option<Answer>>>,
    /// The key ids of every `record_last_used` call, in order.
    flushed: Arc<Mutex<Vec<Vec<Uuid>>>>,
    /// `record_last_used` call number (from 1) that fails, or hangs.
    fail_flush: Arc<Mutex<Option<(usize, bool)>>>,
    /// Every `record_usage` call's batch, in order.
    usage_writes: Arc<Mutex<Vec<Vec<UsageCount>>>>,
    /// Whether the wrapped repository's change feed is passed on (default: no,
    /// so that what a test observes is its own doing).
    with_feed: bool,
    after_lookup: Option<LookupHook>,
    before_write: Option<WriteHook>,
    after_write: Option<WriteHook>,
}

impl<R: Default> Default for Probe<R> {
    fn default() -> Self {
        Self::new(R::default())
    }
}

impl<R> fmt::Debug for Probe<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("lookups", &self.lookups.load(Ordering::SeqCst))
            .field("failing", &self.failing.load(Ordering::SeqCst))
            .field("stalled", &self.stalled.load(Ordering::SeqCst))
            .field("with_feed", &self.with_feed)
            .finish_non_exhaustive()
    }
}

impl<R> Probe<R> {
    /// Wraps `inner`: nothing fails, nothing is held, the change feed is not
    /// passed on.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            lookups: Arc::default(),
            failing: Arc::default(),
            stalled: Arc::default(),
            hang_after_write: Arc::default(),
            fail_usage_from: Arc::default(),
            rewrites: Arc::default(),
            per_key: Arc::default(),
            answer: Arc::default(),
            flushed: Arc::default(),
            fail_flush: Arc::default(),
            usage_writes: Arc::default(),
            with_feed: false,
            after_lookup: None,
            before_write: None,
            after_write: None,
        }
    }

    /// Awaits `hook(operation)` before every write reaches the store.
    pub fn with_before_write<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(&'static str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.before_write = Some(Arc::new(move |operation| Box::pin(hook(operation))));
        self
    }

    /// Awaits `hook(operation)` after every write has returned from the
    /// store (committed), before its answer goes back.
    pub fn with_after_write<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(&'static str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.after_write = Some(Arc::new(move |operation| Box::pin(hook(operation))));
        self
    }

    /// Awaits `hook(public_key)` after every lookup has read the store.
    pub fn with_after_lookup<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.after_lookup = Some(Arc::new(move |public_key| Box::pin(hook(public_key))));
        self
    }

    /// Passes the wrapped repository's change feed on.
    pub fn with_feed(mut self) -> Self {
        self.with_feed = true;
        self
    }

    /// Answers every lookup with `answer(public_key)` instead of the rows.
    pub fn answer_with(
        &self,
        answer: impl Fn(&str) -> Option<ApiKeyRecord> + Send + Sync + 'static,
    ) {
        *lock(&self.answer) = Some(Box::new(answer));
    }

    /// Makes `record_last_used` call number `call` (counting from 1) fail, or
    /// never answer with `hang`.
    pub fn fail_flush_call(&self, call: usize, hang: bool) {
        *lock(&self.fail_flush) = Some((call, hang));
    }

    /// Lets every later `record_last_used` call succeed.
    pub fn heal_flushes(&self) {
        *lock(&self.fail_flush) = None;
    }

    /// Makes every later call fail (`true`) or succeed (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Lookups so far, in all.
    pub fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    /// Lookups of `public_key` so far.
    pub fn lookups_of(&self, public_key: &str) -> usize {
        lock(&self.per_key).get(public_key).copied().unwrap_or(0)
    }

    /// The key ids written by each `record_last_used` call so far.
    pub fn flushed(&self) -> Vec<Vec<Uuid>> {
        lock(&self.flushed).clone()
    }

    /// `record_last_used` calls so far.
    pub fn flushes(&self) -> usize {
        lock(&self.flushed).len()
    }

    /// The batch of each `record_usage` call so far.
    pub fn usage_writes(&self) -> Vec<Vec<UsageCount>> {
        lock(&self.usage_writes).clone()
    }

    /// Re-hashes written so far, in all.
    pub fn rewrites(&self) -> usize {
        self.rewrites.load(Ordering::SeqCst)
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(injected())
        } else {
            Ok(())
        }
    }

    /// `write` between the write hooks; a revoke, update, rotation or delete
    /// then hangs if asked to.
    async fn write<T>(
        &self,
        operation: &'static str,
        write: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.check()?;
        if let Some(hook) = &self.before_write {
            hook(operation).await;
        }
        let written = write.await;
        if let Some(hook) = &self.after_write {
            hook(operation).await;
        }
        if !operation.starts_with("insert") && self.hang_after_write.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        written
    }
}

impl<R: ApiKeyRepository> ApiKeyRepository for Probe<R> {
    async fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        *lock(&self.per_key)
            .entry(public_key.to_owned())
            .or_default() += 1;
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check()?;
        let scripted = lock(&self.answer).as_ref().map(|answer| answer(public_key));
        let row = match scripted {
            Some(row) => Ok(row),
            None => self.inner.find_by_public_key(public_key).await,
        };
        if let Some(hook) = &self.after_lookup {
            hook(public_key.to_owned()).await;
        }
        row
    }

    // Not an `async fn`: the failure is decided when the call is made, as a
    // repository may do, and the future only awaits the write.
    fn insert(&self, record: ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        let checked = self.check();
        let write = self.write("insert", self.inner.insert(record));
        async move {
            checked?;
            write.await
        }
    }

    async fn insert_many(&self, records: Vec<ApiKeyRecord>) -> Result<(), StoreError> {
        self.write("insert_many", self.inner.insert_many(records))
            .await
    }

    async fn insert_within_limit(
        &self,
        records: Vec<ApiKeyRecord>,
        max_keys_per_account: u64,
        change: &ChangeRecord,
    ) -> Result<(), StoreError> {
        self.write(
            "insert",
            self.inner
                .insert_within_limit(records, max_keys_per_account, change),
        )
        .await
    }

    async fn list_by_account(&self, account_id: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.check()?;
        self.inner.list_by_account(account_id).await
    }

    async fn get(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.check()?;
        self.inner.get(account_id, key_id).await
    }

    async fn revoke(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.write("revoke", self.inner.revoke(account_id, key_id, change))
            .await
    }

    async fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.write(
            "update",
            self.inner.update(account_id, key_id, changes, change),
        )
        .await
    }

    async fn rotate(
        &self,
        rotation: Rotation,
        change: &ChangeRecord,
    ) -> Result<RotateOutcome, StoreError> {
        self.write("rotate", self.inner.rotate(rotation, change))
            .await
    }

    async fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.write("delete", self.inner.delete(account_id, key_id, change))
            .await
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.check()?;
        self.inner.audit(query).await
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.check()?;
        self.inner.claim_events(now, lease, limit).await
    }

    async fn settle_event(&self, id: i64, outcome: Settle) -> Result<(), StoreError> {
        self.check()?;
        self.inner.settle_event(id, outcome).await
    }

    async fn failed_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.check()?;
        self.inner.failed_events(limit).await
    }

    async fn retry_failed(&self, event_id: Option<&str>) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.retry_failed(event_id).await
    }

    async fn emit_clock_events(
        &self,
        now: DateTime<Utc>,
        notice: std::time::Duration,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.emit_clock_events(now, notice).await
    }

    async fn prune(
        &self,
        audit_before: DateTime<Utc>,
        usage_before: chrono::NaiveDate,
        every: std::time::Duration,
    ) -> Result<Option<crate::store::Pruned>, StoreError> {
        self.check()?;
        self.inner.prune(audit_before, usage_before, every).await
    }

    async fn record_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        let call = {
            let mut flushed = lock(&self.flushed);
            flushed.push(batch.iter().map(|(key_id, _)| *key_id).collect());
            flushed.len()
        };
        let failing = *lock(&self.fail_flush);
        if let Some((at, hang)) = failing
            && at == call
        {
            if hang {
                std::future::pending::<()>().await;
            }
            return Err(injected());
        }
        self.check()?;
        self.inner.record_last_used(batch).await
    }

    async fn rewrite_hashes(&self, batch: &[HashRewrite]) -> Result<(), StoreError> {
        self.rewrites.fetch_add(batch.len(), Ordering::SeqCst);
        self.check()?;
        self.inner.rewrite_hashes(batch).await
    }

    async fn record_usage(&self, batch: &[UsageCount]) -> Result<(), StoreError> {
        let call = {
            let mut writes = lock(&self.usage_writes);
            writes.push(batch.to_vec());
            writes.len()
        };
        let from = self.fail_usage_from.load(Ordering::SeqCst);
        if from != 0 && call >= from {
            return Err(injected());
        }
        self.check()?;
        self.inner.record_usage(batch).await
    }

    async fn usage(
        &self,
        key_id: Uuid,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        self.check()?;
        self.inner.usage(key_id, since).await
    }

    async fn count_by_pepper(&self) -> Result<Vec<PepperCount>, StoreError> {
        self.check()?;
        self.inner.count_by_pepper().await
    }

    async fn revoke_by_pepper(
        &self,
        pepper_id: &str,
        include_legacy: bool,
        change: &ChangeRecord,
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner
            .revoke_by_pepper(pepper_id, include_legacy, change)
            .await
    }

    fn change_source(&self) -> Option<ChangeSource> {
        if self.with_feed {
            self.inner.change_source()
        } else {
            None
        }
    }
}
