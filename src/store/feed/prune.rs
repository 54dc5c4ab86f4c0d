//! PostgreSQL: pruning the change log by id, from the transaction snapshot.
//!
//! Every [`PRUNE_EVERY`] a mark notes the highest id in the log and the next
//! transaction id (`xmax`). Every row at or below the mark's id belongs to a
//! transaction below that `xmax`: once the oldest transaction still running
//! (`xmin`) has passed it, all of them have ended. A mark is used
//! [`RETENTION`](super::RETENTION) after it was taken and at least
//! [`PRUNE_EVERY`] after its transactions ended, so that every poller has read
//! the rows (a poller down that long starts over). The listener prunes on its
//! own connection, the poller on its own; neither goes by a clock of the
//! writer's.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use sea_orm::sqlx::{self, PgConnection};

use super::RETENTION;

/// How often a mark is taken and the log pruned.
pub(super) const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Most rows one statement deletes, and statements per prune.
pub(super) const PRUNE_LIMIT: i64 = 10_000;
pub(super) const PRUNE_ROUNDS: usize = 10;

struct Mark {
    taken: Instant,
    id: i64,
    xmax: i64,
    /// When `xmin` was first seen past `xmax`.
    ended: Option<Instant>,
}

/// The marks taken so far.
#[derive(Default)]
pub(super) struct Pruner {
    marks: VecDeque<Mark>,
    last: Option<Instant>,
}

impl Pruner {
    /// Takes a mark and prunes, if [`PRUNE_EVERY`] has passed since the last
    /// time. Each statement is one simple-protocol query (a transaction-mode
    /// pooler may be in between).
    pub(super) async fn step(&mut self, connection: &mut PgConnection) -> Result<(), sqlx::Error> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < PRUNE_EVERY)
        {
            return Ok(());
        }
        self.last = Some(now);
        let row = sqlx::raw_sql(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM tower_api_keys_changes), \
             pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint \
             FROM pg_current_snapshot() AS s",
        )
        .fetch_one(&mut *connection)
        .await?;
        let (id, xmin, xmax): (i64, i64, i64) = sqlx::FromRow::from_row(&row)?;
        for mark in &mut self.marks {
            if mark.ended.is_none() && xmin >= mark.xmax {
                mark.ended = Some(now);
            }
        }
        self.marks.push_back(Mark {
            taken: now,
            id,
            xmax,
            ended: None,
        });
        let mut through = None;
        while let Some(mark) = self.marks.front() {
            let due = now.duration_since(mark.taken) >= RETENTION
                && mark
                    .ended
                    .is_some_and(|ended| now.duration_since(ended) >= PRUNE_EVERY);
            if !due {
                break;
            }
            through = Some(mark.id);
            self.marks.pop_front();
        }
        let Some(through) = through else {
            return Ok(());
        };
        let mut pruned = 0;
        for _ in 0..PRUNE_ROUNDS {
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DELETE FROM tower_api_keys_changes WHERE id IN (\
                 SELECT id FROM tower_api_keys_changes WHERE id <= {through} ORDER BY id \
                 LIMIT {PRUNE_LIMIT})"
            )))
            .execute(&mut *connection)
            .await?
            .rows_affected();
            pruned += done;
            if done < PRUNE_LIMIT.unsigned_abs() {
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
