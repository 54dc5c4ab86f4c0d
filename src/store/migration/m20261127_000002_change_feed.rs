use sea_orm_migration::{prelude::*, sea_orm::DeriveMigrationName};

use super::triggers;

/// The columns of `api_keys` that validation reads: a change to any of them
/// reaches every validator (MySQL and SQLite compare them; PostgreSQL compares
/// whole rows).
pub(super) const VALIDATED_COLUMNS: &[&str] = &[
    "key_id",
    "public_key",
    "secret_key_hash",
    "account_id",
    "status",
    "expires_at",
];

/// The change feed: triggers on `api_keys` that notify (PostgreSQL) or append
/// to the change log `tower_api_keys_changes` (MySQL, SQLite) on every insert,
/// delete and update of a validated column. Works on an adopted table too.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        triggers::execute(manager, &triggers::create(backend, VALIDATED_COLUMNS)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        triggers::execute(manager, &triggers::drop(manager.get_database_backend())).await
    }
}
