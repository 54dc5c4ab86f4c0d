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
    store::{DynRepository, StoreError},
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

    /// Writes everything pending in one batch. On failure the batch goes back to
    /// the pending set (newer values win) to be retried by the next flush.
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        let batch: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        let result = match tokio::time::timeout(
            self.store_timeout,
            self.repository.record_last_used(&batch),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.store_timeout)),
        };
        match result {
            Ok(()) => {
                tracing::debug!(keys = batch.len(), "wrote last_used_at");
                Ok(batch.len())
            }
            Err(err) => {
                let mut pending = self.pending();
                for (key_id, used_at) in batch {
                    let slot = pending.entry(key_id).or_insert(used_at);
                    if *slot < used_at {
                        *slot = used_at;
                    }
                }
                tracing::warn!(error = %err, keys = pending.len(), "writing last_used_at failed; will retry");
                Err(err)
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
