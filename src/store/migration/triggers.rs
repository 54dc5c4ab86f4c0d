//! The change-feed triggers on `api_keys`, per backend.
//!
//! PostgreSQL notifies on any change of a row but a write of `last_used_at`
//! alone (it compares whole rows, so columns added later are covered without a
//! new trigger). MySQL and SQLite compare the columns validation reads, listed
//! by each migration that adds one; [`update_trigger`] recreates the trigger
//! with the new list.
//!
//! MySQL stamps each change-log row with `UTC_TIMESTAMP(6)`, never the
//! writer session's local time (`CURRENT_TIMESTAMP` follows the session's
//! `time_zone`); SQLite's `strftime('%s', 'now')` is UTC already. The feed
//! prunes by id, not by these stamps, which are there for operators.

use sea_orm_migration::{
    prelude::*,
    sea_orm::{ConnectionTrait, DatabaseBackend, TransactionTrait},
};

/// Runs each statement on its own (MySQL takes one statement per call), all on
/// one connection, in one transaction: spread over the pool's connections, a
/// SQLite `CREATE TRIGGER` failed with "already exists" right after a
/// `DROP TRIGGER IF EXISTS` of the same trigger had run on another connection.
pub(super) async fn execute(
    manager: &SchemaManager<'_>,
    statements: &[String],
) -> Result<(), DbErr> {
    let transaction = manager.get_connection().begin().await?;
    for statement in statements {
        transaction.execute_unprepared(statement).await?;
    }
    transaction.commit().await
}

/// The start of a MySQL trigger's insert into the change log; the values
/// follow.
const MYSQL_LOG: &str = "INSERT INTO tower_api_keys_changes (public_key, changed_at) VALUES ";

/// The change log, the notify function and every trigger, for `columns`.
pub(super) fn create(backend: DatabaseBackend, columns: &[&str]) -> Vec<String> {
    match backend {
        DatabaseBackend::Postgres => postgres(),
        DatabaseBackend::MySql => {
            let mut statements = vec![
                "CREATE TABLE IF NOT EXISTS tower_api_keys_changes (\
                 id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 public_key VARCHAR(64) NOT NULL, \
                 changed_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6), \
                 INDEX idx_tower_api_keys_changes_changed_at (changed_at)\
                 ) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                    .to_owned(),
            ];
            statements.extend(mysql_insert_delete());
            statements.extend(update_trigger(backend, columns));
            statements
        }
        _ => {
            let mut statements = vec![
                "CREATE TABLE IF NOT EXISTS tower_api_keys_changes (\
                 id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 public_key TEXT NOT NULL, \
                 changed_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)))"
                    .to_owned(),
                "CREATE INDEX IF NOT EXISTS idx_tower_api_keys_changes_changed_at \
                 ON tower_api_keys_changes (changed_at)"
                    .to_owned(),
            ];
            for (name, event, row) in [
                ("tower_api_keys_inserted", "INSERT", "NEW"),
                ("tower_api_keys_deleted", "DELETE", "OLD"),
            ] {
                statements.push(format!("DROP TRIGGER IF EXISTS {name}"));
                statements.push(format!(
                    "CREATE TRIGGER {name} AFTER {event} ON api_keys BEGIN \
                     INSERT INTO tower_api_keys_changes (public_key) VALUES ({row}.public_key); END"
                ));
            }
            statements.extend(update_trigger(backend, columns));
            statements
        }
    }
}

/// The `UPDATE` trigger of MySQL and SQLite, comparing `columns` (PostgreSQL's
/// compares whole rows and needs no update: an empty list there).
pub(super) fn update_trigger(backend: DatabaseBackend, columns: &[&str]) -> Vec<String> {
    const NAME: &str = "tower_api_keys_updated";
    match backend {
        DatabaseBackend::Postgres => Vec::new(),
        DatabaseBackend::MySql => {
            let unchanged = columns
                .iter()
                .map(|column| format!("OLD.{column} <=> NEW.{column}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            vec![
                format!("DROP TRIGGER IF EXISTS {NAME}"),
                format!(
                    "CREATE TRIGGER {NAME} AFTER UPDATE ON api_keys FOR EACH ROW \
                     BEGIN \
                       IF NOT ({unchanged}) THEN \
                         {MYSQL_LOG}(NEW.public_key, UTC_TIMESTAMP(6)); \
                         IF NOT (OLD.public_key <=> NEW.public_key) THEN \
                           {MYSQL_LOG}(OLD.public_key, UTC_TIMESTAMP(6)); \
                         END IF; \
                       END IF; \
                     END"
                ),
            ]
        }
        _ => {
            let changed = columns
                .iter()
                .map(|column| format!("OLD.{column} IS NOT NEW.{column}"))
                .collect::<Vec<_>>()
                .join(" OR ");
            vec![
                format!("DROP TRIGGER IF EXISTS {NAME}"),
                format!(
                    "CREATE TRIGGER {NAME} AFTER UPDATE ON api_keys WHEN {changed} BEGIN \
                     INSERT INTO tower_api_keys_changes (public_key) VALUES (NEW.public_key); \
                     INSERT INTO tower_api_keys_changes (public_key) \
                       SELECT OLD.public_key WHERE OLD.public_key IS NOT NEW.public_key; \
                     END"
                ),
            ]
        }
    }
}

/// The MySQL insert and delete triggers, as [`create`] makes them.
pub(super) fn mysql_insert_delete() -> Vec<String> {
    let mut statements = Vec::new();
    for (name, event, row) in [
        ("tower_api_keys_inserted", "INSERT", "NEW"),
        ("tower_api_keys_deleted", "DELETE", "OLD"),
    ] {
        statements.push(format!("DROP TRIGGER IF EXISTS {name}"));
        statements.push(format!(
            "CREATE TRIGGER {name} AFTER {event} ON api_keys FOR EACH ROW \
             {MYSQL_LOG}({row}.public_key, UTC_TIMESTAMP(6))"
        ));
    }
    statements
}

/// SQLite: `INSERT OR REPLACE` (and `REPLACE`) deletes the rows it conflicts
/// with without firing their delete trigger (SQLite fires it only with
/// `recursive_triggers` on, per connection). This trigger logs them before the
/// insert, whatever the writer's connection.
pub(super) const SQLITE_REPLACED: &str = "tower_api_keys_replaced";

/// Creates [`SQLITE_REPLACED`].
pub(super) fn sqlite_replaced() -> Vec<String> {
    vec![
        format!("DROP TRIGGER IF EXISTS {SQLITE_REPLACED}"),
        format!(
            "CREATE TRIGGER {SQLITE_REPLACED} BEFORE INSERT ON api_keys BEGIN \
             INSERT INTO tower_api_keys_changes (public_key) \
               SELECT public_key FROM api_keys \
               WHERE key_id = NEW.key_id OR public_key = NEW.public_key; \
             END"
        ),
    ]
}

/// Drops what [`create`] made.
pub(super) fn drop(backend: DatabaseBackend) -> Vec<String> {
    match backend {
        DatabaseBackend::Postgres => vec![
            "DROP TRIGGER IF EXISTS tower_api_keys_changed ON api_keys".to_owned(),
            "DROP TRIGGER IF EXISTS tower_api_keys_updated ON api_keys".to_owned(),
            "DROP TRIGGER IF EXISTS tower_api_keys_truncated ON api_keys".to_owned(),
            "DROP FUNCTION IF EXISTS tower_api_keys_notify()".to_owned(),
        ],
        _ => vec![
            "DROP TRIGGER IF EXISTS tower_api_keys_inserted".to_owned(),
            "DROP TRIGGER IF EXISTS tower_api_keys_deleted".to_owned(),
            "DROP TRIGGER IF EXISTS tower_api_keys_updated".to_owned(),
            format!("DROP TRIGGER IF EXISTS {SQLITE_REPLACED}"),
            "DROP TABLE IF EXISTS tower_api_keys_changes".to_owned(),
        ],
    }
}

fn postgres() -> Vec<String> {
    let mut statements = vec![postgres_function(None)];
    statements.extend(
        [
            "DROP TRIGGER IF EXISTS tower_api_keys_changed ON api_keys",
            "CREATE TRIGGER tower_api_keys_changed AFTER INSERT OR DELETE ON api_keys \
             FOR EACH ROW EXECUTE FUNCTION tower_api_keys_notify()",
            "DROP TRIGGER IF EXISTS tower_api_keys_updated ON api_keys",
            "CREATE TRIGGER tower_api_keys_updated AFTER UPDATE ON api_keys FOR EACH ROW \
             WHEN ((to_jsonb(OLD) - 'last_used_at') IS DISTINCT FROM (to_jsonb(NEW) - 'last_used_at')) \
             EXECUTE FUNCTION tower_api_keys_notify()",
            "DROP TRIGGER IF EXISTS tower_api_keys_truncated ON api_keys",
            "CREATE TRIGGER tower_api_keys_truncated AFTER TRUNCATE ON api_keys \
             FOR EACH STATEMENT EXECUTE FUNCTION tower_api_keys_notify()",
        ]
        .map(str::to_owned),
    );
    statements
}

/// The PostgreSQL trigger function: `NOTIFY tower_api_keys` with the public
/// key (an empty payload for a `TRUNCATE`: everything), and with `log`, the
/// schema of the change log, also a row in `tower_api_keys_changes` there, for
/// replicas that poll (behind a transaction-mode pooler, where `LISTEN` cannot
/// run). The log is named with its schema, so that a writer whose
/// `search_path` differs still finds it.
pub(super) fn postgres_function(log: Option<&str>) -> String {
    let change = |key: &str| match log {
        Some(schema) => format!(
            "PERFORM pg_notify('tower_api_keys', {key}); \
             INSERT INTO \"{}\".tower_api_keys_changes (public_key) VALUES ({key}); ",
            schema.replace('"', "\"\"")
        ),
        None => format!("PERFORM pg_notify('tower_api_keys', {key}); "),
    };
    format!(
        "CREATE OR REPLACE FUNCTION tower_api_keys_notify() RETURNS trigger \
         LANGUAGE plpgsql AS $$ \
         BEGIN \
           IF TG_OP = 'INSERT' THEN {insert}\
           ELSIF TG_OP = 'DELETE' THEN {delete}\
           ELSIF TG_OP = 'UPDATE' THEN {update}\
             IF NEW.public_key IS DISTINCT FROM OLD.public_key THEN {old} END IF; \
           ELSE {all}\
           END IF; \
           RETURN NULL; \
         END $$",
        insert = change("NEW.public_key::text"),
        delete = change("OLD.public_key::text"),
        update = change("NEW.public_key::text"),
        old = change("OLD.public_key::text"),
        all = change("''"),
    )
}
