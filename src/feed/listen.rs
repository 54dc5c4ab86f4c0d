//! PostgreSQL: `LISTEN tower_api_keys` on a dedicated connection.

use sea_orm::sqlx::{
    PgPool,
    postgres::{PgListener, PgPoolOptions},
};

use super::{Backoff, CHANNEL, Worker};

/// The listener's `application_name`, so that operators can find it in
/// `pg_stat_activity`; the query pool's own name, if it has one, follows it.
pub(super) const APPLICATION_NAME: &str = "tower-api-keys change feed";

pub(super) async fn run(mut worker: Worker, pool: PgPool) {
    // A pool of its own with one connection: the listener never takes a
    // connection from the query pool, and the query pool never hands out the
    // listening one.
    let options = (*pool.connect_options()).clone();
    let name = match options.get_application_name() {
        Some(host) => format!("{APPLICATION_NAME}: {host}"),
        None => APPLICATION_NAME.to_owned(),
    };
    let options = options.application_name(&name);
    let own = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options);
    let mut backoff = Backoff::new();
    let mut announced_down = false;
    while worker.running() {
        let mut listener = match connect(&own).await {
            Ok(listener) => listener,
            Err(err) => {
                worker.disconnected();
                if !announced_down {
                    tracing::warn!(error = %err, "change feed: cannot listen; retrying with backoff (cached keys are trusted for the positive TTL only)");
                    announced_down = true;
                }
                if !worker.sleep(backoff.next()).await {
                    break;
                }
                continue;
            }
        };
        backoff.reset();
        worker.connected();
        if announced_down {
            tracing::info!("change feed: listening again; cache emptied to catch up");
        } else {
            tracing::debug!("change feed: listening on channel {CHANNEL}");
        }
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = worker.stopped.wait_for(|stop| *stop) => return,
            };
            match received {
                Ok(Some(notification)) => worker.changed(notification.payload()),
                // The connection was lost and re-established (sqlx reconnects
                // before answering): whatever was sent meanwhile is lost.
                Ok(None) => {
                    tracing::warn!(
                        "change feed: listener connection lost and re-established; cache emptied to catch up"
                    );
                    worker.connected();
                }
                Err(err) => {
                    worker.disconnected();
                    tracing::warn!(error = %err, "change feed: listener disconnected; reconnecting with backoff");
                    announced_down = true;
                    break;
                }
            }
            if !worker.running() {
                return;
            }
        }
        if !worker.sleep(backoff.next()).await {
            break;
        }
    }
    own.close().await;
}

async fn connect(pool: &PgPool) -> Result<PgListener, sea_orm::sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
