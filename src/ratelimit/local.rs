//! The in-process limiter: one direct `governor` GCRA limiter per key, kept in a
//! bounded `quick_cache` map.
//!
//! governor's keyed limiter holds one quota for every key (governor issue
//! #193), so it cannot serve a quota per key; a direct limiter per key can.
//! Past `max_keys` the map evicts the least useful entries (S3-FIFO: keys
//! seen once go first), which keeps memory bounded under a flood of keys; an
//! evicted key starts again with a full budget. The map needs no expiry of its
//! own: a limiter's state is a single arrival time, so an old entry is as good
//! as a new one once its key's bucket is full again.

use std::{cell::Cell, fmt, sync::Arc, time::Duration};

use http::HeaderValue;

use governor::{
    NotUntil, Quota,
    clock::{Clock, DefaultClock, Reference},
    middleware::{StateInformationMiddleware, StateSnapshot},
    nanos::Nanos,
    state::{InMemoryState, NotKeyed, StateStore},
};
use quick_cache::sync::{Cache, EntryAction, EntryResult};
use uuid::Uuid;

use super::{Decision, RateLimit, headers::Rated};

thread_local! {
    /// The theoretical arrival time that the last allowed check on this thread
    /// wrote, in nanoseconds since its limiter's start. governor keeps it
    /// private; [`TatState`] records it here so `reset_after` is exact.
    static LAST_TAT: Cell<u64> = const { Cell::new(0) };
}

/// governor's [`InMemoryState`], recording the arrival time it stores.
#[derive(Debug, Default)]
struct TatState(InMemoryState);

impl StateStore for TatState {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // `f` runs again after a lost compare-and-swap; the last successful run
        // is the one that was stored.
        self.0.measure_and_replace(key, |tat| {
            let outcome = f(tat);
            if let Ok((_, next)) = &outcome {
                LAST_TAT.with(|last| last.set(next.as_u64()));
            }
            outcome
        })
    }
}

type Gcra<C> = governor::RateLimiter<NotKeyed, TatState, C, StateInformationMiddleware>;

/// One key's limiter and the limit it was built for.
struct Entry<C: Clock> {
    limit: RateLimit,
    /// The limit's `RateLimit-Policy` value, made once.
    policy: HeaderValue,
    gcra: Gcra<C>,
    /// Read just before governor read its own start, so never after it.
    start: C::Instant,
    /// `(requests - 1) * emission interval`: how far the arrival time may run
    /// ahead of now.
    tau: Duration,
}

impl<C: Clock + Clone> Entry<C> {
    fn new(limit: RateLimit, clock: &C) -> Self {
        let t = Duration::from_nanos(limit.emission_interval_nanos());
        let burst =
            std::num::NonZeroU32::new(limit.requests()).unwrap_or(std::num::NonZeroU32::MIN);
        // `t` is at least 1 µs given the bounds of `RateLimit`, so `with_period`
        // cannot refuse it; the fallback keeps this free of panics.
        let quota = Quota::with_period(t)
            .unwrap_or_else(|| Quota::per_second(burst))
            .allow_burst(burst);
        let start = clock.now();
        let gcra = Gcra::new(quota, TatState::default(), clock.clone());
        Self {
            limit,
            policy: limit.policy_header(),
            gcra,
            start,
            tau: t * (limit.requests() - 1),
        }
    }

    fn check(&self) -> Decision {
        let outcome: Result<StateSnapshot, NotUntil<C::Instant>> = self.gcra.check();
        // Read after governor's own reading, so the times below err short by
        // nanoseconds, never long.
        let now = self.gcra.clock().now();
        match outcome {
            Ok(snapshot) => {
                let since_start = now.duration_since(self.start).as_u64();
                let tat = LAST_TAT.with(Cell::get);
                Decision {
                    allowed: true,
                    limit: self.limit,
                    remaining: snapshot.remaining_burst_capacity(),
                    reset_after: Duration::from_nanos(tat.saturating_sub(since_start)),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                // Refused when now < tat - tau: one request is back at
                // tat - tau, the whole budget at tat.
                let retry_after = not_until.wait_time_from(now);
                Decision {
                    allowed: false,
                    limit: self.limit,
                    remaining: 0,
                    reset_after: retry_after + self.tau,
                    retry_after: Some(retry_after),
                }
            }
        }
    }
}

/// Per-key GCRA limiters in process memory.
pub(crate) struct Local<C: Clock = DefaultClock> {
    entries: Cache<Uuid, Arc<Entry<C>>>,
    clock: C,
    max_keys: u64,
}

impl Local<DefaultClock> {
    /// Tracks at most `max_keys` keys, on the real clock.
    pub(crate) fn new(max_keys: u64) -> Self {
        Self::with_clock(max_keys, DefaultClock::default())
    }
}

impl<C> Local<C>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Send + Sync,
{
    /// Tracks at most `max_keys` keys, on `clock` (a fake one in tests).
    pub(crate) fn with_clock(max_keys: u64, clock: C) -> Self {
        let entries = Cache::new(usize::try_from(max_keys).unwrap_or(usize::MAX).max(1));
        Self {
            entries,
            clock,
            max_keys,
        }
    }

    /// [`check_rated`](Self::check_rated) without the policy value.
    #[cfg(test)]
    pub(crate) fn check(&self, key_id: Uuid, limit: RateLimit) -> Decision {
        self.entry(key_id, limit).check()
    }

    /// Counts one request of `key_id` against `limit`, with the limit's
    /// `RateLimit-Policy` value. A key whose limit changed starts afresh
    /// under the new one.
    pub(crate) fn check_rated(&self, key_id: Uuid, limit: RateLimit) -> Rated {
        let entry = self.entry(key_id, limit);
        Rated {
            decision: entry.check(),
            policy: entry.policy.clone(),
        }
    }

    /// The limiter of `key_id` under `limit`: a read-locked lookup when the
    /// key is tracked under that limit.
    fn entry(&self, key_id: Uuid, limit: RateLimit) -> Arc<Entry<C>> {
        if let Some(entry) = self.entries.get(&key_id)
            && entry.limit == limit
        {
            return entry;
        }
        let fresh = || Arc::new(Entry::new(limit, &self.clock));
        // Under the shard's lock, so concurrent requests that see a new key or
        // a changed limit build one limiter between them.
        match self.entries.entry(&key_id, None, |_, current| {
            if current.limit != limit {
                *current = fresh();
            }
            EntryAction::Retain(Arc::clone(current))
        }) {
            EntryResult::Retained(entry) => entry,
            EntryResult::Vacant(guard) => {
                let entry = fresh();
                // Refused only when the key was removed meanwhile: the
                // limiter still serves this request.
                let _ = guard.insert(Arc::clone(&entry));
                entry
            }
            // Neither asked for (no removal, no timeout); kept total anyway.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => fresh(),
        }
    }

    /// The most keys tracked at once.
    #[cfg(test)]
    pub(crate) fn max_keys(&self) -> u64 {
        self.max_keys
    }

    #[cfg(test)]
    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }
}

impl<C: Clock> fmt::Debug for Local<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Local")
            .field("max_keys", &self.max_keys)
            .field("tracked_keys", &self.entries.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    fn limit(requests: u32, period: u32) -> RateLimit {
        RateLimit::new(requests, period).unwrap()
    }

    fn fake() -> (Local<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (Local::with_clock(1_000, clock.clone()), clock)
    }

    #[test]
    fn three_per_period_counts_down_then_refuses() {
        let (local, _clock) = fake();
        let key = Uuid::new_v4();
        let three = limit(3, 60);
        let seen: Vec<_> = (0..3).map(|_| local.check(key, three)).collect();
        assert!(seen.iter().all(|d| d.allowed && d.retry_after.is_none()));
        assert_eq!(
            seen.iter().map(|d| d.remaining).collect::<Vec<_>>(),
            [2, 1, 0]
        );
        // Each request takes 20 s of the budget to come back.
        assert_eq!(
            seen.iter().map(|d| d.reset_after).collect::<Vec<_>>(),
            [20, 40, 60].map(Duration::from_secs)
        );
        let refused = local.check(key, three);
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(20)));
        assert_eq!(refused.retry_after_seconds(), Some(20));
        assert_eq!(refused.reset_after, Duration::from_secs(60));
        assert_eq!(refused.limit, three);
    }

    #[test]
    fn the_budget_comes_back_over_the_period() {
        let (local, clock) = fake();
        let key = Uuid::new_v4();
        let three = limit(3, 60);
        for _ in 0..3 {
            assert!(local.check(key, three).allowed);
        }
        clock.advance(Duration::from_secs(19));
        let refused = local.check(key, three);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.reset_after, Duration::from_secs(41));

        clock.advance(Duration::from_secs(1));
        let back = local.check(key, three);
        assert!(back.allowed);
        assert_eq!(back.remaining, 0);
        assert_eq!(back.reset_after, Duration::from_secs(60));

        // Half an interval later nothing is back yet; a whole period later all is.
        clock.advance(Duration::from_secs(10));
        assert!(!local.check(key, three).allowed);
        clock.advance(Duration::from_secs(50));
        let full = local.check(key, three);
        assert_eq!((full.allowed, full.remaining), (true, 2));
        assert_eq!(full.reset_after, Duration::from_secs(20));
    }

    #[test]
    fn reset_after_counts_partial_replenishment() {
        let (local, clock) = fake();
        let key = Uuid::new_v4();
        let three = limit(3, 60);
        assert_eq!(local.check(key, three).reset_after, Duration::from_secs(20));
        clock.advance(Duration::from_secs(10));
        let second = local.check(key, three);
        // 10 s of the first request's 20 are still owed, plus 20 for this one.
        assert_eq!(
            (second.remaining, second.reset_after),
            (1, Duration::from_secs(30))
        );
        assert_eq!(second.reset_seconds(), 30);
    }

    #[test]
    fn keys_are_independent() {
        let (local, _clock) = fake();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let one = limit(1, 60);
        assert!(local.check(a, one).allowed);
        assert!(!local.check(a, one).allowed);
        let other = local.check(b, one);
        assert!(other.allowed);
        assert_eq!(other.remaining, 0);
        assert!(!local.check(b, one).allowed);
    }

    #[test]
    fn a_changed_limit_takes_effect() {
        let (local, _clock) = fake();
        let key = Uuid::new_v4();
        assert!(local.check(key, limit(1, 60)).allowed);
        assert!(!local.check(key, limit(1, 60)).allowed);

        let five = limit(5, 60);
        let raised = local.check(key, five);
        assert!(raised.allowed);
        assert_eq!((raised.remaining, raised.limit), (4, five));
        for expected in [3, 2, 1, 0] {
            assert_eq!(local.check(key, five).remaining, expected);
        }
        assert!(!local.check(key, five).allowed);

        // A shorter period is a change too.
        let faster = limit(5, 30);
        assert_eq!(local.check(key, faster).remaining, 4);
    }

    #[test]
    fn tracked_keys_stay_within_capacity() {
        let local = Local::with_clock(1_000, FakeRelativeClock::default());
        let one = limit(1, 60);
        for _ in 0..10_000 {
            assert!(local.check(Uuid::new_v4(), one).allowed);
        }
        let count = local.entry_count();
        assert!(count <= local.max_keys(), "{count} keys tracked");
        assert!(count > 0);
    }

    #[test]
    fn largest_and_smallest_limits() {
        let (local, clock) = fake();
        let key = Uuid::new_v4();
        let huge = limit(1_000_000, 1);
        let first = local.check(key, huge);
        assert_eq!(first.remaining, 999_999);
        assert_eq!(first.reset_after, Duration::from_micros(1));

        let slow = limit(1, 86_400);
        let key = Uuid::new_v4();
        assert!(local.check(key, slow).allowed);
        let refused = local.check(key, slow);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(86_400)));
        assert_eq!(refused.reset_after, Duration::from_secs(86_400));
        clock.advance(Duration::from_secs(86_400));
        assert!(local.check(key, slow).allowed);
    }
}
