//! SeaORM entities of the audit log's and the outbox's tables, for hosts
//! that query them directly (the crate itself goes through
//! [`ApiKeyRepository`](crate::store::ApiKeyRepository)). `detail` and
//! `payload` are JSON text.
//!
//! ```
//! # async fn recent(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
//! use sea_orm::{EntityTrait, QueryOrder, QuerySelect};
//! use tower_api_keys::audit::entity::audit;
//!
//! let rows = audit::Entity::find()
//!     .order_by_desc(audit::Column::Id)
//!     .limit(10)
//!     .all(db)
//!     .await?;
//! # Ok(()) }
//! ```

pub mod audit;
pub mod outbox;
