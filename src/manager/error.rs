//! [`ManagerError`]: why a key-management operation failed.

use crate::{
    identity::AccountId, key::RandomSourceError, manager::rules::FieldError, store::StoreError,
};

/// A key-management operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// No such key in this account.
    #[error("API key not found")]
    NotFound,
    /// The key to rotate is revoked or expired.
    #[error("API key is not active")]
    NotActive,
    /// The key to rotate already has a successor (it is in its grace period).
    #[error("API key has already been rotated")]
    AlreadyRotated,
    /// The key store could not be reached to check a credential.
    #[error("the key store is unavailable")]
    Unavailable,
    /// The key would hold a scope the acting party does not (see
    /// [`KeyManager::with_scope_ceiling`](super::KeyManager::with_scope_ceiling)):
    /// nothing was written.
    #[error("the API key cannot create, rotate into or change a key with scopes it does not hold")]
    ScopesNotHeld,
    /// The account already has the most keys allowed
    /// ([`KeyManager::with_max_keys_per_account`](super::KeyManager::with_max_keys_per_account)):
    /// nothing was written.
    #[error("too many API keys for account {account_id} (at most {limit})")]
    TooManyKeys {
        /// The account.
        account_id: AccountId,
        /// The most keys an account may have.
        limit: u64,
    },
    /// The request broke a rule; one entry per field.
    #[error("invalid API key request: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] RandomSourceError),
    /// The store failed or timed out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ManagerError {
    /// A store error, with the per-account limit lifted to
    /// [`ManagerError::TooManyKeys`].
    pub(super) fn from_store(err: StoreError) -> Self {
        match err {
            StoreError::TooManyKeys { account_id, limit } => Self::TooManyKeys {
                account_id: account_id.into(),
                limit,
            },
            err => Self::Store(err),
        }
    }
}
