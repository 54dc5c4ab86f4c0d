use sea_orm_migration::{prelude::*, sea_orm::DeriveMigrationName};

use super::{m20261127_000002_change_feed::VALIDATED_COLUMNS, triggers};

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    PepperId,
}

/// `pepper_id`: the id of the pepper that made a row's hash (NULL: the legacy
/// pepper, as in every row of the reference service). A change of it (a
/// re-hash) reaches every validator like any other change of a validated
/// column.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

/// The validated columns once this migration has run.
fn columns() -> Vec<&'static str> {
    let mut columns = VALIDATED_COLUMNS.to_vec();
    columns.push("pepper_id");
    columns
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("api_keys", "pepper_id").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(ApiKeys::Table)
                        .add_column(ColumnDef::new(ApiKeys::PepperId).string_len(32).null())
                        .to_owned(),
                )
                .await?;
        }
        let backend = manager.get_database_backend();
        triggers::execute(manager, &triggers::update_trigger(backend, &columns())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        triggers::execute(
            manager,
            &triggers::update_trigger(backend, VALIDATED_COLUMNS),
        )
        .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeys::Table)
                    .drop_column(ApiKeys::PepperId)
                    .to_owned(),
            )
            .await
    }
}
