//! Import of keys hashed elsewhere, across accounts: an operator's tool.

use super::{KeyManager, ManagerError, creation_time, to_completion};
use crate::{audit::ChangeReason, store::ApiKeyRecord};

impl KeyManager {
    /// Imports keys that were made elsewhere (already hashed; the secrets are
    /// not known here), across accounts: an operator's tool. Every record is
    /// checked before any is written ([`ManagerError::Invalid`], field names
    /// `records[i].field`), and they are written in one transaction: a
    /// duplicate id or public key (in the store or twice in `records`) writes
    /// nothing and is [`ManagerError::Store`] with [`StoreError::Conflict`];
    /// an account that would have more than the most keys allowed writes
    /// nothing and is [`ManagerError::TooManyKeys`]. A row without
    /// `created_at` gets the current time. Returns how many were written.
    ///
    /// [`StoreError::Conflict`]: crate::store::StoreError::Conflict
    pub async fn import(&self, records: Vec<ApiKeyRecord>) -> Result<usize, ManagerError> {
        let this = self.clone();
        to_completion(async move { this.import_now(records).await }).await
    }

    async fn import_now(&self, records: Vec<ApiKeyRecord>) -> Result<usize, ManagerError> {
        let mut errors = Vec::new();
        for (index, record) in records.iter().enumerate() {
            super::rules::check_record(record, &format!("records[{index}]."), &mut errors);
        }
        if !errors.is_empty() {
            return Err(ManagerError::Invalid(errors));
        }
        for record in &records {
            self.within_ceiling(record.scopes.as_ref())?;
        }
        let count = records.len();
        let change = self.change.clone().because(ChangeReason::Import);
        let public_keys: Vec<String> = records.iter().map(|r| r.public_key.clone()).collect();
        let records = records
            .into_iter()
            .map(|mut record| {
                record.created_at = Some(record.created_at.unwrap_or_else(creation_time));
                record
            })
            .collect();
        let inserted = self
            .store
            .insert_within_limit(records, self.max_keys_per_account, &change)
            .await;
        for public_key in &public_keys {
            self.validator.invalidate(public_key);
        }
        inserted.map_err(ManagerError::from_store)?;
        tracing::info!(keys = count, "API keys imported");
        Ok(count)
    }
}
