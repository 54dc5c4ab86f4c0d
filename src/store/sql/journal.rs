// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The audit log and the outbox in the SQL store: the rows a change writes
//! in its own transaction, the audit query and the retention.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ConnectionTrait, DbErr, QueryResult,
    sea_query::{Alias, Expr, ExprTrait, Order, Query},
};

use super::{SeaOrmRepository, database};
use crate::audit::{
    AuditEntry, AuditQuery,
    journal::{AuditRow, EventRow, Journal},
};
use crate::store::migration::m20261206_000010_audit_outbox::{
    AUDIT_TABLE, OUTBOX_TABLE, TASKS_TABLE,
};
use crate::store::{Pruned, StoreError};

fn col(name: &str) -> Alias {
    Alias::new(name)
}

/// Writes `journal`'s audit rows and events on `db` (the change's transaction).
pub(super) async fn write(db: &impl ConnectionTrait, journal: Journal) -> Result<(), DbErr> {
    for row in journal.audit {
        db.execute(&audit_insert(row)).await?;
    }
    for event in journal.events {
        db.execute(&event_insert(event)).await?;
    }
    Ok(())
}

fn audit_insert(row: AuditRow) -> sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table(col(AUDIT_TABLE))
        .columns(
            [
                "at",
                "account_id",
                "key_id",
                "action",
                "actor",
                "source",
                "detail",
            ]
            .map(col),
        )
        .values_panic([
            Expr::value(row.at),
            Expr::value(row.account_id),
            Expr::value(row.key_id),
            Expr::value(row.action),
            Expr::value(row.actor),
            Expr::value(row.source),
            Expr::value(row.detail.map(|detail| detail.to_string())),
        ])
        .to_owned()
}

/// The `INSERT` of one outbox event, due at once.
pub(super) fn event_insert(event: EventRow) -> sea_orm::sea_query::InsertStatement {
    Query::insert()
        .into_table(col(OUTBOX_TABLE))
        .columns(
            [
                "event_id",
                "key_id",
                "event_type",
                "payload",
                "created_at",
                "state",
                "attempts",
                "next_attempt_at",
            ]
            .map(col),
        )
        .values_panic([
            Expr::value(event.event_id),
            Expr::value(event.key_id),
            Expr::value(event.event_type),
            Expr::value(event.payload),
            Expr::value(event.created_at),
            Expr::value("pending"),
            Expr::value(0),
            Expr::value(event.created_at),
        ])
        .to_owned()
}

fn entry(row: &QueryResult) -> Result<AuditEntry, DbErr> {
    let detail: Option<String> = row.try_get("", "detail")?;
    Ok(AuditEntry {
        id: row.try_get("", "id")?,
        at: row.try_get("", "at")?,
        account_id: row.try_get("", "account_id")?,
        key_id: row.try_get("", "key_id")?,
        action: row.try_get("", "action")?,
        actor: row.try_get("", "actor")?,
        source: row.try_get("", "source")?,
        detail: detail.and_then(|text| serde_json::from_str(&text).ok()),
    })
}

impl SeaOrmRepository {
    /// A repository that writes no audit rows and no events: only for
    /// measuring what they cost (`benches/store.rs`).
    #[doc(hidden)]
    #[must_use]
    pub fn without_journal(mut self) -> Self {
        self.journal = false;
        self
    }

    /// Writes a change's journal on its transaction, unless
    /// [`without_journal`](Self::without_journal).
    pub(super) async fn write_journal(
        &self,
        db: &impl ConnectionTrait,
        journal: Journal,
    ) -> Result<(), DbErr> {
        if self.journal {
            write(db, journal).await
        } else {
            Ok(())
        }
    }

    /// See [`ApiKeyRepository::audit`](crate::store::ApiKeyRepository::audit).
    pub(super) async fn audit_rows(
        &self,
        query: AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut select = Query::select();
        select
            .columns(
                [
                    "id",
                    "at",
                    "account_id",
                    "key_id",
                    "action",
                    "actor",
                    "source",
                    "detail",
                ]
                .map(col),
            )
            .from(col(AUDIT_TABLE))
            .order_by(col("id"), Order::Desc)
            .limit(u64::from(query.limit));
        if let Some(account_id) = query.account_id {
            select.and_where(Expr::col(col("account_id")).eq(account_id));
        }
        if let Some(key_id) = query.key_id {
            select.and_where(Expr::col(col("key_id")).eq(key_id));
        }
        if let Some(before) = query.before {
            select.and_where(Expr::col(col("id")).lt(before));
        }
        let statement = self.backend().build(&select);
        let rows = self
            .conn()
            .query_all_raw(statement)
            .await
            .map_err(database)?;
        rows.iter()
            .map(entry)
            .collect::<Result<_, _>>()
            .map_err(database)
    }

    /// Claims the task `name` if no replica ran it within `every`: one
    /// `UPDATE` whose condition only one replica can meet at a time.
    pub(super) async fn claim_task(
        &self,
        name: &str,
        every: std::time::Duration,
    ) -> Result<bool, StoreError> {
        let backend = self.backend();
        let now = Utc::now();
        let never = DateTime::<Utc>::UNIX_EPOCH;
        let seed = match backend {
            sea_orm::DatabaseBackend::MySql => {
                format!("INSERT IGNORE INTO {TASKS_TABLE} (name, last_run_at) VALUES (?, ?)")
            }
            sea_orm::DatabaseBackend::Postgres => format!(
                "INSERT INTO {TASKS_TABLE} (name, last_run_at) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING"
            ),
            _ => format!(
                "INSERT INTO {TASKS_TABLE} (name, last_run_at) VALUES (?, ?) \
                 ON CONFLICT (name) DO NOTHING"
            ),
        };
        self.conn()
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                backend,
                seed,
                [name.into(), never.into()],
            ))
            .await
            .map_err(database)?;
        let due = chrono::TimeDelta::from_std(every)
            .ok()
            .and_then(|every| now.checked_sub_signed(every))
            .unwrap_or(never);
        let claim = Query::update()
            .table(col(TASKS_TABLE))
            .value(col("last_run_at"), now)
            .and_where(Expr::col(col("name")).eq(name))
            .and_where(Expr::col(col("last_run_at")).lte(due))
            .to_owned();
        let done = self.conn().execute(&claim).await.map_err(database)?;
        Ok(done.rows_affected() == 1)
    }

    /// See [`ApiKeyRepository::prune`](crate::store::ApiKeyRepository::prune).
    pub(super) async fn prune_rows(
        &self,
        audit_before: DateTime<Utc>,
        usage_before: NaiveDate,
        every: std::time::Duration,
    ) -> Result<Option<Pruned>, StoreError> {
        if !self.claim_task("retention", every).await? {
            return Ok(None);
        }
        let audit = Query::delete()
            .from_table(col(AUDIT_TABLE))
            .and_where(Expr::col(col("at")).lt(audit_before))
            .to_owned();
        let usage = Query::delete()
            .from_table(col("tower_api_keys_usage"))
            .and_where(Expr::col(col("day")).lt(usage_before))
            .to_owned();
        let audit_rows = self.conn().execute(&audit).await.map_err(database)?;
        let usage_rows = self.conn().execute(&usage).await.map_err(database)?;
        Ok(Some(Pruned {
            audit_rows: audit_rows.rows_affected(),
            usage_rows: usage_rows.rows_affected(),
        }))
    }
}
