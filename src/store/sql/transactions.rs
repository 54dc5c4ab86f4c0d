// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The store's multi-statement transactions: the inserts within the
//! per-account limit and the rotation, each run again after a deadlock.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QuerySelect,
    Statement, Value, sea_query::Expr,
};
use uuid::Uuid;

use super::{SeaOrmRepository, database, is_unique_violation, statements::insert_statement};
use crate::audit::{ChangeRecord, journal::Change};
use crate::store::entity::{self, Column, Entity};
use crate::store::{ApiKeyRecord, KeyStatus, OldKeyLimit, RotateOutcome, Rotation, StoreError};

impl SeaOrmRepository {
    /// One attempt of [`ApiKeyRepository::insert_within_limit`].
    pub(super) async fn insert_within_limit_once(
        &self,
        records: &[ApiKeyRecord],
        max_keys_per_account: u64,
        change: &ChangeRecord,
    ) -> Result<(), StoreError> {
        let backend = self.backend();
        let transaction = self.conn().begin().await.map_err(database)?;
        if backend == DatabaseBackend::Sqlite {
            // A write first, so that the transaction holds the database's
            // write lock before it counts: no other writer can add a key
            // between the count and the inserts.
            transaction
                .execute_unprepared("UPDATE api_keys SET key_id = key_id WHERE 0 = 1")
                .await
                .map_err(database)?;
        }
        for (account_id, adding) in crate::store::keys_per_account(records) {
            let mut count = Entity::find()
                .select_only()
                .column_as(Expr::cust("COUNT(*)"), "keys")
                .filter(Column::AccountId.eq(account_id));
            match backend {
                // Held to the end of the transaction: the next insert for the
                // account waits here, then counts this one's keys.
                DatabaseBackend::Postgres => {
                    transaction
                        .execute_raw(Statement::from_sql_and_values(
                            backend,
                            "SELECT pg_advisory_xact_lock($1)",
                            [Value::from(account_lock_key(account_id))],
                        ))
                        .await
                        .map_err(database)?;
                }
                // A locking read: it locks the account's index entries (and
                // the gaps between them), which the next insert for the
                // account waits on.
                DatabaseBackend::MySql => count = count.lock_exclusive(),
                _ => {}
            }
            let stored: i64 = count
                .into_tuple()
                .one(&transaction)
                .await
                .map_err(database)?
                .unwrap_or(0);
            if u64::try_from(stored).unwrap_or(0).saturating_add(adding) > max_keys_per_account {
                return Err(StoreError::TooManyKeys {
                    account_id,
                    limit: max_keys_per_account,
                });
            }
        }
        for record in records {
            let statement = insert_statement(backend, record.clone())?;
            match transaction.execute(&statement).await {
                Ok(_) => {}
                // Dropping the transaction rolls every row back.
                Err(err) if is_unique_violation(&err) => return Err(StoreError::Conflict),
                Err(err) => return Err(database(err)),
            }
        }
        let at = chrono::Utc::now();
        for record in records {
            let written = change.journal(Change::Inserted(record), at);
            self.write_journal(&transaction, written)
                .await
                .map_err(database)?;
        }
        transaction.commit().await.map_err(database)
    }

    /// One attempt of [`ApiKeyRepository::rotate`].
    pub(super) async fn rotate_once(
        &self,
        rotation: &Rotation,
        change: &ChangeRecord,
    ) -> Result<RotateOutcome, StoreError> {
        let backend = self.backend();
        let (account_id, old_key_id) = (rotation.account_id, rotation.old_key_id);
        let transaction = self.conn().begin().await.map_err(database)?;
        let read_old = || {
            entity::find(backend)
                .filter(Column::KeyId.eq(old_key_id))
                .filter(Column::AccountId.eq(account_id))
        };
        // Lock the old key's row first, with a write that changes nothing (on
        // SQLite it takes the database's write lock): a concurrent PATCH,
        // revoke or rotation of the key waits for this transaction, or this
        // one for it, and the read below sees the row as it is now, committed
        // changes included. The successor copies *that* row.
        Entity::update_many()
            .col_expr(Column::KeyId, Expr::col(Column::KeyId))
            .filter(Column::KeyId.eq(old_key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&transaction)
            .await
            .map_err(database)?;
        let Some(old) = read_old().one(&transaction).await.map_err(database)? else {
            return Ok(RotateOutcome::NotFound);
        };
        let (limit, successor) = match rotation.plan(&ApiKeyRecord::from(old)) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let update = match limit {
            OldKeyLimit::Revoke => Entity::update_many()
                .col_expr(Column::Status, Expr::cust(KeyStatus::Revoked.sql_literal())),
            OldKeyLimit::ExpireAt(at) => {
                Entity::update_many().col_expr(Column::ExpiresAt, Expr::value(at))
            }
        };
        update
            .filter(Column::KeyId.eq(old_key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&transaction)
            .await
            .map_err(database)?;
        let statement = insert_statement(backend, successor.clone())?;
        match transaction.execute(&statement).await {
            Ok(_) => {}
            // The unique index on `rotated_from`: the key already has a successor.
            // Dropping the transaction rolls the old key's limit back.
            Err(err) if is_unique_violation(&err) => return Ok(RotateOutcome::AlreadyRotated),
            Err(err) => return Err(database(err)),
        }
        let Some(old) = read_old().one(&transaction).await.map_err(database)? else {
            return Ok(RotateOutcome::NotFound);
        };
        let old = ApiKeyRecord::from(old);
        let rotated = Change::Rotated {
            old: &old,
            successor: &successor,
            grace_period: rotation.grace_period,
        };
        self.write_journal(&transaction, change.journal(rotated, chrono::Utc::now()))
            .await
            .map_err(database)?;
        transaction.commit().await.map_err(database)?;
        Ok(RotateOutcome::Rotated {
            old: Box::new(old),
            successor: Box::new(successor),
        })
    }
}

/// How many times a transaction the database rolled back for a deadlock is
/// run (the store timeout bounds them all).
pub(super) const DEADLOCK_ATTEMPTS: u64 = 20;

/// The pause before attempt `attempt + 1` of a deadlocked transaction: a few
/// milliseconds at random, growing with the attempts, so that the
/// transactions rolled back do not meet again.
pub(super) async fn retry_pause(attempt: u64) {
    let ceiling = 5 * Ord::min(attempt, 10);
    let jitter = u64::from(getrandom::u32().unwrap_or(0)) % ceiling;
    tokio::time::sleep(std::time::Duration::from_millis(1 + jitter)).await;
}

/// The PostgreSQL advisory lock that serializes the inserts of one account's
/// keys: a 64-bit key made from the account id (a collision only makes two
/// accounts wait on each other).
fn account_lock_key(account_id: Uuid) -> i64 {
    let bits = account_id.as_u128();
    i64::from_ne_bytes(((bits >> 64) as u64 ^ bits as u64).to_ne_bytes())
}

/// Whether a database error is a deadlock or serialization failure that the
/// database resolved by rolling the transaction back (MySQL 1213, SQLSTATE
/// 40001 / 40P01): the transaction may simply be run again.
pub(super) fn is_deadlock(err: &(dyn std::error::Error + 'static)) -> bool {
    let text = err.to_string();
    text.contains("1213")
        || text.contains("40001")
        || text.contains("40P01")
        || text.contains("Deadlock found")
}
