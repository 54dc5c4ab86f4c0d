//! Read replicas (PostgreSQL streaming standbys): cache-miss lookups read a
//! replica, and a replica's lag never weakens a promise (DECISIONS.md, "A read
//! replica").
//!
//! The change feed runs on the primary. Every change it reports is *fenced*:
//! until the replica has replayed the primary's WAL up to a position past the
//! change's commit, lookups of that public key go to the primary. The
//! position is sampled on the primary after the change was received (the
//! listener's heartbeat, or the poll that read it), so it is never below the
//! commit. While the feed is down, and after it (re)connects until the
//! replica has replayed what the primary had then, every lookup goes to the
//! primary. A key the replica does not know (created a moment ago) is asked
//! of the primary before anything is cached or refused.
//!
//! A task polls the replica's replay position every [`TRACK_EVERY`].

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::sqlx::{self, PgPool};

use crate::sync::lock;

/// How often the replica's replay position is read.
pub(crate) const TRACK_EVERY: Duration = Duration::from_millis(100);
/// Most fenced keys remembered; beyond, every lookup goes to the primary until
/// the replica has caught up with all of them.
const MAX_FENCED: usize = 100_000;

/// A WAL position (`pg_lsn`) as a number.
pub(crate) type Lsn = u64;

/// Reads a `pg_lsn` in its text form (`16/B374D848`).
pub(crate) fn parse_lsn(text: &str) -> Option<Lsn> {
    let (high, low) = text.split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (high <= u64::from(u32::MAX) && low <= u64::from(u32::MAX)).then_some(high << 32 | low)
}

/// Which lookups the replica may answer.
#[derive(Debug, Default)]
pub(crate) struct Fence {
    state: Mutex<FenceState>,
    /// The replica's replay position; 0 until first read.
    replica: AtomicU64,
}

#[derive(Debug)]
struct FenceState {
    /// Every lookup goes to the primary until the replica has replayed this
    /// position (`Lsn::MAX`: until the feed says where the primary is).
    all_until: Option<Lsn>,
    /// Keys changed since the last sample of the primary's position, with
    /// the sample count when they were reported.
    pending: HashMap<Box<str>, u64>,
    /// Keys changed, and the primary's position past their change.
    fenced: HashMap<Box<str>, Lsn>,
    /// Samples begun.
    samples: u64,
}

impl Default for FenceState {
    fn default() -> Self {
        Self {
            all_until: Some(Lsn::MAX),
            pending: HashMap::new(),
            fenced: HashMap::new(),
            samples: 0,
        }
    }
}

impl Fence {
    /// Whether the replica may answer a lookup of `public_key`.
    pub(crate) fn allows(&self, public_key: &str) -> bool {
        let replica = self.replica.load(Ordering::Acquire);
        let state = lock(&self.state);
        replica > 0
            && state.all_until.is_none()
            && !state.pending.contains_key(public_key)
            && state
                .fenced
                .get(public_key)
                .is_none_or(|&lsn| lsn <= replica)
    }

    /// The feed reported a change of `public_key`.
    pub(crate) fn changed(&self, public_key: &str) {
        let mut state = lock(&self.state);
        let samples = state.samples;
        state.pending.insert(public_key.into(), samples);
    }

    /// The feed reported a change of every key (a `TRUNCATE`).
    pub(crate) fn changed_all(&self) {
        lock(&self.state).all_until = Some(Lsn::MAX);
    }

    /// Starts a sample of the primary's position: the changes reported so far
    /// committed before it. Pass the result to [`Self::sampled`].
    pub(crate) fn begin_sample(&self) -> u64 {
        let mut state = lock(&self.state);
        state.samples += 1;
        state.samples
    }

    /// The primary was at `lsn` when sample `sample` was taken.
    pub(crate) fn sampled(&self, sample: u64, lsn: Lsn) {
        let mut state = lock(&self.state);
        let reported: Vec<Box<str>> = state
            .pending
            .iter()
            .filter(|(_, at)| **at < sample)
            .map(|(key, _)| key.clone())
            .collect();
        for key in reported {
            state.pending.remove(&key);
            state.fenced.insert(key, lsn);
        }
        if state.all_until == Some(Lsn::MAX) {
            // Unknown until now: whatever the feed missed committed before
            // this sample.
            state.all_until = Some(lsn);
        }
        if state.fenced.len() > MAX_FENCED {
            let newest = state.fenced.values().copied().max().unwrap_or(lsn);
            state.all_until = Some(state.all_until.map_or(newest, |until| until.max(newest)));
            state.fenced.clear();
        }
        drop(state);
        self.settle();
    }

    /// The feed is down: changes may be missed.
    pub(crate) fn down(&self) {
        lock(&self.state).all_until = Some(Lsn::MAX);
    }

    /// The replica has replayed up to `lsn`.
    fn replayed(&self, lsn: Lsn) {
        self.replica.store(lsn, Ordering::Release);
        self.settle();
    }

    /// Drops the fences the replica has passed.
    fn settle(&self) {
        let replica = self.replica.load(Ordering::Acquire);
        if replica == 0 {
            return;
        }
        let mut state = lock(&self.state);
        state.fenced.retain(|_, lsn| *lsn > replica);
        if state.all_until.is_some_and(|until| until <= replica) {
            state.all_until = None;
        }
    }
}

/// A read replica: its pool and its fence.
#[derive(Debug)]
pub(crate) struct ReadReplica {
    pub(crate) pool: PgPool,
    pub(crate) fence: Arc<Fence>,
}

/// The replica's replay position (a primary's own position, if the URL names
/// a primary).
const REPLAYED: &str = "SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                        ELSE pg_current_wal_lsn() END)::text";

impl ReadReplica {
    /// The replica at `pool`, and its position tracker (which stops when the
    /// replica is dropped).
    pub(crate) fn start(pool: PgPool) -> Arc<Self> {
        let replica = Arc::new(Self {
            pool,
            fence: Arc::default(),
        });
        let weak: Weak<Self> = Arc::downgrade(&replica);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(TRACK_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(replica) = weak.upgrade() else {
                        return;
                    };
                    let read = tokio::time::timeout(
                        TRACK_EVERY * 10,
                        // One simple-protocol round trip, whatever the pooler.
                        sqlx::raw_sql(REPLAYED).fetch_one(&replica.pool),
                    )
                    .await;
                    let read = read.map(|row| {
                        row.and_then(|row| {
                            use sqlx::Row;
                            row.try_get::<Option<String>, _>(0)
                        })
                    });
                    match read {
                        Ok(Ok(Some(text))) => {
                            if let Some(lsn) = parse_lsn(&text) {
                                replica.fence.replayed(lsn);
                            }
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "read replica: cannot read its replay position");
                        }
                        Err(_) => tracing::debug!("read replica: its replay position is late"),
                    }
                }
            });
        }
        replica
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_reads_as_a_number() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("FFFFFFFF/FFFFFFFF"), Some(u64::MAX));
        assert_eq!(parse_lsn("16B374D848"), None);
        assert_eq!(parse_lsn("1/G"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }

    #[test]
    fn nothing_goes_to_the_replica_before_the_feed_and_the_replica_are_known() {
        let fence = Fence::default();
        assert!(!fence.allows("pk_a"));
        fence.replayed(100);
        assert!(
            !fence.allows("pk_a"),
            "the feed has not said where the primary is"
        );
        let sample = fence.begin_sample();
        fence.sampled(sample, 150);
        assert!(!fence.allows("pk_a"), "the replica is behind the primary");
        fence.replayed(150);
        assert!(fence.allows("pk_a"));
    }

    #[test]
    fn a_changed_key_waits_for_the_replica_to_pass_its_change() {
        let fence = Fence::default();
        fence.replayed(10);
        let sample = fence.begin_sample();
        fence.sampled(sample, 10);
        assert!(fence.allows("pk_a"));

        fence.changed("pk_a");
        assert!(!fence.allows("pk_a"), "position not known yet");
        assert!(fence.allows("pk_b"), "other keys are not held back");
        // A sample begun before the change does not cover it.
        let early = fence.begin_sample();
        fence.changed("pk_c");
        fence.sampled(early, 20);
        assert!(!fence.allows("pk_a"));
        assert!(!fence.allows("pk_c"));
        fence.replayed(20);
        assert!(fence.allows("pk_a"));
        assert!(!fence.allows("pk_c"), "reported after the sample began");
        let later = fence.begin_sample();
        fence.sampled(later, 30);
        fence.replayed(30);
        assert!(fence.allows("pk_c"));
    }

    #[test]
    fn a_feed_outage_sends_every_lookup_to_the_primary_until_caught_up() {
        let fence = Fence::default();
        fence.replayed(10);
        let sample = fence.begin_sample();
        fence.sampled(sample, 10);
        fence.down();
        assert!(!fence.allows("pk_a"));
        let sample = fence.begin_sample();
        fence.sampled(sample, 40);
        fence.replayed(39);
        assert!(!fence.allows("pk_a"));
        fence.replayed(40);
        assert!(fence.allows("pk_a"));
    }
}
