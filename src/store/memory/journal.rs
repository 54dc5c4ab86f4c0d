//! The memory store's audit log and outbox, kept under the same lock as the
//! keys so that a change and its rows are one step.

use chrono::{DateTime, Utc};

use crate::audit::{
    AuditEntry, AuditQuery,
    journal::{EventRow, Journal},
};

/// The audit rows and outbox events, in the order written.
#[derive(Debug, Default)]
pub(super) struct MemoryJournal {
    pub(super) audit: Vec<AuditEntry>,
    pub(super) events: Vec<EventRow>,
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
        self.events.extend(journal.events);
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
