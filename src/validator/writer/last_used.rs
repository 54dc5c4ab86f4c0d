//! The `last_used_at` throttle: each key's use is recorded at most once per
//! throttle interval, and the recorded values wait here for the next flush.

use std::{
    collections::HashMap,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::clock::secs;
use crate::sync::lock;

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

/// Pending `last_used_at` values, newest per key, and the throttle interval.
pub(super) struct LastUsed {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    throttle_secs: i64,
}

impl LastUsed {
    pub(super) fn new(throttle: Duration) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            throttle_secs: secs(throttle),
        }
    }

    pub(super) fn pending(&self) -> MutexGuard<'_, HashMap<Uuid, DateTime<Utc>>> {
        lock(&self.pending)
    }

    /// The newest not-yet-written use of `key_id`, if any.
    pub(super) fn pending_for(&self, key_id: Uuid) -> Option<DateTime<Utc>> {
        self.pending().get(&key_id).copied()
    }

    /// Whether a use at `unix_seconds` is within the throttle interval of the
    /// last one recorded in `last`: one atomic load.
    pub(super) fn throttles(&self, last: &LastRecorded, unix_seconds: i64) -> bool {
        unix_seconds.saturating_sub(last.0.load(Ordering::Relaxed)) < self.throttle_secs
    }

    /// Notes a successful validation of `key_id` at wall-clock time `now`.
    /// Takes the lock at most once per key and throttle interval; every other
    /// call is one atomic load.
    pub(super) fn record(&self, key_id: Uuid, last: &LastRecorded, now: DateTime<Utc>) {
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

    /// Takes every pending value, in key order (so that each statement
    /// touches the primary-key index in order).
    pub(super) fn take(&self) -> Vec<(Uuid, DateTime<Utc>)> {
        let mut batch: Vec<(Uuid, DateTime<Utc>)> =
            std::mem::take(&mut *self.pending()).into_iter().collect();
        batch.sort_unstable_by_key(|(key_id, _)| *key_id);
        batch
    }

    /// Returns unwritten values to the pending set; a newer value recorded in
    /// the meantime wins.
    pub(super) fn put_back(&self, rows: &[(Uuid, DateTime<Utc>)]) {
        let mut pending = self.pending();
        for &(key_id, used_at) in rows {
            let slot = pending.entry(key_id).or_insert(used_at);
            if *slot < used_at {
                *slot = used_at;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Instant};

    use chrono::TimeDelta;

    use super::*;
    use crate::{
        store::{LAST_USED_CHUNK, StoreError},
        testing::fixtures::Scripted,
        validator::writer::{
            BatchWriter,
            tests::{setup, stored, throttled},
        },
    };

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
        let pending = writer.last_used.pending().clone();
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
        let writer = throttled(&Scripted::default(), Duration::from_secs(900));
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let older = DateTime::from_timestamp(1_767_225_600, 500).unwrap();
        let newer = older + TimeDelta::seconds(5);
        writer.last_used.pending().insert(a, newer);
        writer.last_used.put_back(&[(a, older), (b, older)]);
        assert_eq!(writer.pending_for(a), Some(newer));
        assert_eq!(writer.pending_for(b), Some(older));
        writer.last_used.put_back(&[(b, newer)]);
        assert_eq!(writer.pending_for(b), Some(newer));
    }

    #[test]
    fn a_use_is_recorded_once_per_throttle_interval() {
        let writer = throttled(&Scripted::default(), Duration::from_secs(900));
        let key_id = Uuid::from_u128(1);
        let start = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
        let last = LastRecorded::new(None);
        writer.record(key_id, &last, start);
        assert_eq!(writer.pending_len(), 1);
        writer.last_used.pending().clear();
        writer.record(key_id, &last, start + TimeDelta::seconds(899));
        assert_eq!(writer.pending_len(), 0, "throttled");
        writer.record(key_id, &last, start + TimeDelta::seconds(900));
        assert_eq!(writer.pending_len(), 1);
        // A key last used (in the store) a minute ago is not recorded again yet.
        let recent = LastRecorded::new(Some(start - TimeDelta::seconds(60)));
        writer.record(Uuid::from_u128(2), &recent, start);
        assert_eq!(writer.pending_for(Uuid::from_u128(2)), None);
    }

    #[test]
    fn a_use_on_the_monotonic_clock_is_throttled_and_recorded_at_wall_time() {
        let writer = throttled(&Scripted::default(), Duration::from_secs(900));
        let key_id = Uuid::from_u128(1);
        let last = LastRecorded::new(None);
        let now = Instant::now();
        let before = Utc::now() - TimeDelta::seconds(1);
        writer.record_use(key_id, &last, now);
        let recorded = writer.pending_for(key_id).expect("recorded");
        assert!(recorded >= before && recorded <= Utc::now(), "{recorded}");
        writer.last_used.pending().clear();
        writer.record_use(key_id, &last, now + Duration::from_secs(898));
        assert_eq!(writer.pending_len(), 0, "throttled");
        // Past the interval by the monotonic clock, the wall clock decides:
        // a use is never recorded at a time the wall clock has not reached.
        writer.record_use(key_id, &last, now + Duration::from_secs(902));
        assert_eq!(
            writer.pending_len(),
            0,
            "the wall clock is still within the interval"
        );
        let unthrottled = throttled(&Scripted::default(), Duration::ZERO);
        for _ in 0..2 {
            unthrottled.record_use(key_id, &last, Instant::now());
            assert_eq!(unthrottled.pending_len(), 1);
            unthrottled.last_used.pending().clear();
        }
        // A key last used (in the store) a minute ago is not recorded again yet.
        let recent = LastRecorded::new(Some(Utc::now() - TimeDelta::seconds(60)));
        writer.record_use(Uuid::from_u128(2), &recent, Instant::now());
        assert_eq!(writer.pending_for(Uuid::from_u128(2)), None);
    }
}
