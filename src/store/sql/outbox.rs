// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The outbox in the SQL store: claiming due events under a lease, settling
//! attempts, the failed events, and the clock's events.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, QueryFilter, QueryResult, Statement,
    Value,
    sea_query::{Alias, Expr, ExprTrait, Query},
};

use super::{SeaOrmRepository, database, is_unique_violation, journal::event_insert};
use crate::audit::journal::{EXPIRED_LOOKBACK, clock_event, event_with_id};
use crate::events::{OutboxEvent, Settle};
use crate::store::migration::m20261206_000010_audit_outbox::OUTBOX_TABLE;
use crate::store::{ApiKeyRecord, StoreError, entity::Column};

const COLUMNS: &str =
    "o.id, o.event_id, o.key_id, o.event_type, o.payload, o.created_at, o.attempts, o.last_error";

/// `text` with `?` placeholders numbered `$1, $2, …` for PostgreSQL.
fn placeholders(backend: DatabaseBackend, text: &str) -> String {
    if backend != DatabaseBackend::Postgres {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    let mut n = 0;
    for c in text.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn statement(backend: DatabaseBackend, text: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(backend, placeholders(backend, text), values)
}

fn event(row: &QueryResult) -> Result<OutboxEvent, DbErr> {
    let attempts: i32 = row.try_get("", "attempts")?;
    Ok(OutboxEvent {
        id: row.try_get("", "id")?,
        event_id: row.try_get("", "event_id")?,
        key_id: row.try_get("", "key_id")?,
        event_type: row.try_get("", "event_type")?,
        payload: row.try_get("", "payload")?,
        created_at: row.try_get("", "created_at")?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get("", "last_error")?,
    })
}

fn col(name: &str) -> Alias {
    Alias::new(name)
}

impl SeaOrmRepository {
    /// See [`ApiKeyRepository::claim_events`](crate::store::ApiKeyRepository::claim_events).
    pub(super) async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        let backend = self.backend();
        let transaction = self.conn().begin().await.map_err(database)?;
        let lock = match backend {
            DatabaseBackend::Sqlite => {
                // The write lock first: no other replica claims meanwhile.
                transaction
                    .execute_unprepared(&format!("UPDATE {OUTBOX_TABLE} SET id = id WHERE 0 = 1"))
                    .await
                    .map_err(database)?;
                ""
            }
            _ => " FOR UPDATE SKIP LOCKED",
        };
        let select = format!(
            "SELECT {COLUMNS} FROM {OUTBOX_TABLE} o \
             WHERE o.state = 'pending' AND o.next_attempt_at <= ? \
             AND (o.lease_until IS NULL OR o.lease_until < ?) \
             AND NOT EXISTS (SELECT 1 FROM {OUTBOX_TABLE} e \
                 WHERE e.key_id = o.key_id AND e.id < o.id AND e.state = 'pending') \
             ORDER BY o.id LIMIT ?{lock}"
        );
        let rows = transaction
            .query_all_raw(statement(
                backend,
                &select,
                vec![now.into(), now.into(), i64::from(limit).into()],
            ))
            .await
            .map_err(database)?;
        let events = rows.iter().map(event).collect::<Result<Vec<_>, _>>();
        let events = events.map_err(database)?;
        if !events.is_empty() {
            let until = now + TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX);
            let update = Query::update()
                .table(col(OUTBOX_TABLE))
                .value(col("lease_until"), until)
                .and_where(Expr::col(col("id")).is_in(events.iter().map(|e| e.id)))
                .to_owned();
            transaction.execute(&update).await.map_err(database)?;
        }
        transaction.commit().await.map_err(database)?;
        Ok(events)
    }

    /// See [`ApiKeyRepository::settle_event`](crate::store::ApiKeyRepository::settle_event).
    pub(super) async fn settle(&self, id: i64, outcome: Settle) -> Result<(), StoreError> {
        let mut update = Query::update();
        update
            .table(col(OUTBOX_TABLE))
            .value(col("lease_until"), Option::<DateTime<Utc>>::None)
            .value(col("attempts"), Expr::col(col("attempts")).add(1))
            .and_where(Expr::col(col("id")).eq(id));
        match outcome {
            Settle::Delivered => {
                update.value(col("state"), "delivered");
            }
            Settle::Retry { at, error } => {
                update
                    .value(col("next_attempt_at"), at)
                    .value(col("last_error"), clip(error));
            }
            Settle::Failed { error } => {
                update
                    .value(col("state"), "failed")
                    .value(col("last_error"), clip(error));
            }
        }
        self.conn().execute(&update).await.map_err(database)?;
        Ok(())
    }

    /// See [`ApiKeyRepository::failed_events`](crate::store::ApiKeyRepository::failed_events).
    pub(super) async fn failed(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let backend = self.backend();
        let select = format!(
            "SELECT {COLUMNS} FROM {OUTBOX_TABLE} o WHERE o.state = 'failed' \
             ORDER BY o.id LIMIT ?"
        );
        let rows = self
            .conn()
            .query_all_raw(statement(backend, &select, vec![i64::from(limit).into()]))
            .await
            .map_err(database)?;
        rows.iter()
            .map(event)
            .collect::<Result<_, _>>()
            .map_err(database)
    }

    /// See [`ApiKeyRepository::retry_failed`](crate::store::ApiKeyRepository::retry_failed).
    pub(super) async fn retry(&self, event_id: Option<&str>) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut update = Query::update();
        update
            .table(col(OUTBOX_TABLE))
            .value(col("state"), "pending")
            .value(col("attempts"), 0)
            .value(col("next_attempt_at"), now)
            .value(col("created_at"), now)
            .value(col("lease_until"), Option::<DateTime<Utc>>::None)
            .and_where(Expr::col(col("state")).eq("failed"));
        if let Some(event_id) = event_id {
            update.and_where(Expr::col(col("event_id")).eq(event_id));
        }
        let done = self.conn().execute(&update).await.map_err(database)?;
        Ok(done.rows_affected())
    }

    /// See [`ApiKeyRepository::emit_clock_events`](crate::store::ApiKeyRepository::emit_clock_events).
    pub(super) async fn clock_events(
        &self,
        now: DateTime<Utc>,
        notice: Duration,
    ) -> Result<u64, StoreError> {
        let notice = TimeDelta::from_std(notice).unwrap_or(TimeDelta::MAX);
        let horizon = now
            .checked_add_signed(notice)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let not_revoked = Expr::cust("(status IS NULL OR status <> 'revoked')");
        let keys: Vec<ApiKeyRecord> = crate::store::entity::find(self.backend())
            .filter(not_revoked)
            .filter(Column::ExpiresAt.gt(now - EXPIRED_LOOKBACK))
            .filter(Column::ExpiresAt.lte(horizon))
            .all(&self.conn())
            .await
            .map_err(database)?
            .into_iter()
            .map(ApiKeyRecord::from)
            .collect();
        let mut written = 0;
        for key in &keys {
            let Some((event_id, event_type)) = clock_event(key, now, notice) else {
                continue;
            };
            let sent = self
                .conn()
                .query_one_raw(statement(
                    self.backend(),
                    &format!("SELECT 1 FROM {OUTBOX_TABLE} WHERE event_id = ?"),
                    vec![event_id.clone().into()],
                ))
                .await
                .map_err(database)?
                .is_some();
            if sent {
                continue;
            }
            let row = event_with_id(event_id, now, event_type, key, None);
            match self.conn().execute(&event_insert(row)).await {
                Ok(_) => written += 1,
                // Another replica wrote it first.
                Err(err) if is_unique_violation(&err) => {}
                Err(err) => return Err(database(err)),
            }
        }
        Ok(written)
    }
}

/// An error text as stored: at most 255 characters.
fn clip(text: String) -> String {
    text.chars().take(255).collect()
}
