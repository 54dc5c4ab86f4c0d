//! The delivery loop: claims due events with a lease, hands them to the
//! sink, and records each outcome; writes the clock's events.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use super::{EventSink, OutboxEvent, Settle};
use crate::{
    store::{Store, StoreError},
    validator::ApiKeyValidator,
};

/// The metric counting events kept as failed after 24 h of retries.
pub const WEBHOOK_FAILURES: &str = "tower_api_keys_webhook_failures_total";

/// How long an event is retried before it is kept as failed.
const RETRY_FOR: TimeDelta = TimeDelta::hours(24);
/// The first retry's delay; each next one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Delivers the outbox's events to an [`EventSink`], on every replica at
/// once if need be: each event is leased to one replica at a time.
///
/// ```no_run
/// # async fn doc(validator: tower_api_keys::ApiKeyValidator) {
/// use tower_api_keys::events::{DeliveryError, EventDispatcher, EventSink, OutboxEvent};
///
/// struct Print;
/// impl EventSink for Print {
///     async fn deliver(&self, event: &OutboxEvent) -> Result<(), DeliveryError> {
///         println!("{}", event.payload);
///         Ok(())
///     }
/// }
///
/// let running = EventDispatcher::new(&validator, Print).start();
/// // … at shutdown (undelivered events stay in the outbox):
/// running.shutdown().await;
/// # }
/// ```
#[derive(Debug)]
#[must_use]
pub struct EventDispatcher<S> {
    store: Store,
    sink: Arc<S>,
    lease: Duration,
    poll: Duration,
    notice: Duration,
    clock_every: Duration,
    batch: u32,
}

impl<S: EventSink> EventDispatcher<S> {
    /// Delivers the events of `validator`'s store to `sink`: a lease of 60 s,
    /// a poll every second, `key.expiring` 7 days before expiry.
    pub fn new(validator: &ApiKeyValidator, sink: S) -> Self {
        Self {
            store: validator.store().clone(),
            sink: Arc::new(sink),
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            notice: Duration::from_secs(7 * 24 * 60 * 60),
            clock_every: Duration::from_secs(30),
            batch: 100,
        }
    }

    /// How long before a key's `expires_at` its `key.expiring` is sent
    /// (`expiry_notice_days`; default 7 days).
    pub fn with_expiry_notice(mut self, notice: Duration) -> Self {
        self.notice = notice;
        self
    }

    /// How long a claimed event is this replica's (default 60 s): if the
    /// replica stops mid-delivery, another sends the event after it. Keep it
    /// well above the sink's own timeout.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the outbox is read when it had nothing due (default 1 s).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// One round: claims the due events and delivers each; returns how many
    /// were attempted.
    pub async fn deliver_due(&self) -> Result<usize, StoreError> {
        let now = Utc::now();
        let events = self.store.claim_events(now, self.lease, self.batch).await?;
        // At most one event per key is claimed: the keys' deliveries run side
        // by side, so that one slow receiver answer holds up no other key.
        let attempts = events.iter().map(|event| async move {
            let attempt = tokio::time::timeout(self.lease / 2, self.sink.deliver(event)).await;
            let outcome = match attempt {
                Ok(Ok(())) => Settle::Delivered,
                Ok(Err(err)) => next_step(event, err.0, Utc::now()),
                Err(_) => next_step(event, "the sink did not answer".to_owned(), Utc::now()),
            };
            if let Settle::Failed { error } = &outcome {
                metrics::counter!(WEBHOOK_FAILURES).increment(1);
                tracing::warn!(event_id = %event.event_id, event_type = %event.event_type, key_id = %event.key_id, %error, "event kept as failed after 24 h of retries");
            }
            self.store.settle_event(event.id, outcome).await
        });
        for settled in futures_util::future::join_all(attempts).await {
            settled?;
        }
        Ok(events.len())
    }

    /// Writes the clock's events that are due (`key.expiring`, `key.expired`).
    pub async fn emit_clock_events(&self) -> Result<u64, StoreError> {
        self.store.emit_clock_events(Utc::now(), self.notice).await
    }

    /// Runs the loop on a Tokio task until [`EventDispatcherHandle::shutdown`].
    pub fn start(self) -> EventDispatcherHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut clock_due = tokio::time::Instant::now();
            loop {
                if *stopped.borrow() {
                    break;
                }
                if tokio::time::Instant::now() >= clock_due {
                    if let Err(err) = self.emit_clock_events().await {
                        tracing::warn!(error = %err, "writing the clock's events failed");
                    }
                    clock_due = tokio::time::Instant::now() + self.clock_every;
                }
                let busy = match self.deliver_due().await {
                    Ok(count) => count > 0,
                    Err(err) => {
                        tracing::warn!(error = %err, "delivering events failed");
                        false
                    }
                };
                if !busy {
                    tokio::select! {
                        _ = tokio::time::sleep(self.poll) => {}
                        _ = stopped.changed() => {}
                    }
                }
            }
        });
        EventDispatcherHandle { stop, task }
    }
}

/// The retry after a failed attempt: 1 s doubling per attempt, at most
/// 10 min, while within 24 h of the event; else kept as failed.
fn next_step(event: &OutboxEvent, error: String, now: DateTime<Utc>) -> Settle {
    let doubling =
        FIRST_BACKOFF.saturating_mul(1_u32.checked_shl(event.attempts).unwrap_or(u32::MAX));
    let delay = doubling.min(MAX_BACKOFF);
    let at = now + TimeDelta::from_std(delay).unwrap_or(RETRY_FOR);
    if at > event.created_at + RETRY_FOR {
        Settle::Failed { error }
    } else {
        Settle::Retry { at, error }
    }
}

/// A running [`EventDispatcher`].
#[derive(Debug)]
pub struct EventDispatcherHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl EventDispatcherHandle {
    /// Stops the loop after the attempt in progress; events not delivered
    /// stay in the outbox for the next start or another replica.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(attempts: u32, age: TimeDelta) -> OutboxEvent {
        OutboxEvent {
            id: 1,
            event_id: "msg_1".into(),
            key_id: uuid::Uuid::nil(),
            event_type: "key.created".into(),
            payload: "{}".into(),
            created_at: Utc::now() - age,
            attempts,
            last_error: None,
        }
    }

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes_then_fails_after_a_day() {
        let now = Utc::now();
        for (attempts, seconds) in [(0, 1), (1, 2), (2, 4), (9, 512), (10, 600), (40, 600)] {
            let Settle::Retry { at, .. } =
                next_step(&event(attempts, TimeDelta::zero()), "x".into(), now)
            else {
                panic!("attempt {attempts} gave up");
            };
            assert_eq!(
                (at - now).num_seconds(),
                seconds,
                "after attempt {attempts}"
            );
        }
        let old = event(200, TimeDelta::hours(24) - TimeDelta::seconds(30));
        assert!(matches!(
            next_step(&old, "x".into(), now),
            Settle::Failed { .. }
        ));
    }
}
