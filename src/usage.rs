//! `last_used_at` bookkeeping: recorded in memory, written in batches.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, atomic::Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::{
    cache::CachedKey,
    store::{DynRepository, LAST_USED_CHUNK, StoreError},
};

/// Pending `last_used_at` values and the repository to write them to.
pub(crate) struct UsageShared {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    repository: Arc<dyn DynRepository>,
    store_timeout: Duration,
    throttle_secs: i64,
}

impl UsageShared {
    pub(crate) fn new(
        repository: Arc<dyn DynRepository>,
        store_timeout: Duration,
        throttle: Duration,
    ) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            repository,
            store_timeout,
            throttle_secs: i64::try_from(throttle.as_secs()).unwrap_or(i64::MAX),
        }
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<Uuid, DateTime<Utc>>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The newest not-yet-written use of `key_id`, if any.
    pub(crate) fn pending_for(&self, key_id: Uuid) -> Option<DateTime<Utc>> {
        self.pending().get(&key_id).copied()
    }

    /// Notes a successful validation. Takes the lock at most once per key and
    /// throttle interval; every other call is one atomic load.
    pub(crate) fn record(&self, entry: &CachedKey, now: DateTime<Utc>) {
        let now_secs = now.timestamp();
        let last = entry.last_recorded.load(Ordering::Relaxed);
        if now_secs.saturating_sub(last) < self.throttle_secs {
            return;
        }
        if entry
            .last_recorded
            .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.pending().insert(
                entry.key.key_id().into_inner(),
                crate::store::storage_time(now),
            );
        }
    }

    /// Writes everything pending, in chunks of [`LAST_USED_CHUNK`] keys: one
    /// repository call each, each under the store timeout. At the first chunk
    /// that fails or times out, that chunk and the ones not yet tried go back to
    /// the pending set (newer values win) for the next flush, and the flush stops
    /// with the error; chunks already written stay written.
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        let mut batch: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        // Key order: each statement touches the primary-key index in order.
        batch.sort_unstable_by_key(|(key_id, _)| *key_id);
        let mut written = 0;
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            let result =
                tokio::time::timeout(self.store_timeout, self.repository.record_last_used(chunk))
                    .await
                    .unwrap_or(Err(StoreError::Timeout(self.store_timeout)));
            if let Err(err) = result {
                self.put_back(&batch[written..]);
                tracing::warn!(
                    error = %err,
                    written,
                    pending = self.pending_len(),
                    "writing last_used_at failed; the rest will be retried"
                );
                return Err(err);
            }
            written += chunk.len();
        }
        tracing::debug!(keys = written, "wrote last_used_at");
        Ok(written)
    }

    /// Returns unwritten values to the pending set; a newer value recorded in
    /// the meantime wins.
    fn put_back(&self, rows: &[(Uuid, DateTime<Utc>)]) {
        let mut pending = self.pending();
        for &(key_id, used_at) in rows {
            let slot = pending.entry(key_id).or_insert(used_at);
            if *slot < used_at {
                *slot = used_at;
            }
        }
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending().len()
    }
}

/// The periodic flusher. Dropping the handle (with the validator) or calling
/// [`Flusher::shutdown`] makes the task flush one last time and end.
pub(crate) struct Flusher {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// Spawns the flusher on the current tokio runtime, if there is one.
    pub(crate) fn spawn(shared: Arc<UsageShared>, interval: Duration) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let _ = shared.flush().await;
                    }
                    _ = stopped.changed() => break,
                }
            }
            if shared.flush().await.is_err() {
                tracing::error!(
                    keys = shared.pending_len(),
                    "last_used_at could not be written at shutdown"
                );
            }
        });
        Some(Self {
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// Stops the task after a final flush, and waits for it.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        sync::{
            Arc, Mutex,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use chrono::{DateTime, TimeDelta, Utc};
    use uuid::Uuid;

    use super::UsageShared;
    use crate::store::{
        ApiKeyRecord, ApiKeyRepository, KeyStatus, LAST_USED_CHUNK, MemoryRepository, StoreError,
    };

    /// Wraps a `MemoryRepository`: notes the keys of every `record_last_used`
    /// call, and fails (or hangs, never answering) on call number `fail_on`.
    struct Flaky {
        inner: MemoryRepository,
        fail_on: Mutex<Option<usize>>,
        hang: bool,
        calls: AtomicUsize,
        seen: Mutex<Vec<Vec<Uuid>>>,
    }

    impl Flaky {
        fn new(fail_on: usize, hang: bool) -> Self {
            Self {
                inner: MemoryRepository::new(),
                fail_on: Mutex::new(Some(fail_on)),
                hang,
                calls: AtomicUsize::new(0),
                seen: Mutex::new(Vec::new()),
            }
        }

        fn heal(&self) {
            *self.fail_on.lock().unwrap() = None;
        }

        fn seen(&self) -> Vec<Vec<Uuid>> {
            self.seen.lock().unwrap().clone()
        }
    }

    impl ApiKeyRepository for Flaky {
        async fn find_by_public_key(
            &self,
            public_key: &str,
        ) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.inner.find_by_public_key(public_key).await
        }
        async fn insert(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
            self.inner.insert(record).await
        }
        async fn list_by_account(&self, account_id: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
            self.inner.list_by_account(account_id).await
        }
        async fn get(
            &self,
            account_id: Uuid,
            key_id: Uuid,
        ) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.inner.get(account_id, key_id).await
        }
        async fn revoke(
            &self,
            account_id: Uuid,
            key_id: Uuid,
        ) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.inner.revoke(account_id, key_id).await
        }
        async fn delete(
            &self,
            account_id: Uuid,
            key_id: Uuid,
        ) -> Result<Option<ApiKeyRecord>, StoreError> {
            self.inner.delete(account_id, key_id).await
        }
        async fn record_last_used(
            &self,
            batch: &[(Uuid, DateTime<Utc>)],
        ) -> Result<(), StoreError> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen
                .lock()
                .unwrap()
                .push(batch.iter().map(|(key_id, _)| *key_id).collect());
            if *self.fail_on.lock().unwrap() == Some(call) {
                if self.hang {
                    std::future::pending::<()>().await;
                }
                return Err(StoreError::Database("injected failure".into()));
            }
            self.inner.record_last_used(batch).await
        }
    }

    const ACCOUNT: Uuid = Uuid::from_u128(7);

    /// `n` keys in the store, each with a pending use one second after `base`
    /// plus its index in milliseconds.
    async fn setup(
        repository: &Arc<Flaky>,
        n: usize,
        timeout: Duration,
    ) -> (UsageShared, HashMap<Uuid, DateTime<Utc>>) {
        let base = DateTime::from_timestamp_micros(1_767_225_600_000_500).unwrap();
        let mut expected = HashMap::new();
        for index in 0..n {
            let key_id = Uuid::from_u128(index as u128 + 1);
            repository
                .inner
                .insert(ApiKeyRecord {
                    key_id,
                    public_key: format!("pk_{index:032}"),
                    secret_key_hash: "00".repeat(32).into(),
                    account_id: ACCOUNT,
                    title: "t".into(),
                    description: None,
                    status: KeyStatus::Active,
                    expires_at: None,
                    last_used_at: None,
                    created_at: Some(base),
                })
                .await
                .unwrap();
            expected.insert(key_id, base + TimeDelta::milliseconds(index as i64));
        }
        let shared = UsageShared::new(
            Arc::clone(repository) as Arc<dyn crate::store::DynRepository>,
            timeout,
            Duration::from_secs(900),
        );
        shared
            .pending()
            .extend(expected.iter().map(|(k, v)| (*k, *v)));
        (shared, expected)
    }

    async fn stored(repository: &Flaky) -> HashMap<Uuid, DateTime<Utc>> {
        repository
            .inner
            .list_by_account(ACCOUNT)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|row| Some((row.key_id, row.last_used_at?)))
            .collect()
    }

    /// Checks a flush that failed at its second chunk, then heals the store and
    /// checks that the next flush writes exactly the chunks not written.
    async fn assert_only_unwritten_chunks_retried(
        repository: &Flaky,
        shared: &UsageShared,
        expected: &HashMap<Uuid, DateTime<Utc>>,
    ) {
        let seen = repository.seen();
        assert_eq!(seen.len(), 2, "the flush stops at the failing chunk");
        assert!(seen.iter().all(|chunk| chunk.len() == LAST_USED_CHUNK));
        let written = stored(repository).await;
        let first: HashMap<_, _> = seen[0].iter().map(|k| (*k, expected[k])).collect();
        assert_eq!(written, first, "the first chunk is written, nothing else");
        let pending = shared.pending().clone();
        assert_eq!(pending.len(), expected.len() - LAST_USED_CHUNK);
        assert!(pending.iter().all(|(k, at)| expected[k] == *at));
        assert!(seen[0].iter().all(|k| !pending.contains_key(k)));

        repository.heal();
        assert_eq!(shared.flush().await.unwrap(), pending.len());
        let retried: Vec<Uuid> = repository.seen()[2..].concat();
        assert_eq!(
            retried.len(),
            pending.len(),
            "written chunks are not retried"
        );
        assert!(retried.iter().all(|k| pending.contains_key(k)));
        assert_eq!(stored(repository).await, *expected);
        assert_eq!(shared.pending_len(), 0);
    }

    #[tokio::test]
    async fn a_failed_chunk_puts_back_only_the_unwritten_chunks() {
        let repository = Arc::new(Flaky::new(2, false));
        let (shared, expected) = setup(
            &repository,
            2 * LAST_USED_CHUNK + 1_000,
            Duration::from_secs(2),
        )
        .await;
        let err = shared.flush().await.unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_only_unwritten_chunks_retried(&repository, &shared, &expected).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_timeout_applies_to_each_chunk() {
        let timeout = Duration::from_secs(2);
        let repository = Arc::new(Flaky::new(2, true));
        let (shared, expected) = setup(&repository, 2 * LAST_USED_CHUNK + 1_000, timeout).await;
        let err = shared.flush().await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout(t) if t == timeout),
            "{err}"
        );
        assert_only_unwritten_chunks_retried(&repository, &shared, &expected).await;
    }

    #[test]
    fn put_back_keeps_a_newer_pending_value() {
        let shared = UsageShared::new(
            Arc::new(MemoryRepository::new()),
            Duration::from_secs(2),
            Duration::from_secs(900),
        );
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let older = DateTime::from_timestamp(1_767_225_600, 500).unwrap();
        let newer = older + TimeDelta::seconds(5);
        shared.pending().insert(a, newer);
        shared.put_back(&[(a, older), (b, older)]);
        assert_eq!(shared.pending_for(a), Some(newer));
        assert_eq!(shared.pending_for(b), Some(older));
        shared.put_back(&[(b, newer)]);
        assert_eq!(shared.pending_for(b), Some(newer));
    }
}
