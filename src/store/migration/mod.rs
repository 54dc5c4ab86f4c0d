//! The crate's own schema migrations.
//!
//! Run [`Migrator`] (it records its history in `tower_api_keys_migrations`, never
//! in the host's `seaql_migrations`):
//!
//! ```no_run
//! # async fn run(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
//! use sea_orm_migration::MigratorTrait;
//! tower_api_keys::migration::Migrator::up(db, None).await?;
//! # Ok(()) }
//! ```
//!
//! A host that prefers one history table may append [`migrations()`] to its own
//! `Migrator::migrations()` instead.

use sea_orm_migration::{MigrationTrait, MigratorTrait, sea_orm::DynIden, sea_query::Alias};

mod m20261125_000001_create_api_keys;
mod m20261127_000002_change_feed;
mod m20261127_000004_pepper_id;
mod m20261127_000005_key_policy;
mod m20261127_000006_usage;
mod m20261205_000007_feed_faults;
mod m20261205_000008_postgres_change_log;
mod m20261206_000009_allowed_cidrs;
pub(crate) mod m20261206_000010_audit_outbox;
mod triggers;

/// Name of the table in which [`Migrator`] records applied migrations.
pub const MIGRATION_TABLE: &str = "tower_api_keys_migrations";

/// Every migration of the crate, oldest first, for hosts that merge them into
/// their own migrator.
pub fn migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(m20261125_000001_create_api_keys::Migration),
        Box::new(m20261127_000002_change_feed::Migration),
        Box::new(m20261127_000004_pepper_id::Migration),
        Box::new(m20261127_000005_key_policy::Migration),
        Box::new(m20261127_000006_usage::Migration),
        Box::new(m20261205_000007_feed_faults::Migration),
        Box::new(m20261205_000008_postgres_change_log::Migration),
        Box::new(m20261206_000009_allowed_cidrs::Migration),
        Box::new(m20261206_000010_audit_outbox::Migration),
    ]
}

/// The crate's migrator, with its own history table [`MIGRATION_TABLE`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[sea_orm_migration::async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        migrations()
    }

    fn migration_table_name() -> DynIden {
        Alias::new(MIGRATION_TABLE).into()
    }
}
