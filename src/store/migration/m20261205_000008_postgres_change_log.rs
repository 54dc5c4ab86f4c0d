use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DatabaseBackend, DeriveMigrationName, Statement},
};

use super::triggers;

/// PostgreSQL: the change log `tower_api_keys_changes`, written by the same
/// trigger function that notifies, so that a replica behind a
/// transaction-mode pooler (where `LISTEN` cannot run) can poll it (DECISIONS.md,
/// "PgBouncer or Supavisor in transaction mode"). Listening replicas prune it
/// too. Other backends have it already.
#[derive(DeriveMigrationName)]
pub(super) struct Migration;

/// The schema the migration runs in: where `api_keys` and the log are.
async fn current_schema(manager: &SchemaManager<'_>) -> Result<String, DbErr> {
    manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT current_schema()::text AS schema",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom("no current schema".to_owned()))?
        .try_get("", "schema")
}

// The trait's signature elides `SchemaManager`'s lifetime.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let schema = current_schema(manager).await?;
        let statements = [
            "CREATE TABLE IF NOT EXISTS tower_api_keys_changes (\
             id BIGSERIAL PRIMARY KEY, \
             public_key TEXT NOT NULL, \
             changed_at TIMESTAMPTZ NOT NULL DEFAULT now())"
                .to_owned(),
            triggers::postgres_function(Some(&schema)),
        ];
        triggers::execute(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let statements = [
            triggers::postgres_function(None),
            "DROP TABLE IF EXISTS tower_api_keys_changes".to_owned(),
        ];
        triggers::execute(manager, &statements).await
    }
}
