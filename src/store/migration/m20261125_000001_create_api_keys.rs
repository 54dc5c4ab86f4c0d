use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DatabaseBackend, DeriveMigrationName, Statement},
};

/// Creates `api_keys` as the reference service has it. `IF NOT EXISTS`, so a
/// database that already holds the reference service's table is adopted as is:
/// its column types (the ENUM `status`), defaults and constraints are left alone,
/// and on PostgreSQL no second index on `account_id` is added when the table
/// already has one.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    KeyId,
    PublicKey,
    SecretKeyHash,
    AccountId,
    Title,
    Description,
    Status,
    ExpiresAt,
    LastUsedAt,
    CreatedAt,
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mysql = manager.get_database_backend() == DatabaseBackend::MySql;
        // MySQL's `timestamp` ends in 2038 and keeps whole seconds; use `datetime(6)`
        // there (sqlx reads and writes it as UTC). Elsewhere `timestamptz` / RFC 3339 text.
        let timestamp = |column: &mut ColumnDef| {
            if mysql {
                column.custom(Alias::new("datetime(6)"));
            } else {
                column.timestamp_with_time_zone();
            }
        };
        let mut expires_at = ColumnDef::new(ApiKeys::ExpiresAt);
        timestamp(expires_at.null());
        let mut last_used_at = ColumnDef::new(ApiKeys::LastUsedAt);
        timestamp(last_used_at.null());
        let mut created_at = ColumnDef::new(ApiKeys::CreatedAt);
        timestamp(created_at.not_null());
        let mut status = ColumnDef::new(ApiKeys::Status);
        if mysql {
            // MySQL cannot default a TEXT column without an expression.
            status.string_len(16);
        } else {
            status.text();
        }
        status.not_null().default("active");

        let mut table = Table::create();
        table
            .table(ApiKeys::Table)
            .if_not_exists()
            .col(
                ColumnDef::new(ApiKeys::KeyId)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(ApiKeys::PublicKey)
                    .string_len(64)
                    .not_null()
                    .unique_key(),
            )
            .col(
                ColumnDef::new(ApiKeys::SecretKeyHash)
                    .string_len(64)
                    .not_null(),
            )
            .col(ColumnDef::new(ApiKeys::AccountId).uuid().not_null())
            .col(ColumnDef::new(ApiKeys::Title).string_len(255).not_null())
            .col(ColumnDef::new(ApiKeys::Description).text().null())
            .col(&mut status)
            .col(&mut expires_at)
            .col(&mut last_used_at)
            .col(&mut created_at);
        if mysql {
            // Titles and descriptions hold any Unicode text, emoji included.
            table.character_set("utf8mb4").collate("utf8mb4_bin");
        }
        manager.create_table(table).await?;
        if manager.get_database_backend() == DatabaseBackend::Postgres
            && has_index_leading_with_account_id(manager).await?
        {
            return Ok(());
        }
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_api_keys_account_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::AccountId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).to_owned())
            .await
    }
}

/// Whether `api_keys` (as the search path resolves it) already has an index whose
/// first column is `account_id`, under whatever name (PostgreSQL).
async fn has_index_leading_with_account_id(manager: &SchemaManager<'_>) -> Result<bool, DbErr> {
    let found = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT 1 FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass('api_keys') AND a.attname = 'account_id'",
        ))
        .await?;
    Ok(found.is_some())
}
