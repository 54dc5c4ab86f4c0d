use sea_orm_migration::{
    prelude::*,
    sea_orm::{DatabaseBackend, DeriveMigrationName},
};

use super::{m20261127_000005_key_policy, triggers};

/// The change feed under faults (DECISIONS.md, "The change feed in full", "Under
/// faults"):
///
/// - MySQL/MariaDB: the triggers stamp change-log rows in UTC
///   (`UTC_TIMESTAMP(6)`), whatever the writer session's `time_zone`.
/// - SQLite: a `BEFORE INSERT` trigger logs the rows an `INSERT OR REPLACE`
///   removes, which fire no delete trigger.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = match manager.get_database_backend() {
            DatabaseBackend::MySql => {
                let mut statements = triggers::mysql_insert_delete();
                statements.extend(triggers::update_trigger(
                    DatabaseBackend::MySql,
                    &m20261127_000005_key_policy::columns(),
                ));
                statements
            }
            DatabaseBackend::Sqlite => triggers::sqlite_replaced(),
            _ => return Ok(()),
        };
        triggers::execute(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // MySQL keeps its UTC stamps: they are what the older triggers meant.
        if manager.get_database_backend() == DatabaseBackend::Sqlite {
            let drop = format!("DROP TRIGGER IF EXISTS {}", triggers::SQLITE_REPLACED);
            triggers::execute(manager, &[drop]).await?;
        }
        Ok(())
    }
}
