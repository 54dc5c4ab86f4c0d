//! A key's daily request counts.

use chrono::{NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use super::{KeyManager, ManagerError};
use crate::{
    identity::{AccountId, ApiKeyId},
    manager::rules::FieldError,
};

/// One UTC day of a key's usage, in [`KeyUsage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = ApiKeyUsageDay, description = "One UTC day of a key's usage.")
)]
pub struct DayUsage {
    /// The UTC day; serialized `YYYY-MM-DD`.
    pub date: NaiveDate,
    /// Requests the authentication layer let through with the key that day,
    /// summed over every replica, as far as flushed to the store.
    pub requests: u64,
}

/// A key's daily request counts, from [`KeyManager::usage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = ApiKeyUsage, description = "A key's daily request counts.")
)]
pub struct KeyUsage {
    /// The key.
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub key_id: ApiKeyId,
    /// One entry per UTC day, today first, days without requests included.
    pub days: Vec<DayUsage>,
}

/// Most days [`KeyManager::usage`] reports.
const MAX_USAGE_DAYS: u32 = 90;

impl KeyManager {
    /// The key's request counts for the last `days` UTC days (1 to 90),
    /// today first: exactly `days` entries, zeros
    /// included. A request counts when the authentication layer lets it
    /// through (a `429` does not); counts are summed over every replica
    /// sharing the store.
    ///
    /// Reads the store only: counts still held in memory by a validator
    /// appear once it has flushed them (with `last_used_at`, every flush
    /// interval, at [`ApiKeyValidator::shutdown`], or on
    /// [`ApiKeyValidator::flush`]).
    ///
    /// Errors: [`ManagerError::Invalid`] (field `days`) outside 1 to 90,
    /// [`ManagerError::NotFound`] for a key that is not the account's.
    ///
    /// [`ApiKeyValidator::shutdown`]: crate::ApiKeyValidator::shutdown
    /// [`ApiKeyValidator::flush`]: crate::ApiKeyValidator::flush
    pub async fn usage(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        days: u32,
    ) -> Result<KeyUsage, ManagerError> {
        if !(1..=MAX_USAGE_DAYS).contains(&days) {
            return Err(ManagerError::Invalid(vec![FieldError::new(
                "days",
                format!("must be an integer from 1 to {MAX_USAGE_DAYS}"),
            )]));
        }
        self.store
            .get(account.into_inner(), key_id.into_inner())
            .await?
            .ok_or(ManagerError::NotFound)?;
        let today = Utc::now().date_naive();
        let since = today - TimeDelta::days(i64::from(days) - 1);
        let stored = self.store.usage(key_id.into_inner(), since).await?;
        let days = (0..i64::from(days))
            .map(|back| today - TimeDelta::days(back))
            .map(|date| DayUsage {
                date,
                requests: stored
                    .iter()
                    .filter(|(day, _)| *day == date)
                    .map(|(_, requests)| *requests)
                    .sum(),
            })
            .collect();
        Ok(KeyUsage { key_id, days })
    }
}
