//! The writer's clock: Unix seconds, and UTC days, read off the monotonic
//! clock, so that the request path needs no wall-clock read; and the
//! conversions between those days and dates.

use std::{
    sync::atomic::{AtomicI64, Ordering},
    time::{Duration, Instant},
};

use chrono::{Datelike, NaiveDate, Utc};

/// `NaiveDate::num_days_from_ce` of 1970-01-01.
const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// Today's UTC day, in days since 1970-01-01: one clock read and a division.
#[cfg(test)]
pub(super) fn today() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i32::try_from(since.as_secs() / 86_400).unwrap_or(i32::MAX)
        })
}

/// The date of a day counted since 1970-01-01.
pub(super) fn day_to_date(day: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(day.checked_add(UNIX_EPOCH_DAYS_FROM_CE)?)
}

/// Days since 1970-01-01 of a date.
pub(super) fn date_to_day(date: NaiveDate) -> i32 {
    date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE
}

/// Unix seconds read off the monotonic clock, so that a use still within its
/// key's throttle interval needs no wall-clock read. The offset between the
/// two clocks is taken when the writer is made and again at every flush, so a
/// step of the wall clock (or a suspend) skews the throttle for one flush
/// interval at most; the time a use records is always read off the wall clock.
#[derive(Debug)]
pub(super) struct WallClock {
    base: Instant,
    /// Unix seconds at `base`.
    offset: AtomicI64,
}

impl WallClock {
    pub(super) fn new() -> Self {
        let clock = Self {
            base: Instant::now(),
            offset: AtomicI64::new(0),
        };
        clock.resync();
        clock
    }

    /// Takes the offset again.
    pub(super) fn resync(&self) {
        let since_base = secs(Instant::now().saturating_duration_since(self.base));
        let offset = Utc::now().timestamp().saturating_sub(since_base);
        self.offset.store(offset, Ordering::Relaxed);
    }

    /// Unix seconds at `now`, to within a second and the drift since the last
    /// [`resync`](Self::resync).
    pub(super) fn unix_seconds(&self, now: Instant) -> i64 {
        let since_base = secs(now.saturating_duration_since(self.base));
        self.offset
            .load(Ordering::Relaxed)
            .saturating_add(since_base)
    }

    /// The UTC day of `now`, in days since 1970-01-01.
    pub(super) fn day_of(&self, now: Instant) -> i32 {
        let day = self.unix_seconds(now).div_euclid(86_400);
        i32::try_from(day).unwrap_or(i32::MAX)
    }
}

/// Whole seconds of `d`, as `i64`.
pub(super) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_since_the_epoch_convert_both_ways() {
        assert_eq!(day_to_date(0), NaiveDate::from_ymd_opt(1970, 1, 1));
        let date = NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
        assert_eq!(day_to_date(date_to_day(date)), Some(date));
        assert_eq!(day_to_date(today()), Some(Utc::now().date_naive()));
    }
}
