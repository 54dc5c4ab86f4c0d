//! The SeaORM entity for the `api_keys` table.
//!
//! Column names and types follow the reference service (see the crate's README),
//! so rows it wrote are read as they are. Hosts may query this entity directly;
//! the crate itself goes through [`crate::store::SeaOrmRepository`].

use std::fmt;

use sea_orm::entity::prelude::*;

/// One row of `api_keys`.
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Primary key (UUID v4).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: Uuid,
    /// The public key, `pk_…`; unique.
    #[sea_orm(unique)]
    pub public_key: String,
    /// Lowercase hex HMAC-SHA256 of the secret key under the pepper.
    pub secret_key_hash: String,
    /// The owning account.
    pub account_id: Uuid,
    /// Trimmed title, 1–255 characters.
    pub title: String,
    /// Optional description.
    pub description: Option<String>,
    /// `active` or `revoked`.
    pub status: String,
    /// Expiry; `None` for never.
    pub expires_at: Option<DateTimeUtc>,
    /// Last use, written in batches.
    pub last_used_at: Option<DateTimeUtc>,
    /// Creation time.
    pub created_at: DateTimeUtc,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("key_id", &self.key_id)
            .field("public_key", &self.public_key)
            .field("secret_key_hash", &"<redacted>")
            .field("account_id", &self.account_id)
            .field("title", &self.title)
            .field("description", &self.description)
            .field("status", &self.status)
            .field("expires_at", &self.expires_at)
            .field("last_used_at", &self.last_used_at)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// `api_keys` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
