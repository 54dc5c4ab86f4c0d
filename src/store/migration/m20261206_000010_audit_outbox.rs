use sea_orm_migration::{
    prelude::*,
    sea_orm::{DatabaseBackend, DeriveMigrationName},
};

/// The audit log and the event outbox (CONTRACT §16; DECISIONS.md, "Audit
/// log and events"), and the one-row-per-task table that lets one replica at
/// a time run the daily retention:
///
/// - `tower_api_keys_audit (id, at, account_id, key_id, action, actor,
///   source, detail)`, `id` an increasing `bigint`, indexed by account and by
///   key (each with `id`, newest first) and by `at` (retention);
/// - `tower_api_keys_outbox (id, event_id, key_id, event_type, payload,
///   created_at, state, attempts, next_attempt_at, lease_until, last_error)`,
///   `event_id` unique (the clock's events are written once), indexed by
///   `(state, next_attempt_at)` and `(key_id, id)` (order per key);
/// - `tower_api_keys_tasks (name, last_run_at)`.
///
/// Timestamps as in `api_keys` (`datetime(6)` on MySQL, `timestamptz`
/// elsewhere); `detail` and `payload` are JSON text. Each table is skipped if
/// it exists.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

/// The audit log's table.
pub(crate) const AUDIT_TABLE: &str = "tower_api_keys_audit";
/// The outbox's table.
pub(crate) const OUTBOX_TABLE: &str = "tower_api_keys_outbox";
/// The periodic tasks' table.
pub(crate) const TASKS_TABLE: &str = "tower_api_keys_tasks";

fn name(text: &str) -> Alias {
    Alias::new(text)
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mysql = manager.get_database_backend() == DatabaseBackend::MySql;
        let timestamp = |column: &str| {
            let mut column = ColumnDef::new(name(column));
            if mysql {
                column.custom(name("datetime(6)"));
            } else {
                column.timestamp_with_time_zone();
            }
            column
        };
        let id = || {
            ColumnDef::new(name("id"))
                .big_integer()
                .not_null()
                .auto_increment()
                .primary_key()
                .to_owned()
        };
        if !manager.has_table(AUDIT_TABLE).await? {
            manager
                .create_table(
                    Table::create()
                        .table(name(AUDIT_TABLE))
                        .if_not_exists()
                        .col(id())
                        .col(timestamp("at").not_null())
                        .col(ColumnDef::new(name("account_id")).uuid().not_null())
                        .col(ColumnDef::new(name("key_id")).uuid().not_null())
                        .col(ColumnDef::new(name("action")).string_len(32).not_null())
                        .col(ColumnDef::new(name("actor")).string_len(255).null())
                        .col(ColumnDef::new(name("source")).string_len(64).null())
                        .col(ColumnDef::new(name("detail")).text().null())
                        .to_owned(),
                )
                .await?;
            for (index, columns) in [
                ("tower_api_keys_audit_account", ["account_id", "id"]),
                ("tower_api_keys_audit_key", ["key_id", "id"]),
            ] {
                let mut create = Index::create();
                create.name(index).table(name(AUDIT_TABLE));
                for column in columns {
                    create.col(name(column));
                }
                manager.create_index(create.to_owned()).await?;
            }
            manager
                .create_index(
                    Index::create()
                        .name("tower_api_keys_audit_at")
                        .table(name(AUDIT_TABLE))
                        .col(name("at"))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_table(OUTBOX_TABLE).await? {
            manager
                .create_table(
                    Table::create()
                        .table(name(OUTBOX_TABLE))
                        .if_not_exists()
                        .col(id())
                        .col(ColumnDef::new(name("event_id")).string_len(96).not_null())
                        .col(ColumnDef::new(name("key_id")).uuid().not_null())
                        .col(ColumnDef::new(name("event_type")).string_len(32).not_null())
                        .col(ColumnDef::new(name("payload")).text().not_null())
                        .col(timestamp("created_at").not_null())
                        .col(ColumnDef::new(name("state")).string_len(16).not_null())
                        .col(ColumnDef::new(name("attempts")).integer().not_null())
                        .col(timestamp("next_attempt_at").not_null())
                        .col(timestamp("lease_until").null())
                        .col(ColumnDef::new(name("last_error")).string_len(255).null())
                        .to_owned(),
                )
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name("tower_api_keys_outbox_event")
                        .table(name(OUTBOX_TABLE))
                        .col(name("event_id"))
                        .unique()
                        .to_owned(),
                )
                .await?;
            for (index, columns) in [
                ("tower_api_keys_outbox_due", ["state", "next_attempt_at"]),
                ("tower_api_keys_outbox_key", ["key_id", "id"]),
            ] {
                let mut create = Index::create();
                create.name(index).table(name(OUTBOX_TABLE));
                for column in columns {
                    create.col(name(column));
                }
                manager.create_index(create.to_owned()).await?;
            }
        }
        if !manager.has_table(TASKS_TABLE).await? {
            manager
                .create_table(
                    Table::create()
                        .table(name(TASKS_TABLE))
                        .if_not_exists()
                        .col(
                            ColumnDef::new(name("name"))
                                .string_len(64)
                                .not_null()
                                .primary_key(),
                        )
                        .col(timestamp("last_run_at").not_null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [TASKS_TABLE, OUTBOX_TABLE, AUDIT_TABLE] {
            manager
                .drop_table(Table::drop().table(name(table)).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
