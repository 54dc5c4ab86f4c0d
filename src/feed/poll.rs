//! MySQL/MariaDB and SQLite: polling the change-log table.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use super::{Backoff, GAP_WINDOW, RETENTION, Worker};

/// Most rows read by one query; a poll that gets this many asks again at once.
const PAGE: i64 = 5_000;
/// How many recent ids are examined for gaps when the feed starts.
const START_LOOK_BACK: i64 = 1_000;
/// Most gaps remembered; beyond that the cache is emptied instead.
const MAX_GAPS: usize = 10_000;
/// How often old change-log rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(super) enum Backend {
    #[cfg(feature = "mysql")]
    MySql(sea_orm::sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sea_orm::sqlx::SqlitePool),
}

type Row = (i64, String);

macro_rules! on_backend {
    ($backend:expr, |$pool:ident| $body:expr) => {
        match $backend {
            #[cfg(feature = "mysql")]
            Backend::MySql($pool) => $body,
            #[cfg(feature = "sqlite")]
            Backend::Sqlite($pool) => $body,
        }
    };
}

impl Backend {
    async fn max_id(&self) -> Result<i64, sea_orm::sqlx::Error> {
        const SQL: &str = "SELECT COALESCE(MAX(id), 0) FROM tower_api_keys_changes";
        on_backend!(self, |pool| {
            sea_orm::sqlx::query_scalar::<_, i64>(SQL)
                .fetch_one(pool)
                .await
        })
    }

    async fn ids_above(&self, above: i64) -> Result<Vec<i64>, sea_orm::sqlx::Error> {
        const SQL: &str = "SELECT id FROM tower_api_keys_changes WHERE id > ? ORDER BY id";
        on_backend!(self, |pool| {
            sea_orm::sqlx::query_scalar::<_, i64>(SQL)
                .bind(above)
                .fetch_all(pool)
                .await
        })
    }

    async fn rows_above(&self, above: i64) -> Result<Vec<Row>, sea_orm::sqlx::Error> {
        const SQL: &str = "SELECT id, public_key FROM tower_api_keys_changes \
                           WHERE id > ? ORDER BY id LIMIT ?";
        on_backend!(self, |pool| {
            sea_orm::sqlx::query_as::<_, Row>(SQL)
                .bind(above)
                .bind(PAGE)
                .fetch_all(pool)
                .await
        })
    }

    async fn rows_in(&self, ids: &[i64]) -> Result<Vec<Row>, sea_orm::sqlx::Error> {
        let mut rows = Vec::new();
        for chunk in ids.chunks(500) {
            let placeholders = vec!["?"; chunk.len()].join(", ");
            let sql = format!(
                "SELECT id, public_key FROM tower_api_keys_changes WHERE id IN ({placeholders})"
            );
            let found = on_backend!(self, |pool| {
                let mut query =
                    sea_orm::sqlx::query_as::<_, Row>(sea_orm::sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    query = query.bind(*id);
                }
                query.fetch_all(pool).await
            })?;
            rows.extend(found);
        }
        Ok(rows)
    }

    async fn prune(&self) -> Result<u64, sea_orm::sqlx::Error> {
        let retention = i64::try_from(RETENTION.as_secs()).unwrap_or(i64::MAX);
        let done = match self {
            #[cfg(feature = "mysql")]
            Backend::MySql(pool) => sea_orm::sqlx::query(
                "DELETE FROM tower_api_keys_changes \
                 WHERE changed_at < NOW(6) - INTERVAL ? SECOND LIMIT 10000",
            )
            .bind(retention)
            .execute(pool)
            .await?
            .rows_affected(),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite(pool) => sea_orm::sqlx::query(
                "DELETE FROM tower_api_keys_changes WHERE id IN (\
                 SELECT id FROM tower_api_keys_changes \
                 WHERE changed_at < CAST(strftime('%s', 'now') AS INTEGER) - ? LIMIT 10000)",
            )
            .bind(retention)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(done)
    }
}

/// What the poller has read: the highest id seen, and the ids below it that
/// were not visible yet (their transactions may still commit).
struct Cursor {
    last: i64,
    gaps: BTreeMap<i64, Instant>,
}

impl Cursor {
    /// Starts at the newest row, remembering the gaps among recent ids.
    async fn start(backend: &Backend) -> Result<Self, sea_orm::sqlx::Error> {
        let max = backend.max_id().await?;
        let recent = backend
            .ids_above(max.saturating_sub(START_LOOK_BACK))
            .await?;
        // Ids missing among the recent ones may belong to transactions still
        // open; below the first visible one they are pruned or long gone.
        let mut cursor = Self {
            last: recent.first().map_or(max, |first| first - 1),
            gaps: BTreeMap::new(),
        };
        let now = Instant::now();
        for id in recent {
            cursor.saw(id, now);
        }
        Ok(cursor)
    }

    /// Notes that `id` is visible: above the cursor it moves the cursor (and
    /// any id skipped becomes a gap); below, it fills a gap.
    fn saw(&mut self, id: i64, now: Instant) {
        if id > self.last {
            for missing in self.last.saturating_add(1)..id {
                self.gaps.insert(missing, now);
            }
            self.last = id;
        } else {
            self.gaps.remove(&id);
        }
    }

    /// Forgets gaps older than the window: rolled back, or a transaction
    /// longer than any the feed waits for.
    fn expire_gaps(&mut self, now: Instant) {
        self.gaps
            .retain(|_, noticed| now.duration_since(*noticed) < GAP_WINDOW);
    }
}

pub(super) async fn run(mut worker: Worker, backend: Backend, interval: Duration) {
    let mut backoff = Backoff::new();
    let mut cursor = loop {
        match Cursor::start(&backend).await {
            Ok(cursor) => break cursor,
            Err(err) => {
                worker.disconnected();
                tracing::warn!(error = %err, "change feed: cannot read tower_api_keys_changes; retrying");
                if !worker.sleep(backoff.next()).await {
                    return;
                }
            }
        }
    };
    backoff.reset();
    worker.connected();
    tracing::debug!(interval = ?interval, "change feed: polling tower_api_keys_changes");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    let mut down_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = worker.stopped.wait_for(|stop| *stop) => return,
        }
        if !worker.running() {
            return;
        }
        match poll(&worker, &backend, &mut cursor).await {
            Ok(()) => {
                if let Some(since) = down_since.take() {
                    // The log kept what happened meanwhile, unless the outage
                    // outlasted the gap window (rows may be pruned by then).
                    if since.elapsed() >= GAP_WINDOW {
                        worker.connected();
                    } else {
                        worker.state.connected();
                    }
                    tracing::info!("change feed: polling works again; caught up");
                } else {
                    worker.state.ok();
                }
            }
            Err(err) => {
                worker.disconnected();
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::warn!(error = %err, "change feed: poll failed; cached keys are trusted for the positive TTL only until it works again");
                }
                continue;
            }
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            last_prune = Instant::now();
            match backend.prune().await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "change feed: pruned old change-log rows"),
                Err(err) => tracing::debug!(error = %err, "change feed: pruning failed"),
            }
        }
    }
}

/// One poll: new rows (page by page), then the gaps.
async fn poll(
    worker: &Worker,
    backend: &Backend,
    cursor: &mut Cursor,
) -> Result<(), sea_orm::sqlx::Error> {
    loop {
        let rows = backend.rows_above(cursor.last).await?;
        let now = Instant::now();
        let full = rows.len() as i64 >= PAGE;
        if rows.is_empty() && backend.max_id().await? < cursor.last {
            // The table was emptied and its ids restarted: start over.
            tracing::info!("change feed: the change log was reset; cache emptied");
            *cursor = Cursor::start(backend).await?;
            worker.connected();
            return Ok(());
        }
        for (id, public_key) in rows {
            cursor.saw(id, now);
            worker.changed(&public_key);
        }
        if !full {
            break;
        }
    }
    let now = Instant::now();
    cursor.expire_gaps(now);
    if cursor.gaps.len() > MAX_GAPS {
        tracing::warn!(
            gaps = cursor.gaps.len(),
            "change feed: too many missing change-log ids; cache emptied"
        );
        cursor.gaps.clear();
        worker.connected();
        return Ok(());
    }
    if !cursor.gaps.is_empty() {
        let ids: Vec<i64> = cursor.gaps.keys().copied().collect();
        for (id, public_key) in backend.rows_in(&ids).await? {
            cursor.saw(id, now);
            worker.changed(&public_key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_ids_become_gaps_until_they_appear_or_expire() {
        let mut cursor = Cursor {
            last: 10,
            gaps: BTreeMap::new(),
        };
        let start = Instant::now();
        cursor.saw(11, start);
        cursor.saw(14, start);
        assert_eq!(cursor.last, 14);
        assert_eq!(cursor.gaps.keys().copied().collect::<Vec<_>>(), [12, 13]);
        cursor.saw(12, start);
        assert_eq!(cursor.gaps.keys().copied().collect::<Vec<_>>(), [13]);
        cursor.expire_gaps(start + GAP_WINDOW);
        assert!(cursor.gaps.is_empty());
        assert_eq!(cursor.last, 14);
    }
}
