// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! How the `api_keys` columns are read into an [`ApiKeyRecord`] and written
//! from one.

use sea_orm::{
    DatabaseBackend,
    sea_query::{Expr, ExprTrait},
};

use crate::entity::Model;
use crate::store::{ApiKeyRecord, KeyStatus, StoredPolicy};

/// Decodes one `api_keys` row read by the lookup's `select_by_public_key!`,
/// through sqlx (the row type of any of its drivers).
macro_rules! record_from_row {
    ($row:expr) => {{
        use sea_orm::sqlx::Row;
        use $crate::store::{ApiKeyRecord, KeyStatus, StoreError, StoredHash, StoredPolicy};
        let row = $row;
        (|| -> Result<ApiKeyRecord, sea_orm::sqlx::Error> {
            let key_id = row.try_get("key_id")?;
            let policy = StoredPolicy::from_columns(
                key_id,
                row.try_get("scopes")?,
                row.try_get("metadata")?,
                row.try_get("rate_limit_requests")?,
                row.try_get("rate_limit_period_seconds")?,
            );
            Ok(ApiKeyRecord {
                key_id,
                public_key: row.try_get("public_key")?,
                secret_key_hash: StoredHash::new(row.try_get::<String, _>("secret_key_hash")?),
                account_id: row.try_get("account_id")?,
                title: row.try_get("title")?,
                description: row.try_get("description")?,
                status: policy.status(KeyStatus::from_column(
                    row.try_get::<Option<&str>, _>("status")?,
                )),
                expires_at: row.try_get("expires_at")?,
                last_used_at: row.try_get("last_used_at")?,
                created_at: row.try_get("created_at")?,
                pepper_id: row.try_get("pepper_id")?,
                scopes: policy.scopes,
                metadata: policy.metadata,
                rotated_from: row.try_get("rotated_from")?,
                rate_limit: policy.rate_limit,
            })
        })()
        .map_err(|err| StoreError::Database(Box::new(err)))
    }};
}
pub(super) use record_from_row;

impl From<Model> for ApiKeyRecord {
    fn from(model: Model) -> Self {
        let policy = StoredPolicy::from_columns(
            model.key_id,
            model.scopes,
            model.metadata,
            model.rate_limit_requests,
            model.rate_limit_period_seconds,
        );
        Self {
            key_id: model.key_id,
            status: policy.status(KeyStatus::from_column(model.status.as_deref())),
            public_key: model.public_key,
            secret_key_hash: model.secret_key_hash,
            account_id: model.account_id,
            title: model.title,
            description: model.description,
            expires_at: model.expires_at,
            last_used_at: model.last_used_at,
            created_at: model.created_at,
            pepper_id: model.pepper_id,
            scopes: policy.scopes,
            metadata: policy.metadata,
            rotated_from: model.rotated_from,
            rate_limit: policy.rate_limit,
        }
    }
}

/// A JSON value for a `scopes` or `metadata` column: bound as text, cast to
/// `jsonb` on PostgreSQL (MySQL and SQLite take the text as it is).
pub(super) fn json_value(backend: DatabaseBackend, json: Option<String>) -> Expr {
    let value = Expr::value(json);
    if backend == DatabaseBackend::Postgres {
        value.cast_as("jsonb")
    } else {
        value
    }
}

/// A rate-limit bound as the `integer` column holds it (the bounds fit).
pub(super) fn limit_column(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}
