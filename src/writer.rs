//! What the request path records and the database receives later, in
//! batches: `last_used_at` values and re-hashes under the current pepper. One
//! statement per chunk of keys, never one per request.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use crate::{
    store::{HashRewrite, LAST_USED_CHUNK, Store, StoreError},
    sync::lock,
};

/// When a key's use was last recorded, in Unix seconds: the writer's throttle
/// state for one key, kept with the key's cache entry so that a throttled use
/// costs one atomic load.
#[derive(Debug)]
pub(crate) struct LastRecorded(AtomicI64);

impl LastRecorded {
    /// Starts from the key's stored (or pending) `last_used_at`.
    pub(crate) fn new(last_used: Option<DateTime<Utc>>) -> Self {
        Self(AtomicI64::new(
            last_used.map_or(i64::MIN, |at| at.timestamp()),
        ))
    }
}

/// Pending `last_used_at` values and re-hashes, and the store they are
/// written to.
pub(crate) struct BatchWriter {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    rehashes: Mutex<HashMap<Uuid, HashRewrite>>,
    store: Store,
    throttle_secs: i64,
}

impl BatchWriter {
    pub(crate) fn new(store: Store, throttle: Duration) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            rehashes: Mutex::new(HashMap::new()),
            store,
            throttle_secs: i64::try_from(throttle.as_secs()).unwrap_or(i64::MAX),
        }
    }

    /// Queues a key's re-hash under the current pepper (one per key: a later
    /// one for the same key replaces it).
    pub(crate) fn queue_rehash(&self, rewrite: HashRewrite) {
        lock(&self.rehashes).insert(rewrite.key_id, rewrite);
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<Uuid, DateTime<Utc>>> {
        lock(&self.pending)
    }

    /// The newest not-yet-written use of `key_id`, if any.
    pub(crate) fn pending_for(&self, key_id: Uuid) -> Option<DateTime<Utc>> {
        self.pending().get(&key_id).copied()
    }

    /// Notes a successful validation of `key_id`. Takes the lock at most once
    /// per key and throttle interval; every other call is one atomic load.
    pub(crate) fn record(&self, key_id: Uuid, last: &LastRecorded, now: DateTime<Utc>) {
        let now_secs = now.timestamp();
        let previous = last.0.load(Ordering::Relaxed);
        if now_secs.saturating_sub(previous) < self.throttle_secs {
            return;
        }
        if last
            .0
            .compare_exchange(previous, now_secs, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            self.pending()
                .insert(key_id, crate::store::storage_time(now));
        }
    }

    /// Counts one request the authentication layer let through with `key_id`
    /// (usage metering, CONTRACT §9.4).
    pub(crate) fn count_request(&self, key_id: Uuid) {
        let _ = key_id;
    }

    /// Writes everything pending, in chunks of [`LAST_USED_CHUNK`] keys: one
    /// store call each, each under the store timeout. At the first chunk that
    /// fails or times out, that chunk and the ones not yet tried go back to the
    /// pending set (newer values win) for the next flush, and the flush stops
    /// with the error; chunks already written stay written.
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        // Both kinds are tried whatever the other's outcome.
        let used = self.flush_last_used().await;
        let rehashed = self.flush_rehashes().await;
        Ok(used? + rehashed?)
    }

    /// Writes the pending re-hashes, as [`Self::flush_last_used`] writes uses:
    /// chunk by chunk, putting back what was not written.
    async fn flush_rehashes(&self) -> Result<usize, StoreError> {
        let mut batch: Vec<HashRewrite> = std::mem::take(&mut *lock(&self.rehashes))
            .into_values()
            .collect();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable_by_key(|rewrite| rewrite.key_id);
        let mut written = 0;
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            if let Err(err) = self.store.rewrite_hashes(chunk).await {
                let mut pending = lock(&self.rehashes);
                for rewrite in &batch[written..] {
                    pending
                        .entry(rewrite.key_id)
                        .or_insert_with(|| rewrite.clone());
                }
                tracing::warn!(
                    error = %err,
                    written,
                    pending = pending.len(),
                    "re-hashing keys under the current pepper failed; the rest will be retried"
                );
                return Err(err);
            }
            written += chunk.len();
        }
        tracing::debug!(keys = written, "re-hashed keys under the current pepper");
        Ok(written)
    }

    /// Writes the pending `last_used_at` values.
    async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let mut batch: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        // Key order: each statement touches the primary-key index in order.
        batch.sort_unstable_by_key(|(key_id, _)| *key_id);
        let mut written = 0;
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            if let Err(err) = self.store.record_last_used(chunk).await {
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

    /// Values waiting to be written: uses and re-hashes.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending().len() + lock(&self.rehashes).len()
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
    pub(crate) fn spawn(writer: Arc<BatchWriter>, interval: Duration) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {
                        let _ = writer.flush().await;
                    }
                    _ = stopped.changed() => break,
                }
            }
            if writer.flush().await.is_err() {
                tracing::error!(
                    keys = writer.pending_len(),
                    "last_used_at or re-hashes could not be written at shutdown"
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
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeDelta;

    use super::*;
    use crate::{
        store::{ApiKeyRecord, ApiKeyRepository, KeyStatus},
        test_support::Scripted,
    };

    const ACCOUNT: Uuid = Uuid::from_u128(7);

    /// `n` keys in the store, each with a pending use one second after `base`
    /// plus its index in milliseconds.
    async fn setup(
        repository: &Scripted,
        n: usize,
        timeout: Duration,
    ) -> (BatchWriter, HashMap<Uuid, DateTime<Utc>>) {
        let base = DateTime::from_timestamp_micros(1_767_225_600_000_500).unwrap();
        let mut expected = HashMap::new();
        for index in 0..n {
            let key_id = Uuid::from_u128(index as u128 + 1);
            ApiKeyRepository::insert(
                &repository.inner,
                ApiKeyRecord {
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
                    pepper_id: None,
                    scopes: None,
                    metadata: None,
                    rotated_from: None,
                    rate_limit: None,
                },
            )
            .await
            .unwrap();
            expected.insert(key_id, base + TimeDelta::milliseconds(index as i64));
        }
        let writer = BatchWriter::new(
            Store::new(repository.clone(), timeout),
            Duration::from_secs(900),
        );
        writer
            .pending()
            .extend(expected.iter().map(|(k, v)| (*k, *v)));
        (writer, expected)
    }

    async fn stored(repository: &Scripted) -> HashMap<Uuid, DateTime<Utc>> {
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
        repository: &Scripted,
        writer: &BatchWriter,
        expected: &HashMap<Uuid, DateTime<Utc>>,
    ) {
        let seen = repository.flushed();
        assert_eq!(seen.len(), 2, "the flush stops at the failing chunk");
        assert!(seen.iter().all(|chunk| chunk.len() == LAST_USED_CHUNK));
        let written = stored(repository).await;
        let first: HashMap<_, _> = seen[0].iter().map(|k| (*k, expected[k])).collect();
        assert_eq!(written, first, "the first chunk is written, nothing else");
        let pending = writer.pending().clone();
        assert_eq!(pending.len(), expected.len() - LAST_USED_CHUNK);
        assert!(pending.iter().all(|(k, at)| expected[k] == *at));
        assert!(seen[0].iter().all(|k| !pending.contains_key(k)));

        repository.heal_flushes();
        assert_eq!(writer.flush().await.unwrap(), pending.len());
        let retried: Vec<Uuid> = repository.flushed()[2..].concat();
        assert_eq!(
            retried.len(),
            pending.len(),
            "written chunks are not retried"
        );
        assert!(retried.iter().all(|k| pending.contains_key(k)));
        assert_eq!(stored(repository).await, *expected);
        assert_eq!(writer.pending_len(), 0);
    }

    #[tokio::test]
    async fn a_failed_chunk_puts_back_only_the_unwritten_chunks() {
        let repository = Scripted::default();
        repository.fail_flush_call(2, false);
        let (writer, expected) = setup(
            &repository,
            2 * LAST_USED_CHUNK + 1_000,
            Duration::from_secs(2),
        )
        .await;
        let err = writer.flush().await.unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_only_unwritten_chunks_retried(&repository, &writer, &expected).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_store_timeout_applies_to_each_chunk() {
        let timeout = Duration::from_secs(2);
        let repository = Scripted::default();
        repository.fail_flush_call(2, true);
        let (writer, expected) = setup(&repository, 2 * LAST_USED_CHUNK + 1_000, timeout).await;
        let err = writer.flush().await.unwrap_err();
        assert!(
            matches!(err, StoreError::Timeout(t) if t == timeout),
            "{err}"
        );
        assert_only_unwritten_chunks_retried(&repository, &writer, &expected).await;
    }

    #[test]
    fn put_back_keeps_a_newer_pending_value() {
        let writer = BatchWriter::new(
            Store::new(Scripted::default(), Duration::from_secs(2)),
            Duration::from_secs(900),
        );
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let older = DateTime::from_timestamp(1_767_225_600, 500).unwrap();
        let newer = older + TimeDelta::seconds(5);
        writer.pending().insert(a, newer);
        writer.put_back(&[(a, older), (b, older)]);
        assert_eq!(writer.pending_for(a), Some(newer));
        assert_eq!(writer.pending_for(b), Some(older));
        writer.put_back(&[(b, newer)]);
        assert_eq!(writer.pending_for(b), Some(newer));
    }

    #[test]
    fn a_use_is_recorded_once_per_throttle_interval() {
        let writer = BatchWriter::new(
            Store::new(Scripted::default(), Duration::from_secs(2)),
            Duration::from_secs(900),
        );
        let key_id = Uuid::from_u128(1);
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let last = LastRecorded::new(None);
        writer.record(key_id, &last, start);
        assert_eq!(writer.pending_len(), 1);
        writer.pending().clear();
        writer.record(key_id, &last, start + TimeDelta::seconds(899));
        assert_eq!(writer.pending_len(), 0, "throttled");
        writer.record(key_id, &last, start + TimeDelta::seconds(900));
        assert_eq!(writer.pending_len(), 1);
        // A key last used (in the store) a minute ago is not recorded again yet.
        let recent = LastRecorded::new(Some(start - TimeDelta::seconds(60)));
        writer.record(Uuid::from_u128(2), &recent, start);
        assert_eq!(writer.pending_for(Uuid::from_u128(2)), None);
    }
}
