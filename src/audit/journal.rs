//! The rows a change writes beside itself: its audit rows and its outbox
//! events, derived in one place from the [`ChangeRecord`] and the rows the
//! store changed, for every store alike.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ChangeReason, ChangeRecord};
use crate::store::{ApiKeyRecord, KeyChanges, KeyStatus};

/// A change as the store committed it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    /// A key inserted: created, or imported ([`ChangeReason::Import`]).
    Inserted(&'a ApiKeyRecord),
    /// A key's fields written (the key as it is after).
    Updated(&'a ApiKeyRecord, &'a KeyChanges),
    /// A rotation: the old key as limited, its successor as inserted.
    Rotated {
        old: &'a ApiKeyRecord,
        successor: &'a ApiKeyRecord,
        grace_period: Duration,
    },
    /// A key revoked (it was not revoked before).
    Revoked(&'a ApiKeyRecord),
    /// A key deleted (as it was).
    Deleted(&'a ApiKeyRecord),
}

/// An audit row to write (the store assigns its `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AuditRow {
    pub at: DateTime<Utc>,
    pub account_id: Uuid,
    pub key_id: Uuid,
    pub action: &'static str,
    pub actor: Option<String>,
    pub source: Option<String>,
    pub detail: Option<Value>,
}

/// An event to write to the outbox (the store assigns its `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventRow {
    /// The Standard Webhooks `webhook-id`: stable across retries.
    pub event_id: String,
    pub key_id: Uuid,
    pub event_type: &'static str,
    /// `{"type","timestamp","data"}` as JSON text.
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// What one change writes beside itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Journal {
    pub audit: Vec<AuditRow>,
    pub events: Vec<EventRow>,
}

impl ChangeRecord {
    /// The audit rows and events that `change` writes, stamped `at`.
    pub(crate) fn journal(&self, change: Change<'_>, at: DateTime<Utc>) -> Journal {
        let mut journal = Journal::default();
        match change {
            Change::Inserted(key) if self.reason == ChangeReason::Import => {
                journal.audit.push(self.row(at, key, "imported", None));
            }
            Change::Inserted(key) => {
                journal.audit.push(self.row(at, key, "created", None));
                journal.events.push(event(at, "key.created", key, None));
            }
            Change::Updated(key, changes) => {
                let fields = changed_fields(changes);
                journal
                    .audit
                    .push(self.row(at, key, "updated", Some(json!({ "fields": fields }))));
                journal.events.push(event(at, "key.updated", key, None));
            }
            Change::Rotated {
                old,
                successor,
                grace_period,
            } => {
                let detail = json!({
                    "successor_key_id": successor.key_id,
                    "grace_period_seconds": grace_period.as_secs(),
                });
                journal
                    .audit
                    .push(self.row(at, old, "rotated", Some(detail)));
                journal.audit.push(self.row(at, successor, "created", None));
                let extra = json!({ "successor_key_id": successor.key_id });
                journal
                    .events
                    .push(event(at, "key.rotated", old, Some(extra)));
                journal
                    .events
                    .push(event(at, "key.created", successor, None));
            }
            Change::Revoked(key) => {
                let (action, reason, detail) = match &self.reason {
                    ChangeReason::Holder => ("revoked_by_holder", "holder", None),
                    ChangeReason::Leaked { url } => {
                        ("revoked_leaked", "leaked", Some(json!({ "url": url })))
                    }
                    ChangeReason::Owner | ChangeReason::Import => ("revoked", "owner", None),
                };
                journal.audit.push(self.row(at, key, action, detail));
                let extra = json!({ "reason": reason });
                journal
                    .events
                    .push(event(at, "key.revoked", key, Some(extra)));
            }
            Change::Deleted(key) => {
                journal.audit.push(self.row(at, key, "deleted", None));
                journal.events.push(event(at, "key.deleted", key, None));
            }
        }
        journal
    }

    fn row(
        &self,
        at: DateTime<Utc>,
        key: &ApiKeyRecord,
        action: &'static str,
        detail: Option<Value>,
    ) -> AuditRow {
        AuditRow {
            at,
            account_id: key.account_id,
            key_id: key.key_id,
            action,
            actor: self.actor.as_ref().map(|actor| actor.as_str().to_owned()),
            source: self.source.map(|source| source.to_string()),
            detail,
        }
    }
}

/// The names of the fields a `PATCH` wrote, in the API's spelling.
fn changed_fields(changes: &KeyChanges) -> Vec<&'static str> {
    [
        ("title", changes.title.is_some()),
        ("description", changes.description.is_some()),
        ("scopes", changes.scopes.is_some()),
        ("metadata", changes.metadata.is_some()),
        ("rate_limit", changes.rate_limit.is_some()),
        ("allowed_cidrs", changes.allowed_cidrs.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// A lifecycle event of `key`: `{"type","timestamp","data"}`, with `extra`
/// (`reason`, `successor_key_id`) merged into `data`. Never a secret or hash.
pub(crate) fn event(
    at: DateTime<Utc>,
    event_type: &'static str,
    key: &ApiKeyRecord,
    extra: Option<Value>,
) -> EventRow {
    event_with_id(
        format!("msg_{}", Uuid::new_v4().simple()),
        at,
        event_type,
        key,
        extra,
    )
}

/// How far back `key.expired` is still sent (a replica down for longer
/// sends nothing for keys that expired before).
pub(crate) const EXPIRED_LOOKBACK: TimeDelta = TimeDelta::days(7);

/// The clock's event due for `key` at `now`, as `(webhook-id, type)`:
/// `key.expired` once `expires_at` has passed (within [`EXPIRED_LOOKBACK`]),
/// `key.expiring` within `notice` before it; none for a revoked key or one
/// that never expires. The id is made from the key and its expiry, so that
/// each event is written once whatever replica or sweep finds it first.
pub(crate) fn clock_event(
    key: &ApiKeyRecord,
    now: DateTime<Utc>,
    notice: TimeDelta,
) -> Option<(String, &'static str)> {
    let expires_at = key.expires_at?;
    let in_window = expires_at > now - EXPIRED_LOOKBACK
        && now
            .checked_add_signed(notice)
            .is_none_or(|horizon| expires_at <= horizon);
    if key.status == KeyStatus::Revoked || !in_window {
        return None;
    }
    let (kind, event_type) = if expires_at <= now {
        ("expired", "key.expired")
    } else {
        ("expiring", "key.expiring")
    };
    let event_id = format!(
        "msg_{kind}_{}_{}",
        key.key_id.simple(),
        expires_at.timestamp_micros()
    );
    Some((event_id, event_type))
}

/// [`event`] with a given `webhook-id` (the clock's events use one made from
/// the key and its expiry, so that each is written once).
pub(crate) fn event_with_id(
    event_id: String,
    at: DateTime<Utc>,
    event_type: &'static str,
    key: &ApiKeyRecord,
    extra: Option<Value>,
) -> EventRow {
    let mut data = json!({
        "key_id": key.key_id,
        "account_id": key.account_id,
        "public_key": key.public_key,
        "title": key.title,
        "expires_at": key.expires_at,
    });
    if let (Value::Object(data), Some(Value::Object(extra))) = (&mut data, extra) {
        data.extend(extra);
    }
    let payload = json!({ "type": event_type, "timestamp": at, "data": data });
    EventRow {
        event_id,
        key_id: key.key_id,
        event_type,
        payload: payload.to_string(),
        created_at: at,
    }
}
