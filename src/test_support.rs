//! Repositories for the crate's own unit tests.

use std::{
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::{
    key::KeyPair,
    key::hash::KeyHasher,
    key::pepper::Pepper,
    store::{
        ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, KeyStatus, MemoryRepository,
        PepperCount, RotateOutcome, Rotation, StoreError, UsageCount,
    },
    sync::lock,
};

pub(crate) const PEPPER: &str = "unit-test-pepper-0123456789";

pub(crate) fn pepper() -> Pepper {
    Pepper::try_from(PEPPER).unwrap()
}

/// A row for `pair`, as another process would have written it.
pub(crate) fn row(pair: &KeyPair, account_id: Uuid) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: Uuid::new_v4(),
        public_key: pair.public_key.as_str().to_owned(),
        secret_key_hash: KeyHasher::new(&pepper())
            .hash(pair.secret_key.expose())
            .to_hex()
            .into(),
        account_id,
        title: "unit".into(),
        description: None,
        status: KeyStatus::Active,
        expires_at: None,
        last_used_at: None,
        scopes: None,
        metadata: None,
        rotated_from: None,
        rate_limit: None,
        created_at: Some(Utc::now()),
        pepper_id: None,
    }
}

type Answer = Box<dyn Fn(&str) -> Option<ApiKeyRecord> + Send + Sync>;

/// A [`MemoryRepository`] whose lookups can be counted, failed, stalled
/// forever, or answered by a script, and whose `last_used_at` writes are noted
/// and can fail (or hang) at a given call.
#[derive(Clone, Default)]
pub(crate) struct Scripted {
    pub(crate) inner: MemoryRepository,
    pub(crate) lookups: Arc<AtomicUsize>,
    pub(crate) failing: Arc<AtomicBool>,
    pub(crate) stalled: Arc<AtomicBool>,
    /// Revokes and deletes are done, then never answered (a timeout after
    /// the statement committed).
    pub(crate) hang_after_write: Arc<AtomicBool>,
    answer: Arc<Mutex<Option<Answer>>>,
    /// The key ids of every `record_last_used` call, in order.
    flushed: Arc<Mutex<Vec<Vec<Uuid>>>>,
    /// `record_last_used` call number (from 1) that fails, or hangs.
    fail_flush: Arc<Mutex<Option<(usize, bool)>>>,
    /// Every `record_usage` call's batch, in order.
    usage_writes: Arc<Mutex<Vec<Vec<UsageCount>>>>,
    /// `record_usage` calls numbered (from 1) this or higher fail; 0: none.
    pub(crate) fail_usage_from: Arc<AtomicUsize>,
}

impl Scripted {
    /// Answers every lookup with `answer(public_key)` instead of the rows.
    pub(crate) fn answer_with(
        &self,
        answer: impl Fn(&str) -> Option<ApiKeyRecord> + Send + Sync + 'static,
    ) {
        *lock(&self.answer) = Some(Box::new(answer));
    }

    /// Makes `record_last_used` call number `call` (counting from 1) fail, or
    /// never answer with `hang`.
    pub(crate) fn fail_flush_call(&self, call: usize, hang: bool) {
        *lock(&self.fail_flush) = Some((call, hang));
    }

    /// Lets every later `record_last_used` call succeed.
    pub(crate) fn heal_flushes(&self) {
        *lock(&self.fail_flush) = None;
    }

    /// The key ids written by each `record_last_used` call so far.
    pub(crate) fn flushed(&self) -> Vec<Vec<Uuid>> {
        lock(&self.flushed).clone()
    }

    /// The batch of each `record_usage` call so far.
    pub(crate) fn usage_writes(&self) -> Vec<Vec<UsageCount>> {
        lock(&self.usage_writes).clone()
    }

    pub(crate) fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }

    async fn hang_if_asked(&self) {
        if self.hang_after_write.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            Err(StoreError::Database("injected failure".into()))
        } else {
            Ok(())
        }
    }
}

impl ApiKeyRepository for Scripted {
    async fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        if self.stalled.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.check()?;
        if let Some(answer) = &*lock(&self.answer) {
            return Ok(answer(public_key));
        }
        self.inner.find_by_public_key(public_key).await
    }

    fn insert(&self, record: ApiKeyRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        let checked = self.check();
        let inner = self.inner.clone();
        async move {
            checked?;
            inner.insert(record).await
        }
    }

    async fn insert_many(&self, records: Vec<ApiKeyRecord>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_many(records).await
    }

    async fn insert_within_limit(
        &self,
        records: Vec<ApiKeyRecord>,
        max_keys_per_account: u64,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner
            .insert_within_limit(records, max_keys_per_account)
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
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.check()?;
        let revoked = self.inner.revoke(account_id, key_id).await;
        self.hang_if_asked().await;
        revoked
    }

    async fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.check()?;
        let updated = self.inner.update(account_id, key_id, changes).await;
        self.hang_if_asked().await;
        updated
    }

    async fn rotate(&self, rotation: Rotation) -> Result<RotateOutcome, StoreError> {
        self.check()?;
        let rotated = self.inner.rotate(rotation).await;
        self.hang_if_asked().await;
        rotated
    }

    async fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.check()?;
        let deleted = self.inner.delete(account_id, key_id).await;
        self.hang_if_asked().await;
        deleted
    }

    async fn rewrite_hashes(&self, batch: &[HashRewrite]) -> Result<(), StoreError> {
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
            return Err(StoreError::Database("injected failure".into()));
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
    ) -> Result<u64, StoreError> {
        self.check()?;
        self.inner.revoke_by_pepper(pepper_id, include_legacy).await
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
            return Err(StoreError::Database("injected failure".into()));
        }
        self.check()?;
        self.inner.record_last_used(batch).await
    }
}
