use sea_orm_migration::{
    prelude::*,
    sea_orm::{DatabaseBackend, DeriveMigrationName},
};

use super::{m20261127_000002_change_feed::VALIDATED_COLUMNS, triggers};

/// The key-policy columns (DECISIONS.md, "Storage and migrations", "Key policy in detail" and
/// "Rate limits in detail"): `scopes` and `metadata` (JSON:
/// `jsonb` on PostgreSQL, `json` on MySQL, text on SQLite), `rotated_from` (the
/// key a rotation replaced; unique, so that a key has at most one successor)
/// and `rate_limit_requests`/`rate_limit_period_seconds`. All nullable, so
/// rows of the reference service stay valid and unrestricted. Skips columns
/// that exist, so it adopts a table that has them.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

/// Index on `rotated_from`: unique, so that two concurrent rotations of one key
/// cannot both insert a successor.
const SUCCESSOR_INDEX: &str = "idx_api_keys_rotated_from";

/// The validated columns once this migration has run: a change of any of them
/// reaches every validator (the MySQL and SQLite triggers compare them).
pub(super) fn columns() -> Vec<&'static str> {
    let mut columns = VALIDATED_COLUMNS.to_vec();
    columns.extend([
        "pepper_id",
        "scopes",
        "metadata",
        "rate_limit_requests",
        "rate_limit_period_seconds",
    ]);
    columns
}

/// A nullable JSON column of `backend`'s JSON type (text on SQLite).
pub(super) fn json_column(backend: DatabaseBackend, name: &'static str) -> ColumnDef {
    let mut column = ColumnDef::new(Alias::new(name));
    match backend {
        DatabaseBackend::Postgres => column.custom(Alias::new("jsonb")),
        DatabaseBackend::MySql => column.custom(Alias::new("json")),
        _ => column.text(),
    };
    column.null().to_owned()
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let new_columns = [
            json_column(backend, "scopes"),
            json_column(backend, "metadata"),
            ColumnDef::new(Alias::new("rotated_from"))
                .uuid()
                .null()
                .to_owned(),
            ColumnDef::new(Alias::new("rate_limit_requests"))
                .integer()
                .null()
                .to_owned(),
            ColumnDef::new(Alias::new("rate_limit_period_seconds"))
                .integer()
                .null()
                .to_owned(),
        ];
        for mut column in new_columns {
            let name = column.get_column_name();
            if manager.has_column("api_keys", &name).await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("api_keys"))
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_index("api_keys", SUCCESSOR_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(SUCCESSOR_INDEX)
                        .table(Alias::new("api_keys"))
                        .col(Alias::new("rotated_from"))
                        .unique()
                        .to_owned(),
                )
                .await?;
        }
        triggers::execute(manager, &triggers::update_trigger(backend, &columns())).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut previous = VALIDATED_COLUMNS.to_vec();
        previous.push("pepper_id");
        triggers::execute(manager, &triggers::update_trigger(backend, &previous)).await?;
        manager
            .drop_index(
                Index::drop()
                    .name(SUCCESSOR_INDEX)
                    .table(Alias::new("api_keys"))
                    .to_owned(),
            )
            .await?;
        for name in [
            "scopes",
            "metadata",
            "rotated_from",
            "rate_limit_requests",
            "rate_limit_period_seconds",
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Alias::new("api_keys"))
                        .drop_column(Alias::new(name))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
