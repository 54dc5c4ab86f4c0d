//! PostgreSQL: `LISTEN tower_api_keys` on a connection of its own, checked by
//! a heartbeat.
//!
//! Every [`HEARTBEAT_EVERY`] the listener sends, on its own connection, a
//! notification to a channel only it listens on, and must receive it back
//! within [`HEARTBEAT_DEADLINE`]. That proves what matters: the server
//! answers, and notifications reach this connection. A connection that died
//! without a word (a firewall dropped it, the host vanished) fails the check,
//! and the listener reconnects with its own backoff instead of waiting on
//! TCP or on sqlx's pool.
//!
//! Each connection lives in a pool of its own, made for it and dropped with
//! it, so that a dead connection whose close hangs is never handed out again.
//! The session also asks the server for TCP keepalives, so that the server
//! ends a session whose client vanished.

use sea_orm::sqlx::{
    self,
    postgres::{PgConnectOptions, PgListener, PgPoolOptions},
};
use tokio::time::Instant;

use super::{
    Backoff, CHANNEL, CONNECT_DEADLINE, HEARTBEAT_DEADLINE, HEARTBEAT_EVERY, QUERY_DEADLINE,
    Worker, prune::Pruner,
};
use crate::store::replica::parse_lsn;

/// The listener's `application_name`, so that operators can find it in
/// `pg_stat_activity`; the query pool's own name, if it has one, follows it.
pub(super) const APPLICATION_NAME: &str = "tower-api-keys change feed";

/// Server-side TCP keepalive for the listening session: idle 10 s, then a
/// probe every 2 s, 3 probes; unacknowledged data for 10 s ends it too.
const KEEPALIVE: &str = "SELECT set_config('tcp_keepalives_idle', '10', false), \
     set_config('tcp_keepalives_interval', '2', false), \
     set_config('tcp_keepalives_count', '3', false), \
     set_config('tcp_user_timeout', '10000', false)";

/// Why a listening connection was given up.
enum Lost {
    Error(sqlx::Error),
    Closed,
    Heartbeat,
    Stopped,
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Error(err) => err.fmt(f),
            Self::Closed => f.write_str("the connection was closed"),
            Self::Heartbeat => write!(
                f,
                "no answer to the heartbeat within {HEARTBEAT_DEADLINE:?}"
            ),
            Self::Stopped => f.write_str("stopped"),
        }
    }
}

pub(super) async fn run(mut worker: Worker, options: PgConnectOptions) {
    let name = match options.get_application_name() {
        Some(host) => format!("{APPLICATION_NAME}: {host}"),
        None => APPLICATION_NAME.to_owned(),
    };
    let options = options.application_name(&name);
    // A channel only this listener hears, for its heartbeats.
    let own_channel = format!("tower_api_keys_hb_{}", uuid::Uuid::new_v4().simple());
    let mut backoff = Backoff::new();
    let mut down_since: Option<std::time::Instant> = None;
    let mut pruner = Pruner::default();
    while worker.running() {
        let lost = match connect(&options, &own_channel).await {
            Ok(mut listener) => {
                backoff.reset();
                if let Err(lost) = sample(&worker, &mut listener).await {
                    worker.disconnected();
                    lost
                } else {
                    worker.connected();
                    match down_since.take() {
                        Some(since) => tracing::info!(
                            down_for = ?since.elapsed(),
                            "change feed: listening again; cache emptied to catch up"
                        ),
                        None => tracing::debug!("change feed: listening on channel {CHANNEL}"),
                    }
                    let lost = follow(&mut worker, &mut listener, &own_channel, &mut pruner).await;
                    worker.disconnected();
                    lost
                }
            }
            Err(err) => {
                worker.disconnected();
                Lost::Error(err)
            }
        };
        if matches!(lost, Lost::Stopped) {
            return;
        }
        if down_since.is_none() {
            down_since = Some(std::time::Instant::now());
            tracing::warn!(error = %lost, "change feed: not listening; reconnecting (meanwhile cached keys are trusted for the feed-down TTL only)");
        }
        if !worker.sleep(backoff.next()).await {
            return;
        }
    }
}

/// Opens a listening connection: `LISTEN` on the feed's channel and the
/// listener's own, within the deadlines.
async fn connect(options: &PgConnectOptions, own_channel: &str) -> Result<PgListener, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CONNECT_DEADLINE)
        .test_before_acquire(false)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = tokio::time::timeout(CONNECT_DEADLINE, PgListener::connect_with(&pool))
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    listener.ignore_pool_close_event(true);
    // A lost connection is reported at once; this module reconnects.
    listener.eager_reconnect(false);
    let setup = async {
        sqlx::query(KEEPALIVE).execute(&mut listener).await?;
        listener.listen_all([CHANNEL, own_channel]).await
    };
    tokio::time::timeout(QUERY_DEADLINE, setup)
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)??;
    Ok(listener)
}

/// With a read replica: samples the primary's WAL position once listening,
/// so that the replica is trusted again only once it has replayed what the
/// feed may have missed.
async fn sample(worker: &Worker, listener: &mut PgListener) -> Result<(), Lost> {
    let Some(fence) = &worker.fence else {
        return Ok(());
    };
    let sample = fence.begin_sample();
    let lsn = tokio::time::timeout(
        QUERY_DEADLINE,
        sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
            .persistent(false)
            .fetch_one(&mut *listener),
    )
    .await
    .map_err(|_| Lost::Heartbeat)?
    .map_err(Lost::Error)?;
    if let Some(lsn) = parse_lsn(&lsn) {
        fence.sampled(sample, lsn);
    }
    Ok(())
}

/// Receives notifications until the connection is lost or fails its
/// heartbeat, or the feed stops.
async fn follow(
    worker: &mut Worker,
    listener: &mut PgListener,
    own_channel: &str,
    pruner: &mut Pruner,
) -> Lost {
    let mut beat: u64 = 0;
    // The heartbeat awaited, and by when.
    let mut awaiting: Option<(String, Instant)> = None;
    let mut next_beat = Instant::now() + HEARTBEAT_EVERY;
    loop {
        let now = Instant::now();
        if awaiting.is_none() && now >= next_beat {
            beat += 1;
            let payload = beat.to_string();
            let deadline = now + HEARTBEAT_DEADLINE;
            // The primary's WAL position comes with the heartbeat: every change
            // received before it was sent committed below it.
            let sample = worker.fence.as_ref().map(|fence| fence.begin_sample());
            let sent = tokio::time::timeout_at(
                deadline,
                sqlx::query_scalar::<_, String>(
                    "SELECT pg_current_wal_lsn()::text FROM (SELECT pg_notify($1, $2)) AS sent",
                )
                .persistent(false)
                .bind(own_channel)
                .bind(&payload)
                .fetch_one(&mut *listener),
            )
            .await;
            match sent {
                Ok(Ok(lsn)) => {
                    if let (Some(fence), Some(sample), Some(lsn)) =
                        (&worker.fence, sample, parse_lsn(&lsn))
                    {
                        fence.sampled(sample, lsn);
                    }
                    awaiting = Some((payload, deadline));
                }
                Ok(Err(err)) => return Lost::Error(err),
                Err(_) => return Lost::Heartbeat,
            }
        }
        let wake = awaiting
            .as_ref()
            .map_or(next_beat, |(_, deadline)| *deadline);
        let received = tokio::select! {
            received = tokio::time::timeout_at(wake, listener.try_recv()) => received,
            _ = worker.stopped.wait_for(|stop| *stop) => return Lost::Stopped,
        };
        match received {
            Ok(Ok(Some(notification))) if notification.channel() == own_channel => {
                if awaiting
                    .as_ref()
                    .is_some_and(|(payload, _)| payload == notification.payload())
                {
                    awaiting = None;
                    worker.state.ok();
                    // Pruning rides on the heartbeat's connection; a failure
                    // other than a timeout does not stop the feed.
                    let pruned = async {
                        use sqlx::Acquire;
                        let connection = listener.acquire().await?;
                        pruner.step(connection).await
                    };
                    match tokio::time::timeout(QUERY_DEADLINE * 4, pruned).await {
                        Ok(Ok(())) => {}
                        Ok(Err(err)) => {
                            tracing::debug!(error = %err, "change feed: pruning failed");
                        }
                        Err(_) => return Lost::Heartbeat,
                    }
                    next_beat = Instant::now() + HEARTBEAT_EVERY;
                }
            }
            Ok(Ok(Some(notification))) => worker.changed(notification.payload()),
            Ok(Ok(None)) => return Lost::Closed,
            Ok(Err(err)) => return Lost::Error(err),
            // Time for a heartbeat, or the one awaited is late.
            Err(_) if awaiting.is_some() => return Lost::Heartbeat,
            Err(_) => {}
        }
        if !worker.running() {
            return Lost::Stopped;
        }
    }
}
