//! The memory store's audit log and outbox, kept under the same lock as the
//! keys so that a change and its rows are one step.

use chrono::{DateTime, TimeDelta, Utc};

use crate::audit::{
    AuditEntry, AuditQuery,
    journal::{EventRow, Journal, clock_event, event_with_id},
};
use crate::events::{OutboxEvent, Settle};
use crate::store::ApiKeyRecord;

/// One outbox row.
#[derive(Debug)]
pub(super) struct Queued {
    event: OutboxEvent,
    /// `pending`, `delivered` or `failed`.
    state: &'static str,
    next_attempt_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
}

/// The audit rows and outbox events, in the order written.
#[derive(Debug, Default)]
pub(super) struct MemoryJournal {
    pub(super) audit: Vec<AuditEntry>,
    pub(super) events: Vec<Queued>,
    /// When the retention last ran.
    pub(super) pruned_at: Option<DateTime<Utc>>,
}

impl MemoryJournal {
    /// Appends a change's rows, numbering the audit rows.
    pub(super) fn write(&mut self, journal: Journal) {
        for row in journal.audit {
            let id = self.audit.last().map_or(1, |last| last.id + 1);
            self.audit.push(AuditEntry {
                id,
                at: row.at,
                account_id: row.account_id,
                key_id: row.key_id,
                action: row.action.to_owned(),
                actor: row.actor,
                source: row.source,
                detail: row.detail,
            });
        }
        for row in journal.events {
            self.queue(row);
        }
    }

    fn queue(&mut self, row: EventRow) {
        let id = self.events.last().map_or(1, |last| last.event.id + 1);
        self.events.push(Queued {
            next_attempt_at: row.created_at,
            event: OutboxEvent {
                id,
                event_id: row.event_id,
                key_id: row.key_id,
                event_type: row.event_type.to_owned(),
                payload: row.payload,
                created_at: row.created_at,
                attempts: 0,
                last_error: None,
            },
            state: "pending",
            lease_until: None,
        });
    }

    /// See [`ApiKeyRepository::claim_events`](crate::store::ApiKeyRepository::claim_events).
    pub(super) fn claim(
        &mut self,
        now: DateTime<Utc>,
        lease: TimeDelta,
        limit: u32,
    ) -> Vec<OutboxEvent> {
        let mut waiting = std::collections::HashSet::new();
        let mut claimed = Vec::new();
        for queued in &mut self.events {
            if queued.state != "pending" || !waiting.insert(queued.event.key_id) {
                continue;
            }
            let free = queued.lease_until.is_none_or(|until| until < now);
            if free && queued.next_attempt_at <= now && claimed.len() < limit as usize {
                queued.lease_until = Some(now + lease);
                claimed.push(queued.event.clone());
            }
        }
        claimed
    }

    /// See [`ApiKeyRepository::settle_event`](crate::store::ApiKeyRepository::settle_event).
    pub(super) fn settle(&mut self, id: i64, outcome: Settle) {
        let Some(queued) = self.events.iter_mut().find(|q| q.event.id == id) else {
            return;
        };
        queued.lease_until = None;
        queued.event.attempts += 1;
        match outcome {
            Settle::Delivered => queued.state = "delivered",
            Settle::Retry { at, error } => {
                queued.next_attempt_at = at;
                queued.event.last_error = Some(error);
            }
            Settle::Failed { error } => {
                queued.state = "failed";
                queued.event.last_error = Some(error);
            }
        }
    }

    /// The failed events, oldest first.
    pub(super) fn failed(&self, limit: u32) -> Vec<OutboxEvent> {
        self.events
            .iter()
            .filter(|q| q.state == "failed")
            .take(limit as usize)
            .map(|q| q.event.clone())
            .collect()
    }

    /// Puts failed events back; returns how many.
    pub(super) fn retry(&mut self, event_id: Option<&str>, now: DateTime<Utc>) -> u64 {
        let mut count = 0;
        for queued in &mut self.events {
            if queued.state == "failed" && event_id.is_none_or(|id| id == queued.event.event_id) {
                queued.state = "pending";
                queued.event.attempts = 0;
                queued.event.created_at = now;
                queued.next_attempt_at = now;
                count += 1;
            }
        }
        count
    }

    /// `key.expiring` / `key.expired` for `keys`, once per key and expiry.
    pub(super) fn clock(
        &mut self,
        keys: &[ApiKeyRecord],
        now: DateTime<Utc>,
        notice: TimeDelta,
    ) -> u64 {
        let mut written = 0;
        for key in keys {
            let Some((event_id, event_type)) = clock_event(key, now, notice) else {
                continue;
            };
            if !self.events.iter().any(|q| q.event.event_id == event_id) {
                self.queue(event_with_id(event_id, now, event_type, key, None));
                written += 1;
            }
        }
        written
    }

    /// The rows `query` asks for, newest first.
    pub(super) fn read(&self, query: AuditQuery) -> Vec<AuditEntry> {
        self.audit
            .iter()
            .rev()
            .filter(|entry| query.matches(entry))
            .take(query.limit as usize)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeDelta, Utc};
    use uuid::Uuid;

    use super::*;
    use crate::audit::journal::event;
    use crate::key::KeyPair;
    use crate::store::ApiKeyRecord;
    use crate::testing::fixtures::row;

    fn key(key_id: Uuid) -> ApiKeyRecord {
        ApiKeyRecord {
            key_id,
            ..row(&KeyPair::generate().unwrap(), Uuid::nil())
        }
    }

    #[test]
    fn a_claim_takes_the_earliest_pending_event_of_each_key_once() {
        let (a, b) = (key(Uuid::new_v4()), key(Uuid::new_v4()));
        let now = Utc::now();
        let mut journal = MemoryJournal::default();
        for (record, kind) in [
            (&a, "key.created"),
            (&b, "key.created"),
            (&a, "key.revoked"),
        ] {
            journal.queue(event(now, kind, record, None));
        }
        let lease = TimeDelta::seconds(60);
        let first: Vec<i64> = journal.claim(now, lease, 10).iter().map(|e| e.id).collect();
        assert_eq!(first, [1, 2]);
        // Leased: nobody else gets them; the key's second event waits.
        assert!(journal.claim(now, lease, 10).is_empty());
        journal.settle(1, Settle::Delivered);
        journal.settle(
            2,
            Settle::Retry {
                at: now + TimeDelta::seconds(1),
                error: "answered 503".into(),
            },
        );
        let next: Vec<i64> = journal.claim(now, lease, 10).iter().map(|e| e.id).collect();
        assert_eq!(next, [3]);
        // A lease that has passed is claimed again (a replica that died).
        let later = now + TimeDelta::seconds(120);
        let again: Vec<i64> = journal
            .claim(later, lease, 10)
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(again, [2, 3]);
        journal.settle(
            2,
            Settle::Failed {
                error: "gone".into(),
            },
        );
        assert_eq!(journal.failed(10).len(), 1);
        assert_eq!(journal.retry(None, later), 1);
        assert!(journal.failed(10).is_empty());
    }
}
