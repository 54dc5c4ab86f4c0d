//! Pepper rotation, for an operator: how many keys each pepper still covers,
//! and retiring a pepper by revoking the keys it still covers.

use serde::Serialize;

use super::rules::FieldError;
use super::{KeyManager, ManagerError, to_completion};
use crate::key::ring::PepperId;

/// The role of a pepper in the validator's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PepperRole {
    /// Makes every new hash.
    Current,
    /// An older pepper, still accepted.
    Previous,
    /// The oldest pepper: it also covers rows that name no pepper.
    Legacy,
    /// Named by rows but not in the ring: those keys are refused.
    Missing,
}

/// One line of [`KeyManager::pepper_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PepperStatus {
    /// The pepper's id (`None` only for a stored id that is not a valid one).
    pub pepper_id: Option<PepperId>,
    /// Its role.
    pub role: PepperRole,
    /// Whether the validator holds this pepper.
    pub in_ring: bool,
    /// Keys that can still validate and were hashed with it.
    pub keys: u64,
}

impl KeyManager {
    /// How far a pepper rotation has come: for each pepper of the validator's
    /// ring (current first) and each pepper id rows name that the ring lacks,
    /// how many keys that can still validate (not revoked, not expired) it
    /// covers. A previous pepper can be dropped from the configuration once its
    /// count is 0 (keys re-hash on their first use), or after
    /// [`retire_pepper`](Self::retire_pepper) revoked the unused rest. Across
    /// every account: an operator's view.
    pub async fn pepper_status(&self) -> Result<Vec<PepperStatus>, ManagerError> {
        let counts = self.store.count_by_pepper().await?;
        let ring: Vec<PepperId> = self.validator.pepper_ids().cloned().collect();
        let legacy = ring.last().cloned();
        let count_of = |id: Option<&str>| {
            counts
                .iter()
                .filter(|count| count.pepper_id.as_deref() == id)
                .map(|count| count.keys)
                .sum::<u64>()
        };
        let mut status: Vec<PepperStatus> = ring
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let is_legacy = Some(id) == legacy.as_ref();
                PepperStatus {
                    pepper_id: Some(id.clone()),
                    role: if index == 0 {
                        PepperRole::Current
                    } else if is_legacy {
                        PepperRole::Legacy
                    } else {
                        PepperRole::Previous
                    },
                    in_ring: true,
                    // The legacy pepper also covers the rows that name none.
                    keys: count_of(Some(id.as_str())) + if is_legacy { count_of(None) } else { 0 },
                }
            })
            .collect();
        for count in &counts {
            let Some(id) = &count.pepper_id else { continue };
            if !ring.iter().any(|known| known.as_str() == id) && count.keys > 0 {
                status.push(PepperStatus {
                    pepper_id: id.parse().ok(),
                    role: PepperRole::Missing,
                    in_ring: false,
                    keys: count.keys,
                });
            }
        }
        Ok(status)
    }

    /// Revokes every key that can still validate and was hashed with the
    /// pepper `pepper_id` (for the legacy pepper, also the rows that name no
    /// pepper): the end of a rotation, for keys unused since it began. Returns
    /// how many were revoked. The current pepper cannot be retired.
    pub async fn retire_pepper(&self, pepper_id: &PepperId) -> Result<u64, ManagerError> {
        let pepper_id = pepper_id.clone();
        let this = self.clone();
        to_completion(async move { this.retire_pepper_now(&pepper_id).await }).await
    }

    async fn retire_pepper_now(&self, pepper_id: &PepperId) -> Result<u64, ManagerError> {
        let ring: Vec<PepperId> = self.validator.pepper_ids().cloned().collect();
        if ring.first() == Some(pepper_id) {
            return Err(ManagerError::Invalid(vec![FieldError::new(
                "pepper_id",
                "the current pepper cannot be retired",
            )]));
        }
        let include_legacy = ring.len() > 1 && ring.last() == Some(pepper_id);
        let revoked = self
            .store
            .revoke_by_pepper(pepper_id.as_str(), include_legacy, &self.change)
            .await;
        // Many keys may have changed: none of them may stay cached.
        self.validator.invalidate_all();
        let revoked = revoked?;
        tracing::info!(pepper_id = %pepper_id, keys = revoked, "pepper retired: its remaining keys revoked");
        Ok(revoked)
    }
}
