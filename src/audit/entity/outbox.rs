//! `tower_api_keys_outbox`: the lifecycle events to deliver.

use sea_orm::entity::prelude::*;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tower_api_keys_outbox")]
pub struct Model {
    /// Increasing id: the order of delivery per key.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The `webhook-id`; unique.
    pub event_id: String,
    /// The key the event is about.
    pub key_id: Uuid,
    /// `key.created`, …, `key.expired`.
    pub event_type: String,
    /// The JSON body.
    pub payload: String,
    /// When the event was written (or put back by a retry).
    pub created_at: DateTimeUtc,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Delivery attempts so far.
    pub attempts: i32,
    /// When the next attempt is due.
    pub next_attempt_at: DateTimeUtc,
    /// Until when a replica holds the event.
    pub lease_until: Option<DateTimeUtc>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
