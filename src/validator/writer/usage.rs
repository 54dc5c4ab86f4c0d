//! Usage metering: request counts per key and UTC day, held in the cache
//! entries' [`DayCount`]s and, for what those cannot hold, in sharded maps,
//! until the next flush writes them.
//!
//! [`DayCount`]: crate::validator::day_count::DayCount

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use uuid::Uuid;

use super::clock::{date_to_day, day_to_date};
use crate::{
    store::{Store, StoreError, USAGE_CHUNK, UsageCount},
    sync::lock,
    validator::day_count::{Added, Counted},
};

/// How many independently locked maps the request counts are spread over (by
/// the last byte of the key id, random in a v4 UUID), so that requests with
/// different keys rarely wait for one another.
pub(super) const USAGE_SHARDS: usize = 16;

/// Requests counted per `(key id, UTC day as days since 1970-01-01)` that no
/// cache entry could hold (see [`BatchWriter::count_request_in`]), and counts
/// put back after a failed write. Hashed with aHash (randomly keyed, as
/// `std`'s SipHash is, and about twice as fast on a 20-byte key).
///
/// [`BatchWriter::count_request_in`]: super::BatchWriter::count_request_in
type UsageShard = Mutex<UsageMap>;
type UsageMap = HashMap<(Uuid, i32), u64, quick_cache::DefaultHashBuilder>;

/// Cache entries whose [`DayCount`](crate::validator::day_count::DayCount)
/// counted since the last flush, spread over shards as the maps are.
type CountedShard = Mutex<Vec<Arc<dyn Counted>>>;

/// The shard of `shards` that holds `key_id`.
pub(super) fn shard_of<T>(key_id: Uuid, shards: &[T; USAGE_SHARDS]) -> &T {
    &shards[usize::from(key_id.as_bytes()[15]) % USAGE_SHARDS]
}

/// The request counts not yet written.
pub(super) struct Usage {
    maps: [UsageShard; USAGE_SHARDS],
    counted: [CountedShard; USAGE_SHARDS],
}

impl Usage {
    pub(super) fn new() -> Self {
        Self {
            maps: std::array::from_fn(|_| Mutex::new(UsageMap::default())),
            counted: std::array::from_fn(|_| Mutex::new(Vec::new())),
        }
    }

    /// Counts one request in `entry` on `day` (days since 1970-01-01): one
    /// atomic operation, and a lock only for the first count after a flush
    /// (to queue the entry). A count the entry cannot take (the day changed
    /// and the old day's count is not yet flushed) goes to one of
    /// [`USAGE_SHARDS`] maps, which keep their size across flushes.
    pub(super) fn count_in<T: Counted + 'static>(&self, entry: &Arc<T>, day: i32) {
        match entry.day_count().add(day) {
            Added::Counted => {}
            Added::First => lock(shard_of(entry.key_id(), &self.counted)).push(entry.clone()),
            Added::Elsewhere => self.add(entry.key_id(), day, 1),
        }
    }

    /// Adds `requests` to the count of `key_id` on `day`.
    pub(super) fn add(&self, key_id: Uuid, day: i32, requests: u64) {
        let mut shard = lock(shard_of(key_id, &self.maps));
        let count = shard.entry((key_id, day)).or_insert(0);
        *count = count.saturating_add(requests);
    }

    /// (key, day) counts and cache entries holding counts.
    pub(super) fn len(&self) -> usize {
        self.maps
            .iter()
            .map(|shard| lock(shard).len())
            .sum::<usize>()
            + self
                .counted
                .iter()
                .map(|shard| lock(shard).len())
                .sum::<usize>()
    }

    /// Takes every pending request count, from the maps and from the queued
    /// cache entries, one per key and day. Each map and queue keeps room for
    /// as many as it had (so that counting allocates nothing in the next
    /// interval if the same keys come back).
    fn take(&self) -> Vec<UsageCount> {
        let mut all = UsageMap::default();
        for shard in &self.maps {
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

    /// Writes the pending request counts to `store`, as the `last_used_at`
    /// values are written; counts not written are added back.
    pub(super) async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let mut batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable_by_key(|count| (count.key_id, count.day));
        let mut written = 0;
        for chunk in batch.chunks(USAGE_CHUNK) {
            if let Err(err) = store.record_usage(chunk).await {
                for count in &batch[written..] {
                    self.add(count.key_id, date_to_day(count.day), count.requests);
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
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::Ordering,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::{
        testing::fixtures::Scripted,
        validator::{
            day_count::DayCount,
            writer::{
                BatchWriter,
                clock::today,
                tests::{stored_usage, throttled},
            },
        },
    };

    /// A writer over `repository` (2 s store timeout, 900 s throttle).
    fn usage_writer(repository: &Scripted) -> BatchWriter {
        throttled(repository, Duration::from_secs(900))
    }

    /// The pending counts, summed over the shards.
    fn pending_usage(writer: &BatchWriter) -> HashMap<(Uuid, i32), u64> {
        let mut all = HashMap::new();
        for shard in &writer.usage.maps {
            for (key, requests) in lock(shard).iter() {
                assert!(all.insert(*key, *requests).is_none(), "one shard per key");
            }
        }
        all
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
        writer.usage.add(a, yesterday, 2);
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
        count: DayCount,
    }

    impl Counted for Entry {
        fn key_id(&self) -> Uuid {
            self.key_id
        }

        fn day_count(&self) -> &DayCount {
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
            writer.usage.add(*key, today(), 7);
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
            .maps
            .iter()
            .filter(|shard| !lock(shard).is_empty())
            .count();
        assert!(
            used > USAGE_SHARDS / 2,
            "64 random keys use {used} of 16 shards"
        );
        for key in keys.iter() {
            assert!(lock(shard_of(*key, &writer.usage.maps)).contains_key(&(*key, today())));
        }
    }
}
