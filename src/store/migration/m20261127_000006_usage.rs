use sea_orm_migration::{prelude::*, sea_orm::DeriveMigrationName};

/// The usage counts (DECISIONS.md, "Usage metering in detail"): `tower_api_keys_usage
/// (key_id, day, requests)`, one row per key and UTC day, primary key
/// `(key_id, day)`.
/// `key_id` is SeaORM's uuid column (`uuid` on PostgreSQL, `binary(16)` on
/// MySQL, a 16-byte blob on SQLite), `day` a `date` (text `YYYY-MM-DD` on
/// SQLite), `requests` a `bigint`. No foreign key to `api_keys`: counts are
/// written in batches, possibly after their key was deleted, and an adopted
/// table's key may have any definition. Skipped if the table exists.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

/// The table's name.
const USAGE_TABLE: &str = "tower_api_keys_usage";

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_table(USAGE_TABLE).await? {
            return Ok(());
        }
        manager
            .create_table(
                Table::create()
                    .table(Alias::new(USAGE_TABLE))
                    .if_not_exists()
                    .col(ColumnDef::new(Alias::new("key_id")).uuid().not_null())
                    .col(ColumnDef::new(Alias::new("day")).date().not_null())
                    .col(
                        ColumnDef::new(Alias::new("requests"))
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(Alias::new("key_id"))
                            .col(Alias::new("day")),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(Alias::new(USAGE_TABLE))
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
