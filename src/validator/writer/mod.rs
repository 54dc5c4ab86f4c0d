//! What the request path records and the database receives later, in
//! batches: `last_used_at` values, re-hashes under the current pepper, and
//! request counts per key and UTC day (usage metering). One statement per
//! chunk of keys, never one per request.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

use super::day_count::{Added, Counted};
use crate::{
    store::{HashRewrite, LAST_USED_CHUNK, Store, StoreError, USAGE_CHUNK, UsageCount},
    sync::lock,
};

/// How many independently locked maps the request counts are spread over (by
/// the last byte of the key id, random in a v4 UUID), so that requests with
/// different keys rarely wait for one another.
const USAGE_SHARDS: usize = 16;

/// Requests counted per `(key id, UTC day as days since 1970-01-01)` that no
/// cache entry could hold (see [`BatchWriter::count_request_in`]), and counts
/// put back after a failed write. Hashed with aHash (randomly keyed, as
/// `std`'s SipHash is, and about twice as fast on a 20-byte key).
type UsageShard = Mutex<UsageMap>;
type UsageMap = HashMap<(Uuid, i32), u64, quick_cache::DefaultHashBuilder>;

/// Cache entries whose [`DayCount`](super::day_count::DayCount) counted since
/// the last flush, spread over shards as the maps are.
type CountedShard = Mutex<Vec<Arc<dyn Counted>>>;

/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Today's UTC day, in days since 1970-01-01: one clock read and a division.
#[cfg(test)]
fn today() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i32::try_from(since.as_secs() / 86_400).unwrap_or(i32::MAX)
        })
}

/// The date of a day counted since 1970-01-01.
fn day_to_date(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

/// Days since 1970-01-01 of a date.
fn date_to_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

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

/// Unix seconds read off the monotonic clock, so that a use still within its
/// key's throttle interval needs no wall-clock read. The offset between the
/// two clocks is taken when the writer is made and again at every flush, so a
/// step of the wall clock (or a suspend) skews the throttle for one flush
/// interval at most; the time a use records is always read off the wall clock.
#[derive(Debug)]
struct WallClock {
    base: Instant,
    /// Unix seconds at `base`.
    offset: AtomicI64,
}

impl WallClock {
    fn new() -> Self {
        let clock = Self {
            base: Instant::now(),
            offset: AtomicI64::new(0),
        };
        clock.resync();
        clock
    }

    /// Takes the offset again.
    fn resync(&self) {
        let since_base = secs(Instant::now().saturating_duration_since(self.base));
        let offset = Utc::now().timestamp().saturating_sub(since_base);
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Unix seconds at `now`, to within a second and the drift since the last
    /// [`resync`](Self::resync).
    fn unix_seconds(&self, now: Instant) -> i64 {
        let since_base = secs(now.saturating_duration_since(self.base));
        self.offset
            .load(Ordering::Relaxed)
            .saturating_add(since_base)
    }
}

/// The shard of `shards` that holds `key_id`.
fn shard_of<T>(key_id: Uuid, shards: &[T; USAGE_SHARDS]) -> &T {
    &shards[usize::from(key_id.as_bytes()[15]) % USAGE_SHARDS]
}

/// Whole seconds of `d`, as `i64`.
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Pending `last_used_at` values, re-hashes and request counts, and the store
/// they are written to.
pub(crate) struct BatchWriter {
    pending: Mutex<HashMap<Uuid, DateTime<Utc>>>,
    rehashes: Mutex<HashMap<Uuid, HashRewrite>>,
    usage: [UsageShard; USAGE_SHARDS],
    counted: [CountedShard; USAGE_SHARDS],
    store: Store,
    throttle_secs: i64,
    clock: WallClock,
}

impl BatchWriter {
    pub(crate) fn new(store: Store, throttle: Duration) -> Self {
        Self {
            pending: Mutex::new(HashMap::new()),
            rehashes: Mutex::new(HashMap::new()),
            usage: std::array::from_fn(|_| Mutex::new(UsageMap::default())),
            counted: std::array::from_fn(|_| Mutex::new(Vec::new())),
            store,
            throttle_secs: secs(throttle),
            clock: WallClock::new(),
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

    /// Notes a successful validation of `key_id` at `now` (the request's
    /// monotonic time). Within the key's throttle interval this is one atomic
    /// load and no clock read; otherwise the use is recorded at the wall
    /// clock's time.
    pub(crate) fn record_use(&self, key_id: Uuid, last: &LastRecorded, now: Instant) {
        let estimate = self.clock.unix_seconds(now);
        if estimate.saturating_sub(last.0.load(Ordering::Relaxed)) < self.throttle_secs {
            return;
        }
        self.record(key_id, last, Utc::now());
    }

    /// Notes a successful validation of `key_id` at wall-clock time `now`.
    /// Takes the lock at most once per key and throttle interval; every other
    /// call is one atomic load.
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

    /// Counts one request the authentication layer let through (usage
    /// metering, CONTRACT §9.4) in `entry`, the cache entry its key was
    /// checked against, on the UTC day of `now` (the request's monotonic
    /// time). The day is read off `now` through the writer's clock offset
    /// (exact to within a second and the drift since the last flush), so the
    /// request path reads no wall clock. One atomic operation on memory the
    /// check has just read, and a lock only for the first count after a flush
    /// (to queue the entry). A count the entry cannot take (the day changed
    /// and the old day's count is not yet flushed) goes to one of
    /// [`USAGE_SHARDS`] maps, which keep their size across flushes.
    pub(crate) fn count_request_in<T: Counted + 'static>(&self, entry: &Arc<T>, now: Instant) {
        let day = self.day_of(now);
        match entry.day_count().add(day) {
            Added::Counted => {}
            Added::First => lock(shard_of(entry.key_id(), &self.counted)).push(entry.clone()),
            Added::Elsewhere => self.add_usage(entry.key_id(), day, 1),
        }
    }

    /// The UTC day of `now`, in days since 1970-01-01.
    fn day_of(&self, now: Instant) -> i32 {
        let day = self.clock.unix_seconds(now).div_euclid(86_400);
        i32::try_from(day).unwrap_or(i32::MAX)
    }

    /// Adds `requests` to the count of `key_id` on `day`.
    fn add_usage(&self, key_id: Uuid, day: i32, requests: u64) {
        let mut shard = lock(shard_of(key_id, &self.usage));
        let count = shard.entry((key_id, day)).or_insert(0);
        *count = count.saturating_add(requests);
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
    pub(crate) async fn flush(&self) -> Result<usize, StoreError> {
        self.clock.resync();
        let used = self.flush_last_used().await;
        let rehashed = self.flush_rehashes().await;
        let counted = self.flush_usage().await;
        let outcome = match (used, rehashed, counted) {
            (Ok(used), Ok(rehashed), Ok(_)) => Ok(used + rehashed),
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => Err(err),
        };
        let result = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!(crate::telemetry::FLUSHES, "result" => result).increment(1);
        outcome
    }

    /// Takes every pending request count, from the maps and from the queued
    /// cache entries, one per key and day. Each map and queue keeps room for
    /// as many as it had (so that counting allocates nothing in the next
    /// interval if the same keys come back).
    fn take_usage(&self) -> Vec<UsageCount> {
        let mut all = UsageMap::default();
        for shard in &self.usage {
            let taken = {
                let mut shard = lock(shard);
                let room = shard.len();
                std::mem::replace(
                    &mut *shard,
                    UsageMap::with_capacity_and_hasher(room, Default::default()),
                )
            };
            all.extend(taken);
        }
        for shard in &self.counted {
            let taken = {
                let mut shard = lock(shard);
                let room = shard.len();
                std::mem::replace(&mut *shard, Vec::with_capacity(room))
            };
            // An entry is queued once per count it starts; a key may have two
            // (one replaced in the cache since), and a map count besides.
            for entry in taken {
                let (day, requests) = entry.day_count().take();
                if requests > 0 {
                    let count = all.entry((entry.key_id(), day)).or_insert(0);
                    *count = count.saturating_add(requests);
                }
            }
        }
        all.into_iter()
            .filter_map(|((key_id, day), requests)| {
                Some(UsageCount {
                    key_id,
                    day: day_to_date(day)?,
                    requests,
                })
            })
            .collect()
    }

    /// Writes the pending request counts, as [`Self::flush_last_used`]
    /// writes uses; counts not written are added back.
    async fn flush_usage(&self) -> Result<usize, StoreError> {
        let mut batch = self.take_usage();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable_by_key(|count| (count.key_id, count.day));
        let mut written = 0;
        for chunk in batch.chunks(USAGE_CHUNK) {
            if let Err(err) = self.store.record_usage(chunk).await {
                for count in &batch[written..] {
                    self.add_usage(count.key_id, date_to_day(count.day), count.requests);
                }
                tracing::warn!(
                    error = %err,
                    written,
                    pending = batch.len() - written,
                    "writing usage counts failed; the rest will be retried"
                );
                return Err(err);
            }
            written += chunk.len();
        }
        tracing::debug!(rows = written, "wrote usage counts");
        Ok(written)
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

    /// Values waiting to be written: uses, re-hashes, (key, day) counts and
    /// cache entries holding counts.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending().len()
            + lock(&self.rehashes).len()
            + self
                .usage
                .iter()
                .map(|shard| lock(shard).len())
                .sum::<usize>()
            + self
                .counted
                .iter()
                .map(|shard| lock(shard).len())
                .sum::<usize>()
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
                    "last_used_at, re-hashes or usage counts could not be written at shutdown"
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

    /// A writer over `repository` with `throttle` (2 s store timeout).
    fn throttled(repository: &Scripted, throttle: Duration) -> BatchWriter {
        BatchWriter::new(
            Store::new(repository.clone(), Duration::from_secs(2)),
            throttle,
        )
    }

    impl BatchWriter {
        /// Counts a request in the maps, as a count no cache entry can hold.
        fn count_in_maps(&self, key_id: Uuid, now: Instant) {
            self.add_usage(key_id, self.day_of(now), 1);
        }
    }

    #[test]
    fn put_back_keeps_a_newer_pending_value() {
        let writer = usage_writer(&Scripted::default());
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
        let writer = throttled(&Scripted::default(), Duration::from_secs(900));
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
        writer.pending().clear();
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
            unthrottled.pending().clear();
        }
        // A key last used (in the store) a minute ago is not recorded again yet.
        let recent = LastRecorded::new(Some(Utc::now() - TimeDelta::seconds(60)));
        writer.record_use(Uuid::from_u128(2), &recent, Instant::now());
        assert_eq!(writer.pending_for(Uuid::from_u128(2)), None);
    }

    /// A writer over `repository` (2 s store timeout, 900 s throttle).
    fn usage_writer(repository: &Scripted) -> BatchWriter {
        throttled(repository, Duration::from_secs(900))
    }

    /// The pending counts, summed over the shards.
    fn pending_usage(writer: &BatchWriter) -> HashMap<(Uuid, i32), u64> {
        let mut all = HashMap::new();
        for shard in &writer.usage {
            for (key, requests) in lock(shard).iter() {
                assert!(all.insert(*key, *requests).is_none(), "one shard per key");
            }
        }
        all
    }

    async fn stored_usage(repository: &Scripted, key_id: Uuid) -> Vec<(NaiveDate, u64)> {
        repository
            .inner
            .usage(key_id, NaiveDate::MIN)
            .await
            .unwrap()
    }

    #[test]
    fn days_since_the_epoch_convert_both_ways() {
        assert_eq!(day_to_date(0), NaiveDate::from_ymd_opt(1970, 1, 1));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(day_to_date(date_to_day(date)), Some(date));
        assert_eq!(day_to_date(today()), Some(Utc::now().date_naive()));
    }

    #[test]
    fn a_count_falls_on_the_day_of_its_monotonic_time() {
        let writer = usage_writer(&Scripted::default());
        let key = Uuid::new_v4();
        let now = Instant::now();
        let today = today();
        writer.count_in_maps(key, now);
        writer.count_in_maps(key, now + Duration::from_secs(86_400));
        writer.count_in_maps(key, now + Duration::from_secs(2 * 86_400));
        let mut days: Vec<_> = pending_usage(&writer)
            .into_iter()
            .map(|((_, day), requests)| (day, requests))
            .collect();
        days.sort_unstable();
        // Within a second of midnight the clock offset may round either way.
        let first = days[0].0;
        assert!((today - 1..=today + 1).contains(&first), "{days:?}");
        assert_eq!(days, [(first, 1), (first + 1, 1), (first + 2, 1)]);
    }

    #[tokio::test]
    async fn counts_aggregate_per_key_and_day() {
        let repository = Scripted::default();
        let writer = usage_writer(&repository);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..5 {
            writer.count_in_maps(a, Instant::now());
        }
        writer.count_in_maps(b, Instant::now());
        let yesterday = today() - 1;
        writer.add_usage(a, yesterday, 2);
        let pending = pending_usage(&writer);
        assert_eq!(pending.len(), 3);
        assert_eq!(pending[&(a, today())], 5);
        assert_eq!(pending[&(b, today())], 1);
        assert_eq!(pending[&(a, yesterday)], 2);
        assert_eq!(writer.pending_len(), 3);

        // Nothing else pending: the counts are all a flush writes, in one call
        // of key and day order, and they leave nothing behind.
        assert_eq!(
            writer.flush().await.unwrap(),
            0,
            "counts are not in the count"
        );
        let writes = repository.usage_writes();
        assert_eq!(writes.len(), 1);
        assert_eq!(writes[0].len(), 3);
        assert!(
            writes[0]
                .windows(2)
                .all(|pair| (pair[0].key_id, pair[0].day) < (pair[1].key_id, pair[1].day))
        );
        assert_eq!(writer.pending_len(), 0);
        let (now, before) = (
            day_to_date(today()).unwrap(),
            day_to_date(yesterday).unwrap(),
        );
        assert_eq!(stored_usage(&repository, a).await, [(now, 5), (before, 2)]);
        assert_eq!(stored_usage(&repository, b).await, [(now, 1)]);

        // A later flush adds to what is stored.
        writer.count_in_maps(a, Instant::now());
        writer.flush().await.unwrap();
        assert_eq!(stored_usage(&repository, a).await, [(now, 6), (before, 2)]);
        // With nothing counted, no store call.
        writer.flush().await.unwrap();
        assert_eq!(repository.usage_writes().len(), 2);
    }

    /// A cache entry's count, for the writer tests.
    struct Entry {
        key_id: Uuid,
        count: super::super::day_count::DayCount,
    }

    impl Counted for Entry {
        fn key_id(&self) -> Uuid {
            self.key_id
        }

        fn day_count(&self) -> &super::super::day_count::DayCount {
            &self.count
        }
    }

    fn entry(key_id: Uuid) -> Arc<Entry> {
        Arc::new(Entry {
            key_id,
            count: Default::default(),
        })
    }

    #[tokio::test]
    async fn counts_in_cache_entries_merge_with_the_maps_per_key_and_day() {
        let repository = Scripted::default();
        let writer = usage_writer(&repository);
        let key = Uuid::new_v4();
        let now = Instant::now();
        // Two entries of one key (the first replaced in the cache since) and
        // the maps: one row per key and day.
        let (first, second) = (entry(key), entry(key));
        for _ in 0..3 {
            writer.count_request_in(&first, now);
        }
        writer.count_request_in(&second, now);
        writer.count_in_maps(key, now);
        // The next day, while the first day's count waits: into the maps.
        writer.count_request_in(&second, now + Duration::from_secs(86_400));
        assert_eq!(writer.pending_len(), 2 + 2, "two entries, two map counts");
        writer.flush().await.unwrap();
        assert_eq!(writer.pending_len(), 0);
        let mut stored = stored_usage(&repository, key).await;
        stored.sort_unstable();
        let day = stored[0].0;
        assert_eq!(stored, [(day, 5), (day.succ_opt().unwrap(), 1)]);
        assert_eq!(repository.usage_writes()[0].len(), 2);

        // After the flush the entries count again, on any day.
        writer.count_request_in(&first, now + Duration::from_secs(86_400));
        writer.count_request_in(&first, now + Duration::from_secs(86_400));
        writer.flush().await.unwrap();
        stored = stored_usage(&repository, key).await;
        stored.sort_unstable();
        assert_eq!(stored, [(day, 5), (day.succ_opt().unwrap(), 3)]);
        // With nothing counted since, no store call.
        writer.flush().await.unwrap();
        assert_eq!(repository.usage_writes().len(), 2);
    }

    /// Threads count in shared entries and the maps while flushes run: the
    /// store ends with every request, once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_counts_in_entries_survive_concurrent_flushes() {
        const THREADS: usize = 4;
        const EACH: u64 = 20_000;
        let repository = Scripted::default();
        let writer = Arc::new(usage_writer(&repository));
        let keys: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let entries: Vec<_> = keys.iter().map(|key| entry(*key)).collect();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let counters: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (writer, entries) = (writer.clone(), entries.clone());
                std::thread::spawn(move || {
                    for i in 0..EACH as usize {
                        let entry = &entries[(thread + i) % entries.len()];
                        if i % 10 == 0 {
                            writer.count_in_maps(entry.key_id, Instant::now());
                        } else {
                            writer.count_request_in(entry, Instant::now());
                        }
                    }
                })
            })
            .collect();
        let flusher = {
            let (writer, done) = (writer.clone(), done.clone());
            tokio::spawn(async move {
                while !done.load(Ordering::SeqCst) {
                    writer.flush().await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        for counter in counters {
            tokio::task::spawn_blocking(move || counter.join().unwrap())
                .await
                .unwrap();
        }
        done.store(true, Ordering::SeqCst);
        flusher.await.unwrap();
        writer.flush().await.unwrap();
        let mut total = 0;
        for key in &keys {
            total += stored_usage(&repository, *key)
                .await
                .iter()
                .map(|(_, requests)| requests)
                .sum::<u64>();
        }
        assert_eq!(total, THREADS as u64 * EACH);
    }

    #[tokio::test]
    async fn a_failed_count_write_puts_the_counts_back_and_adds_newer_ones() {
        let repository = Scripted::default();
        let writer = usage_writer(&repository);
        let key = Uuid::new_v4();
        for _ in 0..3 {
            writer.count_in_maps(key, Instant::now());
        }
        repository.fail_usage_from.store(1, Ordering::SeqCst);
        let err = writer.flush().await.unwrap_err();
        assert!(err.to_string().contains("injected failure"), "{err}");
        assert_eq!(pending_usage(&writer)[&(key, today())], 3, "put back");
        writer.count_in_maps(key, Instant::now());
        writer.count_in_maps(key, Instant::now());
        assert_eq!(
            pending_usage(&writer)[&(key, today())],
            5,
            "newer ones added"
        );
        assert!(stored_usage(&repository, key).await.is_empty());

        repository.fail_usage_from.store(0, Ordering::SeqCst);
        writer.flush().await.unwrap();
        let now = day_to_date(today()).unwrap();
        assert_eq!(stored_usage(&repository, key).await, [(now, 5)]);
        assert_eq!(writer.pending_len(), 0);
    }

    #[tokio::test]
    async fn a_failed_chunk_of_counts_puts_back_only_the_unwritten_rows() {
        let repository = Scripted::default();
        let writer = usage_writer(&repository);
        let keys: Vec<Uuid> = (0..2 * USAGE_CHUNK + 10).map(|_| Uuid::new_v4()).collect();
        for key in &keys {
            writer.add_usage(*key, today(), 7);
        }
        repository.fail_usage_from.store(2, Ordering::SeqCst);
        assert!(writer.flush().await.is_err());
        let writes = repository.usage_writes();
        assert_eq!(writes.len(), 2, "the flush stops at the failing chunk");
        assert!(writes.iter().all(|chunk| chunk.len() == USAGE_CHUNK));
        let pending = pending_usage(&writer);
        assert_eq!(pending.len(), keys.len() - USAGE_CHUNK);
        assert!(
            writes[0]
                .iter()
                .all(|row| !pending.contains_key(&(row.key_id, today())))
        );
        assert!(pending.values().all(|requests| *requests == 7));

        repository.fail_usage_from.store(0, Ordering::SeqCst);
        writer.flush().await.unwrap();
        let retried: usize = repository.usage_writes()[2..].iter().map(Vec::len).sum();
        assert_eq!(
            retried,
            keys.len() - USAGE_CHUNK,
            "written rows are not retried"
        );
        for key in &keys {
            assert_eq!(stored_usage(&repository, *key).await[0].1, 7);
        }
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
        assert_eq!(writer.pending().len(), 3, "uses put back");

        repository.heal_flushes();
        writer.count_in_maps(key, Instant::now());
        repository.fail_usage_from.store(1, Ordering::SeqCst);
        assert!(writer.flush().await.is_err());
        assert_eq!(stored(&repository).await, expected, "uses written");
        assert_eq!(writer.pending_len(), 1, "the count put back");
    }

    #[test]
    fn counts_spread_over_the_shards_and_none_is_lost_under_contention() {
        let writer = Arc::new(usage_writer(&Scripted::default()));
        let keys: Arc<Vec<Uuid>> = Arc::new((0..64).map(|_| Uuid::new_v4()).collect());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let (writer, keys) = (Arc::clone(&writer), Arc::clone(&keys));
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        writer.count_in_maps(keys[(thread * 7 + i) % keys.len()], Instant::now());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let pending = pending_usage(&writer);
        assert_eq!(pending.len(), keys.len());
        assert_eq!(pending.values().sum::<u64>(), 80_000);
        let used = writer
            .usage
            .iter()
            .filter(|shard| !lock(shard).is_empty())
            .count();
        assert!(
            used > USAGE_SHARDS / 2,
            "64 random keys use {used} of 16 shards"
        );
        for key in keys.iter() {
            assert!(lock(shard_of(*key, &writer.usage)).contains_key(&(*key, today())));
        }
    }
}
