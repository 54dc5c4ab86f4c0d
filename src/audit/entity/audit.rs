//! `tower_api_keys_audit`: one row per change to a key.

use sea_orm::entity::prelude::*;

/// One audit row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tower_api_keys_audit")]
pub struct Model {
    /// Increasing id.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// When the change committed.
    pub at: DateTimeUtc,
    /// The account that owns the key.
    pub account_id: Uuid,
    /// The key.
    pub key_id: Uuid,
    /// `created`, `imported`, `updated`, `rotated`, `revoked`,
    /// `revoked_by_holder`, `revoked_leaked` or `deleted`.
    pub action: String,
    /// Who made the change.
    pub actor: Option<String>,
    /// The client's address.
    pub source: Option<String>,
    /// The action's detail, JSON text.
    pub detail: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
