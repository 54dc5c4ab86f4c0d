//! A key's request count for one UTC day, kept with the key's cache entry so
//! that counting a request on a cache hit touches no memory the hit has not
//! already read (a shared map of counts costs a lookup, and with many keys a
//! cache miss, per request).
//!
//! The batch writer queues an entry the first time it counts since a flush,
//! takes the count at the next flush, and keeps counting in its own maps what
//! a cell cannot hold (another day's count not yet flushed).

use std::sync::atomic::{AtomicU64, Ordering};

use uuid::Uuid;

/// Bits of the packed word that hold the count; the day is above them.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// Days (since 1970-01-01) a cell can hold: up to the year 45,000.
const MAX_DAY: i32 = (1 << (64 - COUNT_BITS)) - 1;

/// One day's request count, packed into one atomic word: the day in the top
/// 24 bits, the count in the low 40.
#[derive(Debug, Default)]
pub(crate) struct DayCount(AtomicU64);

/// How [`DayCount::add`] went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Added {
    /// Counted; the cell already held a count, so it is already queued.
    Counted,
    /// Counted, and the cell held nothing before: queue it for the next flush.
    First,
    /// Not counted: the cell holds another day's count (or is full), or the
    /// day is outside what a cell holds. Count it elsewhere.
    Elsewhere,
}

impl DayCount {
    /// Adds one request on `day` (days since 1970-01-01).
    pub(crate) fn add(&self, day: i32) -> Added {
        let Some(day) = u64::try_from(day).ok().filter(|_| day <= MAX_DAY) else {
            return Added::Elsewhere;
        };
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let (held_day, count) = (current >> COUNT_BITS, current & COUNT_MASK);
            let (next, added) = if count == 0 {
                ((day << COUNT_BITS) | 1, Added::First)
            } else if held_day == day && count < COUNT_MASK {
                (current + 1, Added::Counted)
            } else {
                return Added::Elsewhere;
            };
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return added,
                Err(actual) => current = actual,
            }
        }
    }

    /// Takes the count: `(day, requests)`, and leaves zero.
    pub(crate) fn take(&self) -> (i32, u64) {
        let taken = self.0.fetch_and(!COUNT_MASK, Ordering::Relaxed);
        let day = i32::try_from(taken >> COUNT_BITS).unwrap_or(MAX_DAY);
        (day, taken & COUNT_MASK)
    }
}

/// What holds a key's [`DayCount`]: its cache entry.
pub(crate) trait Counted: Send + Sync {
    /// The key whose requests are counted.
    fn key_id(&self) -> Uuid;
    /// The count.
    fn day_count(&self) -> &DayCount;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counts_one_day_until_taken_then_any_day() {
        let cell = DayCount::default();
        assert_eq!(cell.take(), (0, 0));
        assert_eq!(cell.add(20_000), Added::First);
        assert_eq!(cell.add(20_000), Added::Counted);
        assert_eq!(cell.add(20_000), Added::Counted);
        // The next day waits for the flush.
        assert_eq!(cell.add(20_001), Added::Elsewhere);
        assert_eq!(cell.take(), (20_000, 3));
        assert_eq!(cell.take(), (20_000, 0));
        assert_eq!(cell.add(20_001), Added::First);
        assert_eq!(cell.take(), (20_001, 1));
    }

    #[test]
    fn days_a_cell_cannot_hold_are_counted_elsewhere() {
        let cell = DayCount::default();
        for day in [-1, i32::MIN, MAX_DAY + 1, i32::MAX] {
            assert_eq!(cell.add(day), Added::Elsewhere, "day {day}");
        }
        assert_eq!(cell.add(MAX_DAY), Added::First);
        assert_eq!(cell.take(), (MAX_DAY, 1));
    }

    #[test]
    fn a_full_count_sends_the_rest_elsewhere() {
        let cell = DayCount(AtomicU64::new((7 << COUNT_BITS) | (COUNT_MASK - 1)));
        assert_eq!(cell.add(7), Added::Counted);
        assert_eq!(cell.add(7), Added::Elsewhere);
        assert_eq!(cell.take(), (7, COUNT_MASK));
    }

    /// Threads count while another takes: every request is in exactly one
    /// take, and each `First` is followed by a take that sees it.
    #[test]
    fn concurrent_counts_and_takes_lose_nothing() {
        const THREADS: u64 = 4;
        const EACH: u64 = 50_000;
        let cell = Arc::new(DayCount::default());
        let counters: Vec<_> = (0..THREADS)
            .map(|_| {
                let cell = Arc::clone(&cell);
                std::thread::spawn(move || {
                    let mut firsts = 0;
                    for _ in 0..EACH {
                        match cell.add(19_000) {
                            Added::First => firsts += 1,
                            Added::Counted => {}
                            Added::Elsewhere => panic!("one day, far from full"),
                        }
                    }
                    firsts
                })
            })
            .collect();
        let mut taken = 0;
        let mut nonzero_takes = 0;
        while !counters.iter().all(std::thread::JoinHandle::is_finished) {
            let (day, requests) = cell.take();
            if requests > 0 {
                assert_eq!(day, 19_000);
                nonzero_takes += 1;
            }
            taken += requests;
        }
        let firsts: u64 = counters.into_iter().map(|t| t.join().unwrap()).sum();
        let (_, rest) = cell.take();
        if rest > 0 {
            nonzero_takes += 1;
        }
        assert_eq!(taken + rest, THREADS * EACH);
        assert_eq!(firsts, nonzero_takes, "one queueing per count taken");
    }
}
