// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The statements built by hand: the insert of a key and the writer's
//! batched updates and upserts.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, DatabaseBackend, Statement, Value,
    sea_query::{Expr, ExprTrait, Query},
};
use uuid::Uuid;

use super::columns::{json_value, limit_column};
use crate::policy::{AllowedNetworks, Metadata, Scopes};
use crate::store::entity::{Column, Entity};
use crate::store::{ApiKeyRecord, HashRewrite, StoreError, UsageCount};

/// The `INSERT` of one key. Built by hand rather than from an `ActiveModel`:
/// `status` goes in as an SQL literal, which an adopted table's ENUM column
/// accepts, and the JSON columns need a cast on PostgreSQL.
pub(super) fn insert_statement(
    backend: DatabaseBackend,
    record: ApiKeyRecord,
) -> Result<sea_orm::sea_query::InsertStatement, StoreError> {
    let mut statement = Query::insert();
    statement
        .into_table(Entity)
        .columns([
            Column::KeyId,
            Column::PublicKey,
            Column::SecretKeyHash,
            Column::AccountId,
            Column::Title,
            Column::Description,
            Column::Status,
            Column::ExpiresAt,
            Column::LastUsedAt,
            Column::CreatedAt,
            Column::PepperId,
            Column::Scopes,
            Column::Metadata,
            Column::RotatedFrom,
            Column::RateLimitRequests,
            Column::RateLimitPeriodSeconds,
            Column::AllowedCidrs,
        ])
        .values([
            Expr::value(record.key_id),
            Expr::value(record.public_key),
            Expr::value(record.secret_key_hash),
            Expr::value(record.account_id),
            Expr::value(record.title),
            Expr::value(record.description),
            Expr::cust(record.status.sql_literal()),
            Expr::value(record.expires_at),
            Expr::value(record.last_used_at),
            Expr::value(record.created_at),
            Expr::value(record.pepper_id),
            json_value(backend, record.scopes.as_ref().map(Scopes::to_json)),
            json_value(backend, record.metadata.as_ref().map(Metadata::to_json)),
            Expr::value(record.rotated_from),
            Expr::value(
                record
                    .rate_limit
                    .map(|limit| limit_column(limit.requests())),
            ),
            Expr::value(
                record
                    .rate_limit
                    .map(|limit| limit_column(limit.period_seconds())),
            ),
            json_value(
                backend,
                record.allowed_cidrs.as_ref().map(AllowedNetworks::to_json),
            ),
        ])
        .map_err(|err| StoreError::Database(Box::new(err)))?;
    Ok(statement)
}

/// `last_used_at` on PostgreSQL: the pairs as two arrays, joined by `UNNEST`.
pub(super) const POSTGRES_LAST_USED: &str = "UPDATE api_keys AS k SET last_used_at = v.used_at \
     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(key_id, used_at) \
     WHERE k.key_id = v.key_id AND (k.last_used_at IS NULL OR k.last_used_at < v.used_at)";

/// `UPDATE … last_used_at` for one chunk of pairs, joined against the pairs so
/// that its cost is linear in them; it writes only where `last_used_at` moves
/// forward. UUIDs and timestamps are bound as SeaORM binds them everywhere else
/// (SQLite: 16-byte blobs and RFC 3339 text; MySQL: `binary(16)` and
/// `datetime(6)`; PostgreSQL: `uuid` and `timestamptz`).
pub(super) fn last_used_statement(
    backend: DatabaseBackend,
    chunk: &[(Uuid, DateTime<Utc>)],
) -> Statement {
    use std::fmt::Write as _;
    match backend {
        DatabaseBackend::Postgres => {
            // The sqlx pool binds the arrays natively (`POSTGRES_LAST_USED`); this
            // path, for other PostgreSQL connections, passes them as text array
            // literals: SeaORM has array values only with its `sqlx-postgres` feature.
            let mut ids = String::with_capacity(2 + chunk.len() * 37);
            let mut times = String::with_capacity(2 + chunk.len() * 28);
            for (index, (key_id, used_at)) in chunk.iter().enumerate() {
                let separator = if index == 0 { '{' } else { ',' };
                ids.push(separator);
                times.push(separator);
                let _ = write!(ids, "{}", key_id.hyphenated());
                let _ = write!(times, "{}", used_at.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            }
            if chunk.is_empty() {
                ids.push('{');
                times.push('{');
            }
            ids.push('}');
            times.push('}');
            Statement::from_sql_and_values(
                backend,
                POSTGRES_LAST_USED
                    .replace("$1::", "$1::text::")
                    .replace("$2::", "$2::text::"),
                [Value::from(ids), Value::from(times)],
            )
        }
        DatabaseBackend::MySql => {
            // A derived table of the pairs (MySQL 8 and MariaDB spell VALUES rows
            // differently; UNION ALL is read by both). The casts fix the derived
            // columns' types so that the join uses the primary key.
            let mut sql = String::with_capacity(160 + chunk.len() * 64);
            sql.push_str("UPDATE api_keys AS k JOIN (");
            for index in 0..chunk.len() {
                if index > 0 {
                    sql.push_str(" UNION ALL ");
                }
                sql.push_str(
                    "SELECT CAST(? AS BINARY(16)) AS key_id, CAST(? AS DATETIME(6)) AS used_at",
                );
            }
            sql.push_str(
                ") AS v ON k.key_id = v.key_id SET k.last_used_at = v.used_at \
                 WHERE k.last_used_at IS NULL OR k.last_used_at < v.used_at",
            );
            Statement::from_sql_and_values(backend, sql, pair_values(chunk))
        }
        // SQLite (a backend SeaORM may add later gets an error from its database).
        _ => {
            // UPDATE … FROM needs SQLite 3.33. Timestamps are RFC 3339 text: compared
            // through julianday(), so that text written by another program in another
            // RFC 3339 spelling compares by time too; a stored value that is not a
            // time at all is overwritten.
            let mut sql = String::with_capacity(200 + chunk.len() * 8);
            sql.push_str("WITH v(key_id, used_at) AS (VALUES ");
            for index in 0..chunk.len() {
                if index > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?)");
            }
            sql.push_str(
                ") UPDATE api_keys SET last_used_at = v.used_at FROM v \
                 WHERE api_keys.key_id = v.key_id AND (api_keys.last_used_at IS NULL \
                 OR julianday(api_keys.last_used_at) IS NULL \
                 OR julianday(api_keys.last_used_at) < julianday(v.used_at))",
            );
            Statement::from_sql_and_values(backend, sql, pair_values(chunk))
        }
    }
}

/// Most re-hashes written by one statement (four bound values each).
pub(super) const REWRITE_CHUNK: usize = 2_000;

/// `UPDATE … secret_key_hash, pepper_id` for one chunk of re-hashes, joined
/// against a table of the rewrites (linear in them, as [`last_used_statement`]),
/// only where the row still holds the old hash.
pub(super) fn rewrite_statement(backend: DatabaseBackend, chunk: &[HashRewrite]) -> Statement {
    let mut values = Vec::with_capacity(chunk.len() * 4);
    for rewrite in chunk {
        values.push(Value::from(rewrite.key_id));
        values.push(Value::from(rewrite.old_hash.as_str()));
        values.push(Value::from(rewrite.new_hash.as_str()));
        values.push(Value::from(rewrite.pepper_id.as_str()));
    }
    let mut sql = String::with_capacity(200 + chunk.len() * 48);
    match backend {
        DatabaseBackend::Postgres => {
            sql.push_str(
                "UPDATE api_keys AS k SET secret_key_hash = v.new_hash, pepper_id = v.pepper_id \
                 FROM (VALUES ",
            );
            for index in 0..chunk.len() {
                let n = index * 4;
                if index > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "(${}::uuid, ${}::text, ${}::text, ${}::text)",
                    n + 1,
                    n + 2,
                    n + 3,
                    n + 4
                ));
            }
            sql.push_str(
                ") AS v(key_id, old_hash, new_hash, pepper_id) \
                 WHERE k.key_id = v.key_id AND k.secret_key_hash = v.old_hash",
            );
        }
        DatabaseBackend::MySql => {
            sql.push_str("UPDATE api_keys AS k JOIN (");
            for index in 0..chunk.len() {
                if index > 0 {
                    sql.push_str(" UNION ALL ");
                }
                sql.push_str(
                    "SELECT CAST(? AS BINARY(16)) AS key_id, ? AS old_hash, ? AS new_hash, \
                     ? AS pepper_id",
                );
            }
            sql.push_str(
                ") AS v ON k.key_id = v.key_id \
                 SET k.secret_key_hash = v.new_hash, k.pepper_id = v.pepper_id \
                 WHERE BINARY k.secret_key_hash = BINARY v.old_hash",
            );
        }
        _ => {
            sql.push_str("WITH v(key_id, old_hash, new_hash, pepper_id) AS (VALUES ");
            for index in 0..chunk.len() {
                if index > 0 {
                    sql.push(',');
                }
                sql.push_str("(?, ?, ?, ?)");
            }
            sql.push_str(
                ") UPDATE api_keys SET secret_key_hash = v.new_hash, pepper_id = v.pepper_id \
                 FROM v WHERE api_keys.key_id = v.key_id \
                 AND api_keys.secret_key_hash = v.old_hash",
            );
        }
    }
    Statement::from_sql_and_values(backend, sql, values)
}

/// The upsert of one chunk of usage counts into `tower_api_keys_usage` (one
/// multi-row statement; the chunk names each key and day once): a new row for
/// a key and day not yet counted, else the count added to the stored one, so
/// that concurrent replicas add up. Bound as SeaORM binds elsewhere (SQLite:
/// 16-byte blobs and `YYYY-MM-DD` text; MySQL: `binary(16)` and `date`;
/// PostgreSQL: `uuid` and `date`).
pub(super) fn usage_statement(backend: DatabaseBackend, chunk: &[UsageCount]) -> Statement {
    use std::fmt::Write as _;
    let mut values = Vec::with_capacity(chunk.len() * 3);
    for count in chunk {
        values.push(Value::from(count.key_id));
        values.push(Value::from(count.day));
        values.push(Value::from(
            i64::try_from(count.requests).unwrap_or(i64::MAX),
        ));
    }
    let mut sql = String::with_capacity(160 + chunk.len() * 24);
    sql.push_str("INSERT INTO tower_api_keys_usage (key_id, day, requests) VALUES ");
    for index in 0..chunk.len() {
        if index > 0 {
            sql.push(',');
        }
        if backend == DatabaseBackend::Postgres {
            let n = index * 3;
            let _ = write!(sql, "(${}, ${}, ${})", n + 1, n + 2, n + 3);
        } else {
            sql.push_str("(?, ?, ?)");
        }
    }
    sql.push_str(match backend {
        DatabaseBackend::Postgres => {
            " ON CONFLICT (key_id, day) DO UPDATE \
             SET requests = tower_api_keys_usage.requests + EXCLUDED.requests"
        }
        // `VALUES()` is what MariaDB reads (MySQL 8 still accepts it).
        DatabaseBackend::MySql => " ON DUPLICATE KEY UPDATE requests = requests + VALUES(requests)",
        _ => " ON CONFLICT(key_id, day) DO UPDATE SET requests = requests + excluded.requests",
    });
    Statement::from_sql_and_values(backend, sql, values)
}

/// Keys that can still validate: an active (or NULL) `status` and no
/// `expires_at` in the past. The status is compared with a literal, which an
/// adopted table's ENUM column accepts.
pub(super) fn still_valid(now: DateTime<Utc>) -> Expr {
    Expr::cust("(status IS NULL OR status = 'active')")
        .and(Column::ExpiresAt.is_null().or(Column::ExpiresAt.gt(now)))
}

fn pair_values(chunk: &[(Uuid, DateTime<Utc>)]) -> Vec<Value> {
    chunk
        .iter()
        .flat_map(|(key_id, used_at)| [Value::from(*key_id), Value::from(*used_at)])
        .collect()
}

/// Sums the counts of equal `(key_id, day)` pairs, in key and day order: one
/// upsert may not name a row twice (PostgreSQL refuses it), and a fixed order
/// keeps concurrent writers from locking rows in opposite orders.
pub(super) fn merge_usage(batch: &[UsageCount]) -> Vec<UsageCount> {
    let mut merged: std::collections::BTreeMap<(Uuid, NaiveDate), u64> =
        std::collections::BTreeMap::new();
    for count in batch {
        let slot = merged.entry((count.key_id, count.day)).or_default();
        *slot = slot.saturating_add(count.requests);
    }
    merged
        .into_iter()
        .map(|((key_id, day), requests)| UsageCount {
            key_id,
            day,
            requests,
        })
        .collect()
}
