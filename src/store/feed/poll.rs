//! MySQL/MariaDB and SQLite: polling the change-log table.
//!
//! MySQL polls on a connection of its own, opened from the query pool's
//! options, so that a connection the database killed, or one that hangs, is
//! noticed and replaced at once and never handed to a request. SQLite polls
//! through the query pool (a file has no connection to lose, and an in-memory
//! database exists only on its one connection).
//!
//! Every query has a deadline ([`QUERY_DEADLINE`](super::QUERY_DEADLINE)); a failed or late one
//! counts the feed as down until a poll on a new connection succeeds. The
//! rows missed meanwhile are still in the log, so the poller catches up from
//! where it was instead of emptying the cache, unless the outage was long
//! enough for them to have been pruned.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use super::{
    Backoff, GAP_WINDOW, RETENTION, Worker,
    changelog::{Conn, PAGE, PRUNE_LIMIT, SqlxError, start},
    cursor::{Cursor, Observed, Settle},
};
use crate::store::conn::Pool;

/// Most gap ranges named by one query.
const RANGES_PER_QUERY: usize = 200;
/// How often the poller notes how far it has read, and prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Statements per prune (each deletes at most [`PRUNE_LIMIT`] rows).
const PRUNE_ROUNDS: usize = 10;
/// An outage this long may have outlived rows the poller needed (they are
/// pruned [`RETENTION`] after every poller had them): it starts over.
const LONG_OUTAGE: Duration = RETENTION.saturating_sub(Duration::from_secs(300));

/// The poller's own state across connections.
struct Poller {
    source: Pool,
    /// `None` until a first start succeeded.
    cursor: Option<Cursor>,
    /// Whether the database lists its open transactions to this poller; a
    /// refusal (a missing privilege) switches its gaps to [`GAP_WINDOW`].
    lists_transactions: bool,
    /// How far the log had been read, noted every [`PRUNE_EVERY`].
    read_marks: VecDeque<(Instant, i64)>,
    last_mark: Option<Instant>,
    /// PostgreSQL prunes by snapshot marks instead.
    #[cfg(feature = "postgres")]
    pg_pruner: super::prune::Pruner,
    /// When the last poll succeeded.
    last_good: Option<Instant>,
    /// Since when the feed is down, if it is.
    down_since: Option<Instant>,
}

pub(super) async fn run(mut worker: Worker, source: Pool, interval: Duration) {
    let mut poller = Poller {
        source,
        cursor: None,
        lists_transactions: true,
        read_marks: VecDeque::new(),
        last_mark: None,
        #[cfg(feature = "postgres")]
        pg_pruner: super::prune::Pruner::default(),
        last_good: None,
        down_since: None,
    };
    let mut backoff = Backoff::new();
    while worker.running() {
        let failure = match poller.source.connect().await {
            Ok(mut conn) => match poller
                .follow(&mut worker, &mut conn, interval, &mut backoff)
                .await
            {
                None => return,
                Some(failure) => failure,
            },
            Err(err) => err,
        };
        worker.disconnected();
        if poller.down_since.is_none() {
            poller.down_since = Some(Instant::now());
            tracing::warn!(error = %failure, "change feed: cannot read tower_api_keys_changes; \
                reconnecting (meanwhile cached keys are trusted for the feed-down TTL only)");
        }
        if !worker.sleep(backoff.next()).await {
            return;
        }
    }
}

impl Poller {
    /// Polls on `conn` until it fails (the error) or the feed stops (`None`).
    async fn follow(
        &mut self,
        worker: &mut Worker,
        conn: &mut Conn,
        interval: Duration,
        backoff: &mut Backoff,
    ) -> Option<SqlxError> {
        // Catch up: from the cursor after a short outage, from scratch at the
        // first start or after a long one.
        let resume =
            self.cursor.is_some() && self.last_good.is_some_and(|at| at.elapsed() < LONG_OUTAGE);
        if resume {
            if let Err(err) = self.poll(worker, conn).await {
                return Some(err);
            }
            worker.state.connected();
        } else {
            if self.cursor.is_some() {
                tracing::warn!(
                    "change feed: the outage outlasted the change log's retention; cache emptied"
                );
            }
            match start(conn, self.source.settle(self.lists_transactions)).await {
                Ok(cursor) => self.cursor = Some(cursor),
                Err(err) => return Some(err),
            }
            self.read_marks.clear();
            // Anything cached before the log was read may predate a change
            // read as already seen.
            worker.connected();
            tracing::debug!(interval = ?interval, "change feed: polling tower_api_keys_changes");
        }
        if let Some(since) = self.down_since.take() {
            tracing::info!(down_for = ?since.elapsed(), "change feed: polling works again; caught up");
        }
        self.last_good = Some(Instant::now());
        backoff.reset();
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = worker.stopped.wait_for(|stop| *stop) => return None,
            }
            if !worker.running() {
                return None;
            }
            if let Err(err) = self.poll(worker, conn).await {
                return Some(err);
            }
            self.last_good = Some(Instant::now());
            worker.state.ok();
            if let Err(err) = self.prune(conn).await {
                return Some(err);
            }
        }
    }

    /// One poll: new rows (page by page), then the gaps.
    async fn poll(&mut self, worker: &Worker, conn: &mut Conn) -> Result<(), SqlxError> {
        let Some(cursor) = self.cursor.as_mut() else {
            return Ok(());
        };
        loop {
            let rows = conn.rows_above(cursor.last).await?;
            if rows.is_empty() {
                let max = conn.max_id().await?;
                if max > 0 && max < cursor.last {
                    // Rows exist, all below the cursor: the log's ids restarted
                    // (it was truncated or made again). Start over.
                    tracing::warn!("change feed: the change log's ids restarted; cache emptied");
                    *cursor = start(conn, self.source.settle(self.lists_transactions)).await?;
                    self.read_marks.clear();
                    worker.connected();
                    return Ok(());
                }
            }
            let full = rows.len() as i64 >= PAGE;
            let now = Instant::now();
            for (id, public_key) in rows {
                cursor.saw(id, now);
                worker.changed(&public_key);
            }
            if !full {
                break;
            }
            tokio::task::yield_now().await;
        }
        let observe = match cursor.settles_by() {
            Settle::OpenTransactions => cursor.has_gaps() && self.lists_transactions,
            // Every poll: a read replica's fence needs the WAL position.
            Settle::Snapshot => true,
            Settle::Serialized | Settle::After(_) => false,
        };
        let observed = if observe {
            #[cfg(feature = "postgres")]
            let sample = worker.fence.as_ref().map(|fence| fence.begin_sample());
            match conn.observe().await {
                Ok((observed, _lsn)) => {
                    #[cfg(feature = "postgres")]
                    if let (Some(fence), Some(sample), Some(lsn)) = (
                        &worker.fence,
                        sample,
                        _lsn.as_deref().and_then(crate::store::replica::parse_lsn),
                    ) {
                        fence.sampled(sample, lsn);
                    }
                    observed
                }
                Err(SqlxError::Database(err))
                    if cursor.settles_by() == Settle::OpenTransactions =>
                {
                    tracing::warn!(
                        error = %err,
                        "change feed: cannot list open transactions (information_schema.INNODB_TRX \
                         needs the PROCESS privilege); a missing change-log id is waited for {} s, \
                         so a writer transaction open longer reaches this replica within the \
                         positive TTL only",
                        GAP_WINDOW.as_secs()
                    );
                    self.lists_transactions = false;
                    cursor.set_settle(Settle::After(GAP_WINDOW));
                    Observed::Nothing
                }
                Err(err) => return Err(err),
            }
        } else {
            Observed::Nothing
        };
        if !cursor.has_gaps() {
            return Ok(());
        }
        cursor.settle(observed, Instant::now());
        // Read the gaps, settled ones included, before dropping those.
        let ranges: Vec<(i64, i64)> = cursor.gap_ranges().collect();
        for chunk in ranges.chunks(RANGES_PER_QUERY) {
            let mut above = i64::MIN;
            loop {
                let rows = conn.rows_in(chunk, above).await?;
                let full = rows.len() as i64 >= PAGE;
                let now = Instant::now();
                for (id, public_key) in rows {
                    above = id;
                    cursor.saw(id, now);
                    worker.changed(&public_key);
                }
                if !full {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
        cursor.drop_settled();
        Ok(())
    }

    /// Every [`PRUNE_EVERY`]: notes how far the log is read, and deletes the
    /// rows that were read at least [`RETENTION`] ago. A row that old was
    /// visible to every poller for that long: any poller that still needs it
    /// has been down longer than [`LONG_OUTAGE`] and starts over.
    async fn prune(&mut self, conn: &mut Conn) -> Result<(), SqlxError> {
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)]
        if let Conn::Postgres(connection) = conn {
            return match tokio::time::timeout(
                super::QUERY_DEADLINE * 4,
                self.pg_pruner.step(connection),
            )
            .await
            {
                Ok(done) => done,
                Err(_) => Err(SqlxError::PoolTimedOut),
            };
        }
        let now = Instant::now();
        if self
            .last_mark
            .is_some_and(|at| now.duration_since(at) < PRUNE_EVERY)
        {
            return Ok(());
        }
        self.last_mark = Some(now);
        let Some(cursor) = &self.cursor else {
            return Ok(());
        };
        self.read_marks.push_back((now, cursor.read_through()));
        let mut through = None;
        while let Some(&(at, read)) = self.read_marks.front() {
            if now.duration_since(at) < RETENTION {
                break;
            }
            through = Some(read);
            self.read_marks.pop_front();
        }
        let Some(through) = through else {
            return Ok(());
        };
        let mut pruned = 0;
        for _ in 0..PRUNE_ROUNDS {
            let rows = conn.prune(through).await?;
            pruned += rows;
            if rows < PRUNE_LIMIT {
                break;
            }
        }
        if pruned > 0 {
            tracing::debug!(
                rows = pruned,
                through,
                "change feed: pruned old change-log rows"
            );
        }
        Ok(())
    }
}
