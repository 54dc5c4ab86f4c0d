//! The audit log as the manager reads it, and its retention.

use std::time::Duration;

use chrono::{TimeDelta, Utc};

use super::{KeyManager, ManagerError};
use crate::{
    audit::{AuditEntry, AuditQuery},
    events::OutboxEvent,
    identity::{AccountId, ApiKeyId},
    store::Pruned,
};

/// One page of the audit log, newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditPage {
    /// The rows, `id` descending.
    pub entries: Vec<AuditEntry>,
    /// The `before` of the next page; `None` on the last page.
    pub next_before: Option<i64>,
}

/// How often one replica runs the retention.
pub const RETENTION_EVERY: Duration = Duration::from_secs(24 * 60 * 60);

impl KeyManager {
    /// The account's audit rows (only `key_id`'s, if given) with an `id`
    /// below `before`, newest first, at most `limit`.
    pub async fn audit(
        &self,
        account: AccountId,
        key_id: Option<ApiKeyId>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<AuditPage, ManagerError> {
        self.audit_page(AuditQuery {
            account_id: Some(account.into_inner()),
            key_id: key_id.map(ApiKeyId::into_inner),
            before,
            limit,
        })
        .await
    }

    /// Audit rows across accounts, as `query` asks (an operator's tool).
    pub async fn audit_page(&self, query: AuditQuery) -> Result<AuditPage, ManagerError> {
        let entries = self.store.audit(query).await?;
        let full = u32::try_from(entries.len()).is_ok_and(|len| len >= query.limit);
        let next_before = entries.last().filter(|_| full).map(|entry| entry.id);
        Ok(AuditPage {
            entries,
            next_before,
        })
    }

    /// Up to `limit` events kept as failed after 24 h of retries, oldest
    /// first (CLI `events failed`).
    pub async fn failed_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, ManagerError> {
        Ok(self.store.failed_events(limit).await?)
    }

    /// Puts failed events back in the outbox (the one with `event_id`, or
    /// all), due now with a new 24 h of retries; returns how many (CLI
    /// `events retry`).
    pub async fn retry_failed_events(&self, event_id: Option<&str>) -> Result<u64, ManagerError> {
        Ok(self.store.retry_failed(event_id).await?)
    }

    /// Deletes audit rows older than `audit_retention_days` and usage rows
    /// older than `usage_retention_days`, unless a replica did so within a
    /// day ([`RETENTION_EVERY`]; `None` then): one replica at a time, at most
    /// daily.
    pub async fn prune(
        &self,
        audit_retention_days: u32,
        usage_retention_days: u32,
    ) -> Result<Option<Pruned>, ManagerError> {
        let now = Utc::now();
        let audit_before = now - TimeDelta::days(i64::from(audit_retention_days));
        let usage_before = (now - TimeDelta::days(i64::from(usage_retention_days))).date_naive();
        Ok(self
            .store
            .prune(audit_before, usage_before, RETENTION_EVERY)
            .await?)
    }
}
