//! What the request path records and the database receives later, in
//! batches: `last_used_at` values, re-hashes under the current pepper, and
//! request counts per key and UTC day (usage metering). One statement per
//! chunk of keys, never one per request.
//!
//! [`BatchWriter`] holds one part per concern and writes them all at each
//! flush: the `last_used_at` throttle ([`last_used`]), the re-hash queue
//! ([`rehash`]) and the request counts ([`usage`]), with the clock they read
//! the time and the day from ([`clock`]). The periodic task that calls the
//! flush is the [`flusher`].

mod clock;
pub(super) mod flusher;
mod last_used;
mod rehash;
mod usage;

pub(crate) use self::last_used::LastRecorded;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use self::{clock::WallClock, last_used::LastUsed, rehash::Rehashes, usage::Usage};
use crate::{
    store::{HashRewrite, LAST_USED_CHUNK, Store, StoreError},
    validator::day_count::Counted,
};

/// Pending `last_used_at` values, re-hashes and request counts, and the store
/// they are written to.
pub(crate) struct BatchWriter {
    last_used: LastUsed,
    rehashes: Rehashes,
    usage: Usage,
    store: Store,
    clock: WallClock,
}

impl BatchWriter {
    pub(crate) fn new(store: Store, throttle: Duration) -> Self {
        Self {
            last_used: LastUsed::new(throttle),
            rehashes: Rehashes::new(),
            usage: Usage::new(),
            store,
            clock: WallClock::new(),
        }
    }

    /// Queues a key's re-hash under the current pepper (one per key: a later
    /// one for the same key replaces it).
    pub(crate) fn queue_rehash(&self, rewrite: HashRewrite) {
        self.rehashes.queue(rewrite);
    }

    /// The newest not-yet-written use of `key_id`, if any.
    pub(crate) fn pending_for(&self, key_id: Uuid) -> Option<DateTime<Utc>> {
        self.last_used.pending_for(key_id)
    }

    /// Notes a successful validation of `key_id` at `now` (the request's
    /// monotonic time). Within the key's throttle interval this is one atomic
    /// load and no clock read; otherwise the use is recorded at the wall
    /// clock's time.
    pub(crate) fn record_use(&self, key_id: Uuid, last: &LastRecorded, now: Instant) {
        if self.last_used.throttles(last, self.clock.unix_seconds(now)) {
            return;
        }
        self.record(key_id, last, Utc::now());
    }

    /// Notes a successful validation of `key_id` at wall-clock time `now`.
    /// Takes the lock at most once per key and throttle interval; every other
    /// call is one atomic load.
    pub(crate) fn record(&self, key_id: Uuid, last: &LastRecorded, now: DateTime<Utc>) {
        self.last_used.record(key_id, last, now);
    }

    /// Counts one request the authentication layer let through (usage
    /// metering; DECISIONS.md, "Usage metering in detail") in `entry`, the cache entry its
    /// key was checked against, on the UTC day of `now` (the request's monotonic
    /// time). The day is read off `now` through the writer's clock offset
    /// (exact to within a second and the drift since the last flush), so the
    /// request path reads no wall clock. One atomic operation on memory the
    /// check has just read, and a lock only for the first count after a flush
    /// (to queue the entry); see [`Usage::count_in`].
    pub(crate) fn count_request_in<T: Counted + 'static>(&self, entry: &Arc<T>, now: Instant) {
        self.usage.count_in(entry, self.clock.day_of(now));
    }

    /// Writes everything pending, in chunks of [`LAST_USED_CHUNK`] keys
    /// ([`USAGE_CHUNK`] rows for request counts): one store call each, each
    /// under the store timeout. At the first chunk that fails or times out,
    /// that chunk and the ones not yet tried go back to the pending set (newer
    /// `last_used_at` values win; counts add to those made since) for the next
    /// flush, and that kind's flush stops with the error; chunks already
    /// written stay written. `last_used_at`, re-hashes and counts are each
    /// tried whatever the others' outcome; the first error is returned.
    ///
    /// Returns how many `last_used_at` values and re-hashes were written
    /// (request counts are written too but not counted in it).
    ///
    /// A count whose write failed after the database committed it (a timeout
    /// at the wrong moment) is written again: counts are at least once.
    ///
    /// Each call counts once in `tower_api_keys_flushes_total`, `result` `ok`
    /// or `error`.
    ///
    /// [`USAGE_CHUNK`]: crate::store::USAGE_CHUNK
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        self.clock.resync();
        let used = self.flush_last_used().await;
        let rehashed = self.rehashes.flush(&self.store).await;
        let counted = self.usage.flush(&self.store).await;
        let outcome = match (used, rehashed, counted) {
            (Ok(used), Ok(rehashed), Ok(_)) => Ok(used + rehashed),
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => Err(err),
        };
        let result = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::telemetry::FLUSHES, "result" => result).increment(1);
        outcome
    }

    /// Writes the pending `last_used_at` values, in key order (each statement
    /// touches the primary-key index in order).
    async fn flush_last_used(&self) -> Result<usize, StoreError> {
        let batch = self.last_used.take();
        if batch.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            if let Err(err) = self.store.record_last_used(chunk).await {
                self.last_used.put_back(&batch[written..]);
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

    /// Values waiting to be written: uses, re-hashes, (key, day) counts and
    /// cache entries holding counts.
    pub(crate) fn pending_len(&self) -> usize {
        self.last_used.pending().len() + self.rehashes.len() + self.usage.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::atomic::Ordering};

    use chrono::{NaiveDate, TimeDelta};

    use super::*;
    use crate::{
        store::{ApiKeyRecord, ApiKeyRepository, KeyStatus},
        testing::fixtures::Scripted,
    };

    const ACCOUNT: Uuid = Uuid::from_u128(7);

    /// `n` keys in the store, each with a pending use one second after `base`
    /// plus its index in milliseconds.
    pub(super) async fn setup(
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
                    allowed_cidrs: None,
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
            .last_used
            .pending()
            .extend(expected.iter().map(|(k, v)| (*k, *v)));
        (writer, expected)
    }

    pub(super) async fn stored(repository: &Scripted) -> HashMap<Uuid, DateTime<Utc>> {
        repository
            .inner
            .list_by_account(ACCOUNT)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|row| Some((row.key_id, row.last_used_at?)))
            .collect()
    }

    /// A writer over `repository` with `throttle` (2 s store timeout).
    pub(super) fn throttled(repository: &Scripted, throttle: Duration) -> BatchWriter {
        BatchWriter::new(
            Store::new(repository.clone(), Duration::from_secs(2)),
            throttle,
        )
    }

    impl BatchWriter {
        /// Counts a request in the maps, as a count no cache entry can hold.
        pub(super) fn count_in_maps(&self, key_id: Uuid, now: Instant) {
            self.usage.add(key_id, self.clock.day_of(now), 1);
        }
    }

    pub(super) async fn stored_usage(repository: &Scripted, key_id: Uuid) -> Vec<(NaiveDate, u64)> {
        repository
            .inner
            .usage(key_id, NaiveDate::MIN)
            .await
            .unwrap()
    }

    /// A failing `last_used_at` write does not keep the counts from being
    /// written, nor the other way round.
    #[tokio::test]
    async fn uses_and_counts_are_each_written_whatever_the_others_outcome() {
        let repository = Scripted::default();
        let (writer, expected) = setup(&repository, 3, Duration::from_secs(2)).await;
        let key = *expected.keys().next().unwrap();
        writer.count_in_maps(key, Instant::now());
        repository.fail_flush_call(1, false);
        assert!(writer.flush().await.is_err());
        assert_eq!(
            stored_usage(&repository, key).await.len(),
            1,
            "counts written"
        );
        assert_eq!(writer.last_used.pending().len(), 3, "uses put back");

        repository.heal_flushes();
        writer.count_in_maps(key, Instant::now());
        repository.fail_usage_from.store(1, Ordering::SeqCst);
        assert!(writer.flush().await.is_err());
        assert_eq!(stored(&repository).await, expected, "uses written");
        assert_eq!(writer.pending_len(), 1, "the count put back");
    }
}
