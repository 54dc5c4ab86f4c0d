//! What a poller has read of the change log: the highest id seen, and the ids
//! below it that were not visible yet (*gaps*), kept as ranges.
//!
//! A change-log id is assigned when its row is inserted but becomes visible
//! when the writer's transaction commits, so a poll may see id 12 before 11.
//! Every id below the highest seen that was not seen is a gap until it is
//! *settled*: the transaction that may hold it is known to be over (it
//! committed, and one more read finds the row, or it rolled back). How a gap
//! settles depends on what the database can tell (see [`Settle`]).
//!
//! Gaps are ranges, not ids: memory grows with the number of holes between
//! visible rows, never with the ids' values (a change log emptied by pruning
//! whose next id is five million costs one range).

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

/// How gaps are known to be over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settle {
    /// Transactions commit one after another in id order (SQLite has one
    /// writer at a time): an id below a visible one that is not visible was
    /// deleted, never pending. Gaps settle at once.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Serialized,
    /// The poller reads the list of open transactions (MySQL/MariaDB
    /// `information_schema.INNODB_TRX`): a gap settles once every transaction
    /// open when it was noticed has ended.
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    OpenTransactions,
    /// The poller reads the transaction snapshot (PostgreSQL
    /// `pg_current_snapshot()`): a gap settles once the oldest transaction
    /// still running began after every transaction running when it was
    /// noticed (`xmin` has passed the `xmax` of then).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Snapshot,
    /// Nothing tells: a gap settles after this long (a writer transaction open
    /// longer is missed; its keys reach the replica within the positive TTL).
    After(Duration),
}

/// How long after a gap is noticed the list of open transactions is surely
/// fresh enough to show the transaction that holds it. MySQL and MariaDB
/// refresh `INNODB_TRX` at most every 0.1 s.
const LIST_SLACK: Duration = Duration::from_millis(250);

/// What the database told of its transactions at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Observed {
    /// Nothing (the database cannot tell, or the poller did not ask).
    Nothing,
    /// The ids of the transactions open now ([`Settle::OpenTransactions`]).
    #[cfg_attr(not(feature = "mysql"), allow(dead_code))]
    Open(Vec<String>),
    /// The oldest transaction id still running, and the next one to be
    /// assigned ([`Settle::Snapshot`]).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Snapshot { xmin: i64, xmax: i64 },
}

/// One range of ids not seen yet, `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    end: i64,
    noticed: Instant,
    /// The first poll at least [`LIST_SLACK`] after `noticed`: the holder of
    /// the gap, if still open then, was on that poll's list.
    reference: Option<Instant>,
    /// The next transaction id at the first snapshot after the gap was
    /// noticed: its holder's id is below it.
    xmax: Option<i64>,
    /// Settled by the last call of [`Cursor::settle`]: dropped after the
    /// next read of the gaps.
    settled: bool,
}

/// The poller's position in the change log.
#[derive(Debug)]
pub(super) struct Cursor {
    /// The highest id seen.
    pub(super) last: i64,
    /// Gaps by their first id.
    gaps: BTreeMap<i64, Gap>,
    settle: Settle,
    /// Open transactions (by id) and the poll that first listed each.
    open: HashMap<String, Instant>,
}

impl Cursor {
    /// A cursor at `last`, every id at or below it taken as read.
    pub(super) fn new(last: i64, settle: Settle) -> Self {
        Self {
            last,
            gaps: BTreeMap::new(),
            settle,
            open: HashMap::new(),
        }
    }

    /// A cursor for a poller starting on a log whose visible ids are `ids`
    /// (ascending): every id below the highest that is not visible may belong
    /// to a transaction open now, so it is a gap, down to id 1.
    pub(super) fn starting_at(ids: &[i64], settle: Settle, now: Instant) -> Self {
        let mut cursor = Self::new(0, settle);
        for &id in ids {
            cursor.saw(id, now);
        }
        cursor
    }

    /// Changes how gaps settle (a database that stopped listing its open
    /// transactions falls back to a window).
    pub(super) fn set_settle(&mut self, settle: Settle) {
        self.settle = settle;
    }

    /// Notes that `id` is visible: above the cursor it moves the cursor (the
    /// ids skipped become a gap); below, it leaves the gaps.
    pub(super) fn saw(&mut self, id: i64, now: Instant) {
        if id > self.last {
            if id > self.last.saturating_add(1) {
                self.gaps.insert(
                    self.last + 1,
                    Gap {
                        end: id - 1,
                        noticed: now,
                        reference: None,
                        xmax: None,
                        settled: false,
                    },
                );
            }
            self.last = id;
        } else {
            self.fill(id);
        }
    }

    /// Removes `id` from the gap that holds it, if any.
    fn fill(&mut self, id: i64) {
        let Some((&start, &gap)) = self.gaps.range(..=id).next_back() else {
            return;
        };
        if gap.end < id {
            return;
        }
        self.gaps.remove(&start);
        if start < id {
            self.gaps.insert(start, Gap { end: id - 1, ..gap });
        }
        if id < gap.end {
            self.gaps.insert(id + 1, gap);
        }
    }

    /// The gaps, as inclusive ranges in ascending order.
    pub(super) fn gap_ranges(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.gaps.iter().map(|(&start, gap)| (start, gap.end))
    }

    /// Whether any gap is open.
    pub(super) fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// How many gap ranges are open.
    #[cfg(test)]
    pub(super) fn gap_count(&self) -> usize {
        self.gaps.len()
    }

    /// How gaps settle.
    pub(super) fn settles_by(&self) -> Settle {
        self.settle
    }

    /// Marks the gaps that are over as settled, given what the database told
    /// of its transactions now. Call it before the gaps are read again, and
    /// [`Self::drop_settled`] after: a gap whose holder committed is read once
    /// more before it is dropped.
    pub(super) fn settle(&mut self, observed: Observed, now: Instant) {
        match self.settle {
            Settle::Serialized => {
                for gap in self.gaps.values_mut() {
                    gap.settled = true;
                }
            }
            Settle::After(window) => {
                for gap in self.gaps.values_mut() {
                    gap.settled = now.duration_since(gap.noticed) >= window;
                }
            }
            Settle::Snapshot => {
                let Observed::Snapshot { xmin, xmax } = observed else {
                    return;
                };
                for gap in self.gaps.values_mut() {
                    let reference = *gap.xmax.get_or_insert(xmax);
                    gap.settled = xmin >= reference;
                }
            }
            Settle::OpenTransactions => {
                let Observed::Open(open_now) = observed else {
                    return;
                };
                let mut open = HashMap::with_capacity(open_now.len());
                for id in open_now {
                    let first = self.open.get(&id).copied().unwrap_or(now);
                    open.insert(id, first);
                }
                self.open = open;
                let oldest = self.open.values().min().copied();
                for gap in self.gaps.values_mut() {
                    match gap.reference {
                        Some(reference) => {
                            // Every transaction open now was first listed after
                            // the reference poll: the holder is not among them.
                            gap.settled = oldest.is_none_or(|oldest| oldest > reference);
                        }
                        None if now.duration_since(gap.noticed) >= LIST_SLACK => {
                            gap.reference = Some(now);
                        }
                        None => {}
                    }
                }
            }
        }
    }

    /// Drops the gaps marked settled.
    pub(super) fn drop_settled(&mut self) {
        self.gaps.retain(|_, gap| !gap.settled);
    }

    /// The highest id below which every id was seen or settled: what this
    /// poller has fully read.
    pub(super) fn read_through(&self) -> i64 {
        self.gaps
            .keys()
            .next()
            .map_or(self.last, |&start| start - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(cursor: &Cursor) -> Vec<(i64, i64)> {
        cursor.gap_ranges().collect()
    }

    #[test]
    fn skipped_ids_become_one_range_and_fill_by_splitting() {
        let now = Instant::now();
        let mut cursor = Cursor::new(10, Settle::After(Duration::from_secs(600)));
        cursor.saw(11, now);
        cursor.saw(20, now);
        assert_eq!(cursor.last, 20);
        assert_eq!(ranges(&cursor), [(12, 19)]);
        cursor.saw(15, now);
        assert_eq!(ranges(&cursor), [(12, 14), (16, 19)]);
        cursor.saw(12, now);
        cursor.saw(19, now);
        assert_eq!(ranges(&cursor), [(13, 14), (16, 18)]);
        cursor.saw(13, now);
        cursor.saw(14, now);
        assert_eq!(ranges(&cursor), [(16, 18)]);
        assert_eq!(cursor.read_through(), 15);
        // An id seen twice, or one never a gap, changes nothing.
        cursor.saw(13, now);
        cursor.saw(5, now);
        assert_eq!(ranges(&cursor), [(16, 18)]);
    }

    #[test]
    fn memory_does_not_grow_with_the_ids() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0, Settle::Serialized);
        cursor.saw(5_000_001, now);
        cursor.saw(i64::MAX, now);
        assert_eq!(cursor.gap_count(), 2);
        assert_eq!(ranges(&cursor), [(1, 5_000_000), (5_000_002, i64::MAX - 1)]);
    }

    #[test]
    fn a_start_keeps_every_invisible_id_below_the_newest_as_a_gap() {
        let now = Instant::now();
        let cursor = Cursor::starting_at(&[40, 41, 43], Settle::Serialized, now);
        assert_eq!(cursor.last, 43);
        assert_eq!(ranges(&cursor), [(1, 39), (42, 42)]);
        assert_eq!(cursor.read_through(), 0);
        let empty = Cursor::starting_at(&[], Settle::Serialized, now);
        assert_eq!((empty.last, empty.has_gaps()), (0, false));
    }

    #[test]
    fn serialized_gaps_settle_at_once_but_only_after_one_more_read() {
        let now = Instant::now();
        let mut cursor = Cursor::new(0, Settle::Serialized);
        cursor.saw(3, now);
        cursor.settle(Observed::Nothing, now);
        assert!(cursor.has_gaps(), "kept until read once more");
        cursor.drop_settled();
        assert!(!cursor.has_gaps());
        assert_eq!(cursor.read_through(), 3);
    }

    #[test]
    fn windowed_gaps_settle_after_the_window() {
        let start = Instant::now();
        let window = Duration::from_secs(600);
        let mut cursor = Cursor::new(0, Settle::After(window));
        cursor.saw(3, start);
        cursor.settle(Observed::Nothing, start + window - Duration::from_millis(1));
        cursor.drop_settled();
        assert!(cursor.has_gaps());
        cursor.settle(Observed::Nothing, start + window);
        cursor.drop_settled();
        assert!(!cursor.has_gaps());
    }

    #[test]
    fn a_gap_waits_for_every_transaction_open_when_it_was_noticed() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let open = |ids: &[&str]| Observed::Open(ids.iter().map(|id| (*id).to_owned()).collect());
        let mut cursor = Cursor::new(10, Settle::OpenTransactions);
        // The holder of 11..=11 ("a") has not shown in the list yet.
        cursor.saw(12, at(0));
        cursor.settle(open(&[]), at(0));
        cursor.drop_settled();
        assert!(cursor.has_gaps(), "too early to trust an empty list");
        // The reference poll lists it.
        cursor.settle(open(&["a"]), at(300));
        cursor.drop_settled();
        assert!(cursor.has_gaps());
        // A transaction that began later does not hold the gap open.
        cursor.settle(open(&["a", "b"]), at(1_300));
        cursor.drop_settled();
        assert!(cursor.has_gaps(), "a is still open");
        cursor.settle(open(&["b"]), at(2_300));
        assert!(cursor.has_gaps(), "read once more first");
        cursor.drop_settled();
        assert!(!cursor.has_gaps());
    }

    #[test]
    fn a_gap_waits_for_the_snapshot_to_pass_the_transactions_of_its_notice() {
        let now = Instant::now();
        let mut cursor = Cursor::new(10, Settle::Snapshot);
        cursor.saw(13, now);
        // Transactions 700..=799 may still run; 800 is the next id.
        cursor.settle(
            Observed::Snapshot {
                xmin: 700,
                xmax: 800,
            },
            now,
        );
        cursor.drop_settled();
        assert!(cursor.has_gaps());
        // Later ones do not hold it open once those ended.
        cursor.settle(
            Observed::Snapshot {
                xmin: 799,
                xmax: 900,
            },
            now,
        );
        cursor.drop_settled();
        assert!(cursor.has_gaps());
        cursor.settle(
            Observed::Snapshot {
                xmin: 800,
                xmax: 900,
            },
            now,
        );
        cursor.drop_settled();
        assert!(!cursor.has_gaps());
        // No transaction running when it was noticed: settled at once.
        cursor.saw(15, now);
        cursor.settle(
            Observed::Snapshot {
                xmin: 950,
                xmax: 950,
            },
            now,
        );
        cursor.drop_settled();
        assert!(!cursor.has_gaps());
    }

    #[test]
    fn no_list_leaves_the_gaps_as_they_are() {
        let start = Instant::now();
        let mut cursor = Cursor::new(0, Settle::OpenTransactions);
        cursor.saw(2, start);
        cursor.settle(Observed::Nothing, start + Duration::from_secs(3_600));
        cursor.drop_settled();
        assert!(cursor.has_gaps());
    }
}
