//! Lifecycle events (CONTRACT §16.2): what the outbox holds, the
//! [`EventSink`] a host receives them through, the [`EventDispatcher`] that
//! delivers them after commit, and the Standard Webhooks sender
//! ([`webhook::WebhookSender`], feature `webhooks`).
//!
//! Every audited change but an import writes its event to the table
//! `tower_api_keys_outbox` in the change's own transaction, and the clock
//! adds `key.expiring` and `key.expired` once per key. The dispatcher claims
//! due events with a lease (one replica delivers each), in order per key (an
//! event waits while an earlier one of its key is pending), retries a failed
//! delivery with exponential backoff (1 s doubling, capped at 10 min) for
//! 24 h and then keeps it as failed (metric
//! `tower_api_keys_webhook_failures_total`; CLI `events failed`, `events
//! retry`). Delivery is at least once: a replica stopped mid-delivery leaves
//! the event in the outbox, and another sends it once the lease has passed.

mod dispatcher;
#[cfg(feature = "webhooks")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks")))]
pub mod webhook;

use std::future::Future;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use self::dispatcher::{EventDispatcher, EventDispatcherHandle, WEBHOOK_FAILURES};

/// One event of the outbox, as a sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// The row's increasing id.
    pub id: i64,
    /// The Standard Webhooks `webhook-id`, the same on every attempt.
    pub event_id: String,
    /// The key the event is about.
    pub key_id: Uuid,
    /// `key.created`, `key.updated`, `key.rotated`, `key.revoked`,
    /// `key.deleted`, `key.expiring` or `key.expired`.
    pub event_type: String,
    /// The JSON body: `{"type", "timestamp", "data": {…}}`; never a secret.
    pub payload: String,
    /// When the event was written (or last put back by `events retry`).
    pub created_at: DateTime<Utc>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
}

/// What became of one delivery attempt, for
/// [`ApiKeyRepository::settle_event`](crate::store::ApiKeyRepository::settle_event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Delivered: the event is done.
    Delivered,
    /// Failed; try again at `at`.
    Retry {
        /// When the next attempt is due.
        at: DateTime<Utc>,
        /// Why it failed (no secret).
        error: String,
    },
    /// Failed for the last time (24 h of retries): kept as failed.
    Failed {
        /// Why it failed (no secret).
        error: String,
    },
}

/// A delivery attempt failed; the event is tried again later. The text
/// never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Where a host receives lifecycle events: the [`EventDispatcher`] calls
/// [`deliver`](Self::deliver) for each event, in order per key, and retries
/// it while it returns an error. Delivery is at least once: a sink may see
/// an event again (after a replica stopped mid-delivery), and can tell by
/// its [`event_id`](OutboxEvent::event_id).
///
/// ```
/// use tower_api_keys::events::{DeliveryError, EventSink, OutboxEvent};
///
/// struct Log;
///
/// impl EventSink for Log {
///     async fn deliver(&self, event: &OutboxEvent) -> Result<(), DeliveryError> {
///         println!("{} {}", event.event_type, event.key_id);
///         Ok(())
///     }
/// }
/// ```
pub trait EventSink: Send + Sync + 'static {
    /// Delivers one event; an error has it tried again later.
    fn deliver(
        &self,
        event: &OutboxEvent,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}
