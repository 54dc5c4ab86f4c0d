// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! [`ApiKeyRepository`] for [`SeaOrmRepository`].

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement, Value,
    sea_query::{Expr, ExprTrait, NullOrdering, Order},
};
use uuid::Uuid;

#[cfg(feature = "postgres")]
use super::statements::POSTGRES_LAST_USED;
use super::{
    SeaOrmRepository,
    columns::{json_value, limit_column},
    database, is_unique_violation,
    statements::{
        REWRITE_CHUNK, insert_statement, last_used_statement, merge_usage, rewrite_statement,
        still_valid, usage_statement,
    },
    transactions::{DEADLOCK_ATTEMPTS, is_deadlock, retry_pause},
};
use crate::audit::{AuditEntry, AuditQuery, ChangeRecord, journal::Change};
use crate::events::{OutboxEvent, Settle};
use crate::policy::{AllowedNetworks, Metadata, Scopes};
#[cfg(feature = "postgres")]
use crate::store::conn::{Pool, PoolMode};
use crate::store::entity::{self, Column, Entity};
use crate::store::{
    ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, KeyStatus, LAST_USED_CHUNK,
    PepperCount, Pruned, RotateOutcome, Rotation, StoreError, USAGE_CHUNK, UsageCount,
};

impl ApiKeyRepository for SeaOrmRepository {
    async fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.lookup(public_key).await
    }

    async fn insert(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        let statement = insert_statement(self.backend(), record)?;
        match self.conn().execute(&statement).await {
            Ok(_) => Ok(()),
            Err(err) if is_unique_violation(&err) => Err(StoreError::Conflict),
            Err(err) => Err(database(err)),
        }
    }

    async fn insert_many(&self, records: Vec<ApiKeyRecord>) -> Result<(), StoreError> {
        let backend = self.backend();
        let transaction = self.conn().begin().await.map_err(database)?;
        for record in records {
            let statement = insert_statement(backend, record)?;
            match transaction.execute(&statement).await {
                Ok(_) => {}
                // Dropping the transaction rolls every row back.
                Err(err) if is_unique_violation(&err) => return Err(StoreError::Conflict),
                Err(err) => return Err(database(err)),
            }
        }
        transaction.commit().await.map_err(database)
    }

    async fn insert_within_limit(
        &self,
        records: Vec<ApiKeyRecord>,
        max_keys_per_account: u64,
        change: &ChangeRecord,
    ) -> Result<(), StoreError> {
        // Two creates for one new account can deadlock on MySQL/MariaDB (each
        // holds the gap lock of its locking read, each insert waits on the
        // other's): the database rolls one back, and running it again gives
        // the answer it would have had in turn, as for a rotation.
        let mut attempt = 1;
        loop {
            match self
                .insert_within_limit_once(&records, max_keys_per_account, change)
                .await
            {
                Err(StoreError::Database(err))
                    if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&*err) =>
                {
                    retry_pause(attempt).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn list_by_account(&self, account_id: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
        entity::find(self.backend())
            .filter(Column::AccountId.eq(account_id))
            .order_by_with_nulls(Column::CreatedAt, Order::Desc, NullOrdering::Last)
            .all(&self.conn())
            .await
            .map(|rows| rows.into_iter().map(ApiKeyRecord::from).collect())
            .map_err(database)
    }

    async fn get(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.get_in(&self.conn(), account_id, key_id).await
    }

    async fn revoke(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let transaction = self.conn().begin().await.map_err(database)?;
        let revoked = Entity::update_many()
            .col_expr(Column::Status, Expr::cust(KeyStatus::Revoked.sql_literal()))
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .filter(not_revoked())
            .exec(&transaction)
            .await
            .map_err(database)?;
        let record = self.get_in(&transaction, account_id, key_id).await?;
        if let Some(record) = record.as_ref().filter(|_| revoked.rows_affected > 0) {
            let written = change.journal(Change::Revoked(record), Utc::now());
            self.write_journal(&transaction, written)
                .await
                .map_err(database)?;
        }
        transaction.commit().await.map_err(database)?;
        Ok(record)
    }

    async fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let transaction = self.conn().begin().await.map_err(database)?;
        if self
            .get_in(&transaction, account_id, key_id)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        if !changes.is_empty() {
            let backend = self.backend();
            let mut update = Entity::update_many();
            if let Some(title) = &changes.title {
                update = update.col_expr(Column::Title, Expr::value(title.clone()));
            }
            if let Some(description) = &changes.description {
                update = update.col_expr(Column::Description, Expr::value(description.clone()));
            }
            if let Some(scopes) = &changes.scopes {
                let json = scopes.as_ref().map(Scopes::to_json);
                update = update.col_expr(Column::Scopes, json_value(backend, json));
            }
            if let Some(metadata) = &changes.metadata {
                let json = metadata.as_ref().map(Metadata::to_json);
                update = update.col_expr(Column::Metadata, json_value(backend, json));
            }
            if let Some(rate_limit) = changes.rate_limit {
                let requests = rate_limit.map(|limit| limit_column(limit.requests()));
                let period = rate_limit.map(|limit| limit_column(limit.period_seconds()));
                update = update
                    .col_expr(Column::RateLimitRequests, Expr::value(requests))
                    .col_expr(Column::RateLimitPeriodSeconds, Expr::value(period));
            }
            if let Some(allowed_cidrs) = &changes.allowed_cidrs {
                let json = allowed_cidrs.as_ref().map(AllowedNetworks::to_json);
                update = update.col_expr(Column::AllowedCidrs, json_value(backend, json));
            }
            update
                .filter(Column::KeyId.eq(key_id))
                .filter(Column::AccountId.eq(account_id))
                .exec(&transaction)
                .await
                .map_err(database)?;
        }
        let record = self.get_in(&transaction, account_id, key_id).await?;
        if let Some(record) = &record {
            let written = change.journal(Change::Updated(record, changes), Utc::now());
            self.write_journal(&transaction, written)
                .await
                .map_err(database)?;
        }
        transaction.commit().await.map_err(database)?;
        Ok(record)
    }

    async fn rotate(
        &self,
        rotation: Rotation,
        change: &ChangeRecord,
    ) -> Result<RotateOutcome, StoreError> {
        // Concurrent rotations can deadlock on MySQL/MariaDB (the successor's
        // insert waits on index gaps another transaction locked): the
        // database rolls one back, and
        // running it again gives the answer it would have had in turn. Every
        // deadlock lets one rotation through, so a few contenders need a few
        // rounds; with 8 at once a fifth attempt was seen about once in 2,000
        // rotations. The retries are spread at random so that the rolled-back
        // ones do not meet again; the store timeout bounds them all.
        let mut attempt = 1;
        loop {
            match self.rotate_once(&rotation, change).await {
                Err(StoreError::Database(err))
                    if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&*err) =>
                {
                    retry_pause(attempt).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    async fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        change: &ChangeRecord,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let transaction = self.conn().begin().await.map_err(database)?;
        let Some(record) = self.get_in(&transaction, account_id, key_id).await? else {
            return Ok(None);
        };
        let result = Entity::delete_many()
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&transaction)
            .await
            .map_err(database)?;
        if result.rows_affected == 0 {
            return Ok(None);
        }
        let written = change.journal(Change::Deleted(&record), Utc::now());
        self.write_journal(&transaction, written)
            .await
            .map_err(database)?;
        transaction.commit().await.map_err(database)?;
        Ok(Some(record))
    }

    async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_rows(query).await
    }

    async fn claim_events(
        &self,
        now: DateTime<Utc>,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        self.claim(now, lease, limit).await
    }

    async fn settle_event(&self, id: i64, outcome: Settle) -> Result<(), StoreError> {
        self.settle(id, outcome).await
    }

    async fn failed_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        self.failed(limit).await
    }

    async fn retry_failed(&self, event_id: Option<&str>) -> Result<u64, StoreError> {
        self.retry(event_id).await
    }

    async fn emit_clock_events(
        &self,
        now: DateTime<Utc>,
        notice: std::time::Duration,
    ) -> Result<u64, StoreError> {
        self.clock_events(now, notice).await
    }

    async fn prune(
        &self,
        audit_before: DateTime<Utc>,
        usage_before: NaiveDate,
        every: std::time::Duration,
    ) -> Result<Option<Pruned>, StoreError> {
        self.prune_rows(audit_before, usage_before, every).await
    }

    async fn rewrite_hashes(&self, batch: &[HashRewrite]) -> Result<(), StoreError> {
        let backend = self.backend();
        for chunk in batch.chunks(REWRITE_CHUNK) {
            self.conn()
                .execute_raw(rewrite_statement(backend, chunk))
                .await
                .map_err(database)?;
        }
        Ok(())
    }

    async fn record_usage(&self, batch: &[UsageCount]) -> Result<(), StoreError> {
        let backend = self.backend();
        for chunk in merge_usage(batch).chunks(USAGE_CHUNK) {
            // One statement, committed on its own: a deadlock (two replicas
            // upserting the same rows on MySQL) rolled all of it back, so it
            // can simply run again.
            let mut attempt = 1;
            loop {
                match self
                    .conn()
                    .execute_raw(usage_statement(backend, chunk))
                    .await
                {
                    Ok(_) => break,
                    Err(err) if attempt < 3 && is_deadlock(&err) => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                    }
                    Err(err) => return Err(database(err)),
                }
            }
        }
        Ok(())
    }

    async fn usage(
        &self,
        key_id: Uuid,
        since: NaiveDate,
    ) -> Result<Vec<(NaiveDate, u64)>, StoreError> {
        let backend = self.backend();
        let sql = if backend == DatabaseBackend::Postgres {
            "SELECT day, requests FROM tower_api_keys_usage \
             WHERE key_id = $1 AND day >= $2 ORDER BY day DESC"
        } else {
            "SELECT day, requests FROM tower_api_keys_usage \
             WHERE key_id = ? AND day >= ? ORDER BY day DESC"
        };
        let rows = self
            .conn()
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [Value::from(key_id), Value::from(since)],
            ))
            .await
            .map_err(database)?;
        rows.iter()
            .map(|row| {
                let day: NaiveDate = row.try_get("", "day")?;
                let requests: i64 = row.try_get("", "requests")?;
                Ok((day, u64::try_from(requests).unwrap_or(0)))
            })
            .collect::<Result<_, DbErr>>()
            .map_err(database)
    }

    async fn count_by_pepper(&self) -> Result<Vec<PepperCount>, StoreError> {
        let rows: Vec<(Option<String>, i64)> = Entity::find()
            .select_only()
            .column(Column::PepperId)
            .column_as(Expr::cust("COUNT(*)"), "keys")
            .filter(still_valid(Utc::now()))
            .group_by(Column::PepperId)
            .into_tuple()
            .all(&self.conn())
            .await
            .map_err(database)?;
        Ok(rows
            .into_iter()
            .map(|(pepper_id, keys)| PepperCount {
                pepper_id,
                keys: u64::try_from(keys).unwrap_or(0),
            })
            .collect())
    }

    async fn revoke_by_pepper(
        &self,
        pepper_id: &str,
        include_legacy: bool,
        change: &ChangeRecord,
    ) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut names = Column::PepperId.eq(pepper_id);
        if include_legacy {
            names = names.or(Column::PepperId.is_null());
        }
        let transaction = self.conn().begin().await.map_err(database)?;
        let keys: Vec<(Uuid, Uuid)> = Entity::find()
            .select_only()
            .column(Column::AccountId)
            .column(Column::KeyId)
            .filter(still_valid(now))
            .filter(names)
            .into_tuple()
            .all(&transaction)
            .await
            .map_err(database)?;
        // One key at a time, each with its audit row and event, all in one
        // transaction: a key another writer revoked meanwhile is skipped.
        let mut revoked = 0;
        for (account_id, key_id) in keys {
            let done = Entity::update_many()
                .col_expr(Column::Status, Expr::cust(KeyStatus::Revoked.sql_literal()))
                .filter(Column::KeyId.eq(key_id))
                .filter(still_valid(now))
                .exec(&transaction)
                .await
                .map_err(database)?;
            if done.rows_affected == 0 {
                continue;
            }
            if let Some(record) = self.get_in(&transaction, account_id, key_id).await? {
                let written = change.journal(Change::Revoked(&record), now);
                self.write_journal(&transaction, written)
                    .await
                    .map_err(database)?;
            }
            revoked += 1;
        }
        transaction.commit().await.map_err(database)?;
        Ok(revoked)
    }

    fn change_source(&self) -> Option<crate::store::feed::ChangeSource> {
        self.feed_source()
    }

    async fn record_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        let backend = self.backend();
        // In key order: each statement then reads a narrow range of the primary
        // key's index (on MySQL the table itself), not pages all over it.
        let mut batch = batch.to_vec();
        batch.sort_unstable_by_key(|(key_id, _)| *key_id);
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            // Array binds need a prepared statement: not through a
            // transaction-mode pooler, where the text form below runs inline.
            #[cfg(feature = "postgres")]
            if let (Some(Pool::Postgres(pool)), PoolMode::Session) = (&self.pool, self.mode) {
                let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = chunk.iter().copied().unzip();
                sea_orm::sqlx::query(POSTGRES_LAST_USED)
                    .bind(ids)
                    .bind(times)
                    .execute(pool)
                    .await
                    .map_err(|err| StoreError::Database(Box::new(err)))?;
                continue;
            }
            self.conn()
                .execute_raw(last_used_statement(backend, chunk))
                .await
                .map_err(database)?;
        }
        Ok(())
    }
}

impl SeaOrmRepository {
    /// One key of the account, read on `db` (a transaction's, say).
    async fn get_in(
        &self,
        db: &impl ConnectionTrait,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        entity::find(self.backend())
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .one(db)
            .await
            .map(|row| row.map(ApiKeyRecord::from))
            .map_err(database)
    }
}

/// Rows whose status is not `revoked` (NULL reads as `active`).
fn not_revoked() -> sea_orm::sea_query::SimpleExpr {
    Column::Status
        .is_null()
        .or(Expr::col(Column::Status).ne(Expr::cust(KeyStatus::Revoked.sql_literal())))
}
