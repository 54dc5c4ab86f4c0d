//! The change feed: changes to `api_keys`, made by any writer, reach every
//! validator, which drops the changed public key from its caches.
//!
//! The feed comes from the database itself, through triggers the crate's
//! migrations create (so a change made by another process, the reference
//! service or plain SQL is seen like one made by this crate's manager):
//!
//! - **PostgreSQL (push):** the triggers `NOTIFY` channel `tower_api_keys` with
//!   the public key as the payload. Each validator listens on a connection of
//!   its own (never one of the query pool's) and evicts each key it is told
//!   about.
//! - **MySQL/MariaDB and SQLite (poll):** the triggers append the public key to
//!   `tower_api_keys_changes`, and each validator reads the new rows every poll
//!   interval (default 1 s). Ids are assigned when a row is inserted but become
//!   visible when its transaction commits, so a poll that sees id 12 but not 11
//!   keeps 11 as a *gap* and reads it again on every poll until the transaction
//!   that may hold it is over (see `cursor`): a slow or large writer
//!   transaction that commits late is not skipped.
//!
//! # Faults
//!
//! A feed never claims to work when it does not:
//!
//! - **Liveness.** The listener sends itself a notification every
//!   [`HEARTBEAT_EVERY`] on a channel of its own and must receive it within
//!   [`HEARTBEAT_DEADLINE`]; every poll query has the deadline
//!   [`QUERY_DEADLINE`]. A connection that dies silently (a firewall drops it,
//!   the host vanishes, a query hangs) is noticed within 5 s: the feed counts
//!   as disconnected (`tower_api_keys_change_feed_connected` reads 0) and
//!   reconnects with its own backoff, capped at [`MAX_BACKOFF`].
//! - **Catching up.** A listener that reconnects empties the cache (what was
//!   sent meanwhile is lost); a poller reads on from where it was (the rows
//!   are still in the log) unless the outage lasted nearly [`RETENTION`].
//! - **Trust while down.** While the feed is down, a cached key is trusted
//!   without a store check for the validator's feed-down TTL at most (by
//!   default the positive TTL, 60 s) after it was last read.
//! - **Pruning.** The change log is pruned by id: a row goes [`RETENTION`]
//!   after the poller had read every id up to it, never by the writer's clock.
//!
//! Writes that fire no trigger are not fed, and reach a validator within its
//! positive TTL: on MySQL/MariaDB, `TRUNCATE api_keys` and changes made by
//! foreign-key cascades from a host's own tables.

// Without a database driver there is nothing to follow.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]

use std::{
    fmt,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use tokio::{sync::watch, task::JoinHandle};

#[cfg(feature = "sql")]
use crate::store::conn::Pool;
use crate::sync::lock;

/// Without the SQL store there is no pool to follow, and so no
/// [`ChangeSource`]: a repository of the host's own has no feed.
#[cfg(not(feature = "sql"))]
type Pool = std::convert::Infallible;

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod changelog;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod cursor;
#[cfg(feature = "postgres")]
mod listen;
#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
mod poll;
#[cfg(feature = "postgres")]
mod prune;

/// The PostgreSQL `NOTIFY` channel the triggers write to.
pub const CHANNEL: &str = "tower_api_keys";
/// How long a missing change-log id is waited for when the database cannot
/// tell whether the transaction that holds it is still open (MySQL without
/// the `PROCESS` privilege): then it is taken for a rolled-back transaction.
pub const GAP_WINDOW: Duration = Duration::from_secs(600);
/// How long change-log rows are kept after every id up to theirs was read.
pub const RETENTION: Duration = Duration::from_secs(3600);
/// How often a listener checks its connection with a notification to itself.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a listener's heartbeat may take before the connection counts as
/// dead.
pub const HEARTBEAT_DEADLINE: Duration = Duration::from_secs(2);
/// Longest wait for one poll query (or the listener's `LISTEN`).
pub const QUERY_DEADLINE: Duration = Duration::from_secs(3);
/// Longest wait for a feed connection to open.
pub const CONNECT_DEADLINE: Duration = Duration::from_secs(2);
/// Longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First wait after a failure.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Where a validator's change feed comes from: a database connection pool of
/// the crate's [`SeaOrmRepository`](crate::store::SeaOrmRepository).
///
/// Repositories hand one to the validator through
/// [`ApiKeyRepository::change_source`](crate::store::ApiKeyRepository::change_source);
/// a repository without one (such as
/// [`MemoryRepository`](crate::store::MemoryRepository)) has no feed.
/// Without the feature `sql` no value of this type exists.
///
/// A PostgreSQL feed listens when it has a URL to listen on (a direct or
/// session-mode one), and otherwise polls the change log through the pool;
/// the other backends poll.
#[derive(Clone)]
pub struct ChangeSource {
    /// The query pool: the poller reads through it.
    pool: Pool,
    /// Where a PostgreSQL feed listens, if anywhere.
    #[cfg(feature = "postgres")]
    listen: Option<sea_orm::sqlx::postgres::PgConnectOptions>,
    /// The read replica's fence, told of every change.
    #[cfg(feature = "postgres")]
    fence: Option<Arc<crate::store::replica::Fence>>,
}

impl fmt::Debug for ChangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ChangeSource").field(&self.mode()).finish()
    }
}

impl ChangeSource {
    /// The feed for a SeaORM connection to a database the crate's migrations
    /// ran on; `None` for a backend whose driver feature is off, or a mock.
    #[cfg(feature = "sql")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
    pub fn of(db: &sea_orm::DatabaseConnection) -> Option<Self> {
        match Pool::of(db)? {
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => Some(Self::postgres(
                pool,
                crate::store::PoolMode::Session,
                None,
                None,
            )),
            #[allow(unreachable_patterns)]
            pool => Some(Self {
                pool,
                #[cfg(feature = "postgres")]
                listen: None,
                #[cfg(feature = "postgres")]
                fence: None,
            }),
        }
    }

    /// A PostgreSQL feed over `pool`, reached in `mode`: it listens on
    /// `listen` when given, else on the pool's own URL in session mode, and
    /// polls the change log through the pool in transaction mode.
    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(
        pool: sea_orm::sqlx::PgPool,
        mode: crate::store::PoolMode,
        listen: Option<sea_orm::sqlx::postgres::PgConnectOptions>,
        fence: Option<Arc<crate::store::replica::Fence>>,
    ) -> Self {
        let listen = listen.or_else(|| {
            (mode == crate::store::PoolMode::Session).then(|| (*pool.connect_options()).clone())
        });
        Self {
            pool: Pool::Postgres(pool),
            listen,
            fence,
        }
    }

    /// How this source delivers changes.
    pub fn mode(&self) -> FeedMode {
        #[cfg(feature = "postgres")]
        if self.listen.is_some() {
            return FeedMode::Listen;
        }
        FeedMode::Poll
    }
}

/// How a change feed learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedMode {
    /// PostgreSQL `LISTEN`/`NOTIFY` on a dedicated connection.
    Listen,
    /// Polling the change-log table `tower_api_keys_changes`.
    Poll,
}

/// A snapshot of a validator's change feed, for health checks and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    /// How the feed learns of changes.
    pub mode: FeedMode,
    /// Whether the feed is working now: the listener is connected, or the last
    /// poll succeeded.
    pub connected: bool,
    /// Changes received since the validator started (each evicts one key, or
    /// the whole cache for a `TRUNCATE`).
    pub events: u64,
    /// When the last change was received, if any.
    pub last_event: Option<SystemTime>,
    /// How far behind the feed may be: for polling, the time since the last
    /// successful poll; for listening, zero while connected (a heartbeat
    /// proves the connection every second). `None` before the feed first
    /// connected or while it is disconnected.
    pub lag: Option<Duration>,
    /// Times the feed (re)connected. A listener empties the cache on every
    /// reconnection (notifications sent meanwhile are lost); a poller reads on
    /// from where it was, unless the outage outlasted the log's retention.
    pub connections: u64,
}

/// Where the feed sends what it learns: the validator's caches.
pub(crate) trait Evict: Send + Sync + 'static {
    /// Forgets one public key.
    fn evict(&self, public_key: &str);
    /// Forgets every key.
    fn evict_all(&self);
}

/// The feed's state, shared between its task and the validator.
#[derive(Default)]
pub(crate) struct FeedState {
    connected: AtomicBool,
    events: AtomicU64,
    connections: AtomicU64,
    last_event: Mutex<Option<SystemTime>>,
    last_ok: Mutex<Option<Instant>>,
}

impl FeedState {
    fn connected(&self) {
        metrics::gauge!(crate::telemetry::FEED_CONNECTED).set(1.0);
        self.connected.store(true, Ordering::SeqCst);
        self.connections.fetch_add(1, Ordering::Relaxed);
        self.ok();
    }

    fn disconnected(&self) {
        metrics::gauge!(crate::telemetry::FEED_CONNECTED).set(0.0);
        self.connected.store(false, Ordering::SeqCst);
    }

    fn ok(&self) {
        *lock(&self.last_ok) = Some(Instant::now());
    }

    fn event(&self) {
        metrics::counter!(crate::telemetry::FEED_EVENTS).increment(1);
        self.events.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_event) = Some(SystemTime::now());
    }

    fn snapshot(&self, mode: FeedMode) -> FeedStatus {
        let connected = self.connected.load(Ordering::SeqCst);
        let lag = connected.then(|| match mode {
            FeedMode::Listen => Duration::ZERO,
            FeedMode::Poll => lock(&self.last_ok).map_or(Duration::ZERO, |at| at.elapsed()),
        });
        FeedStatus {
            mode,
            connected,
            events: self.events.load(Ordering::Relaxed),
            last_event: *lock(&self.last_event),
            lag,
            connections: self.connections.load(Ordering::Relaxed),
        }
    }
}

/// A running change feed. Dropping it (with the validator) stops the task.
pub(crate) struct Feed {
    mode: FeedMode,
    state: Arc<FeedState>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Feed {
    /// Starts the feed on the current tokio runtime; `None` outside one.
    pub(crate) fn spawn(
        source: ChangeSource,
        target: Weak<dyn Evict>,
        poll_interval: Duration,
    ) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let mode = source.mode();
        let state = Arc::new(FeedState::default());
        let (stop, stopped) = watch::channel(false);
        let task = {
            let state = Arc::clone(&state);
            runtime.spawn(async move {
                let worker = Worker {
                    target,
                    state,
                    stopped,
                    #[cfg(feature = "postgres")]
                    fence: source.fence,
                };
                #[cfg(feature = "postgres")]
                if let Some(options) = source.listen {
                    return listen::run(worker, options).await;
                }
                #[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
                poll::run(worker, source.pool, poll_interval).await;
                #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
                {
                    // No driver compiled in: no source exists.
                    drop(worker);
                    match source.pool {}
                }
            })
        };
        #[cfg(not(any(feature = "postgres", feature = "mysql", feature = "sqlite")))]
        let _ = poll_interval;
        Some(Self {
            mode,
            state,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    pub(crate) fn status(&self) -> FeedStatus {
        self.state.snapshot(self.mode)
    }

    /// Whether the feed works now (cheap: one atomic load).
    pub(crate) fn is_up(&self) -> bool {
        self.state.connected.load(Ordering::Relaxed)
    }

    /// Stops the task and waits for it.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// What a feed task works with.
struct Worker {
    target: Weak<dyn Evict>,
    state: Arc<FeedState>,
    stopped: watch::Receiver<bool>,
    /// A read replica's fence: every change is fenced (see
    /// `store::replica`).
    #[cfg(feature = "postgres")]
    fence: Option<Arc<crate::store::replica::Fence>>,
}

impl Worker {
    /// `false` once the validator is gone or the feed was stopped.
    fn running(&self) -> bool {
        !*self.stopped.borrow() && self.target.strong_count() > 0
    }

    /// A change to `public_key`; an empty one means "everything".
    fn changed(&self, public_key: &str) {
        self.state.event();
        #[cfg(feature = "postgres")]
        if let Some(fence) = &self.fence {
            if public_key.is_empty() {
                fence.changed_all();
            } else {
                fence.changed(public_key);
            }
        }
        if let Some(target) = self.target.upgrade() {
            if public_key.is_empty() {
                target.evict_all();
            } else {
                target.evict(public_key);
            }
        }
    }

    /// The feed (re)connected: changes may have been missed, so nothing cached
    /// before this moment is trusted.
    fn connected(&self) {
        if let Some(target) = self.target.upgrade() {
            target.evict_all();
        }
        self.state.connected();
    }

    fn disconnected(&self) {
        #[cfg(feature = "postgres")]
        if let Some(fence) = &self.fence {
            fence.down();
        }
        self.state.disconnected();
    }

    /// Waits `delay`, or less if the feed is stopped; `false` if it was.
    async fn sleep(&mut self, delay: Duration) -> bool {
        let stopped = tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = self.stopped.wait_for(|stop| *stop) => true,
        };
        !stopped && self.running()
    }
}

/// Exponential backoff between reconnection attempts.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
struct Backoff(Duration);

#[cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
impl Backoff {
    fn new() -> Self {
        Self(FIRST_BACKOFF)
    }

    fn reset(&mut self) {
        self.0 = FIRST_BACKOFF;
    }

    fn next(&mut self) -> Duration {
        let delay = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_and_resets() {
        let mut backoff = Backoff::new();
        let delays: Vec<_> = (0..8).map(|_| backoff.next()).collect();
        assert_eq!(delays[0], FIRST_BACKOFF);
        assert_eq!(delays[1], FIRST_BACKOFF * 2);
        assert_eq!(*delays.last().unwrap(), MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.next(), FIRST_BACKOFF);
    }

    #[test]
    fn status_reports_lag_only_while_connected() {
        let state = FeedState::default();
        assert_eq!(state.snapshot(FeedMode::Poll).lag, None);
        state.connected();
        state.event();
        let status = state.snapshot(FeedMode::Listen);
        assert!(status.connected);
        assert_eq!(status.lag, Some(Duration::ZERO));
        assert_eq!(status.events, 1);
        assert_eq!(status.connections, 1);
        assert!(status.last_event.is_some());
        state.disconnected();
        assert_eq!(state.snapshot(FeedMode::Poll).lag, None);
    }
}
