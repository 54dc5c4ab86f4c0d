use sea_orm_migration::{prelude::*, sea_orm::DeriveMigrationName};

use super::{m20261127_000005_key_policy, triggers};

/// The per-key address allowlist (README, "Address allowlists"): a nullable
/// JSON column `allowed_cidrs` (`jsonb` on PostgreSQL, `json` on MySQL, text
/// on SQLite), so that rows of the reference service stay valid and usable
/// from any address. A change of it reaches every validator: the MySQL and
/// SQLite update triggers compare it (PostgreSQL's compares whole rows).
/// Skips the column if it exists, so it adopts a table that has it.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

const COLUMN: &str = "allowed_cidrs";

/// The validated columns once this migration has run.
pub(super) fn columns() -> Vec<&'static str> {
    let mut columns = m20261127_000005_key_policy::columns();
    columns.push(COLUMN);
    columns
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        if !manager.has_column("api_keys", COLUMN).await? {
            let mut column = m20261127_000005_key_policy::json_column(backend, COLUMN);
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("api_keys"))
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        triggers::execute(manager, &triggers::update_trigger(backend, &columns())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let previous = m20261127_000005_key_policy::columns();
        triggers::execute(manager, &triggers::update_trigger(backend, &previous)).await?;
        if manager.has_column("api_keys", COLUMN).await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("api_keys"))
                        .drop_column(Alias::new(COLUMN))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
