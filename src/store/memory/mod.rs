use std::{
    collections::{HashMap, HashSet},
    ops::{Deref, DerefMut},
    sync::{Arc, Mutex, MutexGuard},
};

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::audit::{AuditEntry, AuditQuery, ChangeRecord, journal::Change};
use crate::events::{OutboxEvent, Settle};

mod journal;

use self::journal::MemoryJournal;
use super::{
    ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, KeyStatus, OldKeyLimit, PepperCount,
    Pruned, RotateOutcome, Rotation, StoreError, UsageCount,
};

/// An in-memory [`ApiKeyRepository`], for unit tests and examples.
///
/// Keys live in insertion order in a `Vec` behind a mutex, indexed by public
/// key and key id and counted per account (so a lookup or an insert costs the
/// same with a million keys as with one); daily usage counts live in a map. Nothing is persisted.
/// Clones share the same keys and counts. Deleting a key leaves its usage
/// counts, as in the SQL store.
#[derive(Debug, Default, Clone)]
pub struct MemoryRepository {
    rows: Arc<Mutex<Rows>>,
    usage: Arc<Mutex<HashMap<(Uuid, NaiveDate), u64>>>,
}

/// The rows in insertion order, with the indexes the unique columns need.
/// Reads and in-place changes go through the `Vec`; rows are added and
/// removed only through [`Rows::push`] and [`Rows::remove`], which keep the
/// indexes (a row's public key and key id never change in place).
#[derive(Debug, Default)]
struct Rows {
    list: Vec<ApiKeyRecord>,
    /// Position in `list` by public key.
    by_public_key: HashMap<String, usize>,
    key_ids: HashSet<Uuid>,
    /// Rows per account.
    per_account: HashMap<Uuid, u64>,
    /// The audit log and the outbox, written with the rows.
    journal: MemoryJournal,
}

impl Rows {
    /// Where the account's key `key_id` is in `list`, if the account has it.
    fn index_of(&self, account_id: Uuid, key_id: Uuid) -> Option<usize> {
        self.list
            .iter()
            .position(|row| row.key_id == key_id && row.account_id == account_id)
    }

    /// Whether `record` would clash with a stored row's unique columns.
    fn clashes(&self, record: &ApiKeyRecord) -> bool {
        self.key_ids.contains(&record.key_id) || self.by_public_key.contains_key(&record.public_key)
    }

    fn push(&mut self, record: ApiKeyRecord) {
        self.by_public_key
            .insert(record.public_key.clone(), self.list.len());
        self.key_ids.insert(record.key_id);
        *self.per_account.entry(record.account_id).or_default() += 1;
        self.list.push(record);
    }

    fn remove(&mut self, index: usize) -> ApiKeyRecord {
        let record = self.list.remove(index);
        self.key_ids.remove(&record.key_id);
        self.by_public_key.remove(&record.public_key);
        if let Some(count) = self.per_account.get_mut(&record.account_id) {
            *count -= 1;
            if *count == 0 {
                self.per_account.remove(&record.account_id);
            }
        }
        // The rows after it moved down by one.
        for position in self.by_public_key.values_mut() {
            if *position > index {
                *position -= 1;
            }
        }
        record
    }
}

impl Deref for Rows {
    type Target = Vec<ApiKeyRecord>;

    fn deref(&self) -> &Self::Target {
        &self.list
    }
}

impl DerefMut for Rows {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.list
    }
}

impl MemoryRepository {
    /// An empty repository.
    pub fn new() -> Self {
        Self::default()
    }

    fn rows(&self) -> MutexGuard<'_, Rows> {
        // A panic while holding the lock cannot leave a row half-written.
        crate::sync::lock(&self.rows)
    }

    /// Inserts every record, all or none.
    fn insert_all(rows: &mut Rows, records: Vec<ApiKeyRecord>) -> Result<(), StoreError> {
        let mut key_ids = HashSet::with_capacity(records.len());
        let mut public_keys = HashSet::with_capacity(records.len());
        for record in &records {
            if rows.clashes(record)
                || !key_ids.insert(record.key_id)
                || !public_keys.insert(record.public_key.as_str())
            {
                return Err(StoreError::Conflict);
            }
        }
        for record in records {
            rows.push(record);
        }
        Ok(())
    }

    fn find(&self, account_id: Uuid, key_id: Uuid) -> Option<ApiKeyRecord> {
        let rows = self.rows();
        rows.index_of(account_id, key_id)
            .map(|index| rows.list[index].clone())
    }
}

impl ApiKeyRepository for MemoryRepository {
    async fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let rows = self.rows();
        Ok(rows
            .by_public_key
            .get(public_key)
            .map(|&index| rows.list[index].clone()))
    }

    async fn insert(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        let mut rows = self.rows();
        if rows.clashes(&record) {
            return Err(StoreError::Conflict);
        }
        rows.push(record);
        Ok(())
    }

    async fn insert_many(&self, records: Vec<ApiKeyRecord>) -> Result<(), StoreError> {
        Self::insert_all(&mut self.rows(), records)
    }

    async fn insert_within_limit(
        &self,
        records: Vec<ApiKeyRecord>,
        max_keys_per_account: u64,
        change: &ChangeRecord,
    ) -> Result<(), StoreError> {
        // Under the lock: the count, the inserts and their audit rows are one step.
        let mut rows = self.rows();
        for (account_id, adding) in super::keys_per_account(&records) {
            let stored = rows.per_account.get(&account_id).copied().unwrap_or(0);
            if stored.saturating_add(adding) > max_keys_per_account {
                return Err(StoreError::TooManyKeys {
                    account_id,
                    limit: max_keys_per_account,
                });
            }
        }
        let at = Utc::now();
        let journals: Vec<_> = records
            .iter()
            .map(|record| change.journal(Change::Inserted(record), at))
            .collect();
        Self::insert_all(&mut rows, records)?;
        for journal in journals {
            rows.journal.write(journal);
        }
        Ok(())
    }

    async fn list_by_account(&self, account_id: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys: Vec<_> = self
            .rows()
            .iter()
            .rev()
            .filter(|row| row.account_id == account_id)
            .cloned()
            .collect();
        // Stable: ties keep newest-inserted first; no `created_at` sorts last.
        keys.sort_by_key(|row| std::cmp::Reverse(row.created_at));
        Ok(keys)
    }

    async fn get(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.find(account_id, key_id))
    }

    async fn revoke(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut rows = self.rows();
        let Some(index) = rows.index_of(account_id, key_id) else {
            return Ok(None);
        };
        let row = &mut rows.list[index];
        let newly_revoked = row.status != KeyStatus::Revoked;
        row.status = KeyStatus::Revoked;
        let record = row.clone();
        if newly_revoked {
            let journal = change.journal(Change::Revoked(&record), Utc::now());
            rows.journal.write(journal);
        }
        Ok(Some(record))
    }

    async fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut rows = self.rows();
        let Some(index) = rows.index_of(account_id, key_id) else {
            return Ok(None);
        };
        let row = &mut rows.list[index];
        changes.apply_to(row);
        let record = row.clone();
        let journal = change.journal(Change::Updated(&record, changes), Utc::now());
        rows.journal.write(journal);
        Ok(Some(record))
    }

    async fn rotate(
        &self,
        rotation: Rotation,
        change: &ChangeRecord,
    ) -> Result<RotateOutcome, StoreError> {
        // Under the lock: the old key is read as it is when the rotation
        // happens, and nothing changes it meanwhile.
        let mut rows = self.rows();
        let Some(old) = rows.iter().position(|row| {
            row.key_id == rotation.old_key_id && row.account_id == rotation.account_id
        }) else {
            return Ok(RotateOutcome::NotFound);
        };
        let (limit, successor) = match rotation.plan(&rows[old]) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        if rows.clashes(&successor)
            || rows
                .iter()
                .any(|row| row.rotated_from == successor.rotated_from)
        {
            return Ok(RotateOutcome::AlreadyRotated);
        }
        match limit {
            OldKeyLimit::Revoke => rows[old].status = KeyStatus::Revoked,
            OldKeyLimit::ExpireAt(at) => rows[old].expires_at = Some(at),
        }
        let limited = rows[old].clone();
        rows.push(successor.clone());
        let rotated = Change::Rotated {
            old: &limited,
            successor: &successor,
            grace_period: rotation.grace_period,
        };
        let journal = change.journal(rotated, Utc::now());
        rows.journal.write(journal);
        Ok(RotateOutcome::Rotated {
            old: Box::new(limited),
            successor: Box::new(successor),
        })
    }

    async fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut rows = self.rows();
        let index = rows.index_of(account_id, key_id);
        let Some(deleted) = index.map(|index| rows.remove(index)) else {
            return Ok(None);
        };
        let journal = change.journal(Change::Deleted(&deleted), Utc::now());
        rows.journal.write(journal);
        Ok(Some(deleted))
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.rows().journal.read(query))
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let lease = chrono::TimeDelta::from_std(lease).unwrap_or(chrono::TimeDelta::MAX);
        Ok(self.rows().journal.claim(now, lease, limit))
    }

    async fn settle_event(&self, id: i64, outcome: Settle) -> Result<(), StoreError> {
        self.rows().journal.settle(id, outcome);
        Ok(())
    }

    async fn failed_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        Ok(self.rows().journal.failed(limit))
    }

    async fn retry_failed(&self, event_id: Option<&str>) -> Result<u64, StoreError> {
        Ok(self.rows().journal.retry(event_id, Utc::now()))
    }

    async fn emit_clock_events(
        &self,
        now: DateTime<Utc>,
        notice: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let notice = chrono::TimeDelta::from_std(notice).unwrap_or(chrono::TimeDelta::MAX);
        let mut rows = self.rows();
        let Rows { list, journal, .. } = &mut *rows;
        Ok(journal.clock(list, now, notice))
    }

    async fn prune(
        &self,
        audit_before: DateTime<Utc>,
        usage_before: NaiveDate,
        every: std::time::Duration,
    ) -> Result<Option<Pruned>, StoreError> {
        let now = Utc::now();
        let mut rows = self.rows();
        let journal = &mut rows.journal;
        if journal
            .pruned_at
            .is_some_and(|at| (now - at).to_std().unwrap_or_default() < every)
        {
            return Ok(None);
        }
        journal.pruned_at = Some(now);
        let before = journal.audit.len();
        journal.audit.retain(|entry| entry.at >= audit_before);
        let audit_rows = (before - journal.audit.len()) as u64;
        drop(rows);
        let mut usage = crate::sync::lock(&self.usage);
        let before = usage.len();
        usage.retain(|(_, day), _| *day >= usage_before);
        Ok(Some(Pruned {
            audit_rows,
            usage_rows: (before - usage.len()) as u64,
        }))
    }

    async fn record_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut newest: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(batch.len());
        for &(key_id, used_at) in batch {
            let at = newest.entry(key_id).or_insert(used_at);
            *at = (*at).max(used_at);
        }
        for row in self.rows().iter_mut() {
            if let Some(used_at) = newest.get(&row.key_id)
                && row.last_used_at.is_none_or(|stored| stored < *used_at)
            {
                row.last_used_at = Some(*used_at);
            }
        }
        Ok(())
    }

    async fn rewrite_hashes(&self, batch: &[HashRewrite]) -> Result<(), StoreError> {
        let mut rows = self.rows();
        for rewrite in batch {
            if let Some(row) = rows
                .iter_mut()
                .find(|row| row.key_id == rewrite.key_id && row.secret_key_hash == rewrite.old_hash)
            {
                row.secret_key_hash = rewrite.new_hash.clone();
                row.pepper_id = Some(rewrite.pepper_id.clone());
            }
        }
        Ok(())
    }

    async fn record_usage(&self, batch: &[UsageCount]) -> Result<(), StoreError> {
        let mut usage = crate::sync::lock(&self.usage);
        for count in batch {
            let slot = usage.entry((count.key_id, count.day)).or_default();
            *slot = slot.saturating_add(count.requests);
        }
        Ok(())
    }

    async fn usage(
        &self,
        key_id: Uuid,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        let mut days: Vec<(NaiveDate, u64)> = crate::sync::lock(&self.usage)
            .iter()
            .filter(|((id, day), _)| *id == key_id && *day >= since)
            .map(|((_, day), requests)| (*day, *requests))
            .collect();
        days.sort_unstable_by_key(|(day, _)| std::cmp::Reverse(*day));
        Ok(days)
    }

    async fn count_by_pepper(&self) -> Result<Vec<PepperCount>, StoreError> {
        let now = Utc::now();
        let mut counts: Vec<PepperCount> = Vec::new();
        for row in self.rows().iter().filter(|row| still_valid(row, now)) {
            match counts
                .iter_mut()
                .find(|count| count.pepper_id == row.pepper_id)
            {
                Some(count) => count.keys += 1,
                None => counts.push(PepperCount {
                    pepper_id: row.pepper_id.clone(),
                    keys: 1,
                }),
            }
        }
        Ok(counts)
    }

    async fn revoke_by_pepper(
        &self,
        pepper_id: &str,
        include_legacy: bool,
        change: &ChangeRecord,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut rows = self.rows();
        let mut journals = Vec::new();
        for row in rows.iter_mut() {
            let names = match &row.pepper_id {
                Some(id) => id == pepper_id,
                None => include_legacy,
            };
            if names && still_valid(row, now) {
                row.status = KeyStatus::Revoked;
                journals.push(change.journal(Change::Revoked(row), now));
            }
        }
        let revoked = journals.len() as u64;
        for journal in journals {
            rows.journal.write(journal);
        }
        Ok(revoked)
    }
}

/// Whether the key can still validate: active and not past its expiry.
fn still_valid(row: &ApiKeyRecord, now: DateTime<Utc>) -> bool {
    row.status == KeyStatus::Active && row.expires_at.is_none_or(|at| at > now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{key::KeyPair, testing::fixtures::row};

    fn record() -> ApiKeyRecord {
        row(&KeyPair::generate().unwrap(), Uuid::new_v4())
    }

    #[tokio::test]
    async fn the_indexes_follow_inserts_and_deletes() {
        let repository = MemoryRepository::new();
        let [a, b, c] = [record(), record(), record()];
        repository.insert(a.clone()).await.unwrap();
        repository
            .insert_many(vec![b.clone(), c.clone()])
            .await
            .unwrap();
        assert!(matches!(
            repository.insert(a.clone()).await,
            Err(StoreError::Conflict)
        ));
        let removed = repository
            .delete(b.account_id, b.key_id, &Default::default())
            .await
            .unwrap();
        assert_eq!(removed.map(|row| row.key_id), Some(b.key_id));
        for (kept, expected) in [(&a, true), (&b, false), (&c, true)] {
            let found = repository
                .find_by_public_key(&kept.public_key)
                .await
                .unwrap();
            assert_eq!(
                found.map(|row| row.key_id == kept.key_id),
                expected.then_some(true)
            );
        }
        // A deleted key's public key and id are free again.
        repository.insert(b.clone()).await.unwrap();
        let found = repository.find_by_public_key(&b.public_key).await.unwrap();
        assert_eq!(found.map(|row| row.key_id), Some(b.key_id));
    }

    #[tokio::test]
    async fn a_batch_with_a_clash_inserts_nothing() {
        let repository = MemoryRepository::new();
        let stored = record();
        repository.insert(stored.clone()).await.unwrap();
        let fresh = record();
        let twice = vec![fresh.clone(), fresh.clone()];
        let clashing = vec![record(), stored.clone()];
        for batch in [twice, clashing] {
            let first = batch[0].public_key.clone();
            assert!(matches!(
                repository.insert_many(batch).await,
                Err(StoreError::Conflict)
            ));
            assert_eq!(repository.find_by_public_key(&first).await.unwrap(), None);
        }
    }
}
