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

use uuid::Uuid;

use crate::policy::{AllowedNetworks, Metadata, Scopes};
use crate::ratelimit::RateLimit;
use crate::store::entity::Model;
use crate::store::{ApiKeyRecord, KeyStatus};

/// Decodes one `api_keys` row read by the lookup's `select_by_public_key!`,
/// through sqlx (the row type of any of its drivers).
macro_rules! record_from_row {
    ($row:expr) => {{
        use sea_orm::sqlx::Row;
        use $crate::store::{
            ApiKeyRecord, KeyStatus, StoreError, StoredHash, sql::columns::StoredPolicy,
        };
        let row = $row;
        (|| -> Result<ApiKeyRecord, sea_orm::sqlx::Error> {
            let key_id = row.try_get("key_id")?;
            let policy = StoredPolicy::from_columns(
                key_id,
                row.try_get("scopes")?,
                row.try_get("metadata")?,
                row.try_get("rate_limit_requests")?,
                row.try_get("rate_limit_period_seconds")?,
                row.try_get("allowed_cidrs")?,
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
                allowed_cidrs: policy.allowed_cidrs,
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
            model.allowed_cidrs,
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
            allowed_cidrs: policy.allowed_cidrs,
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

/// The `status` column.
impl KeyStatus {
    /// The value as an untyped SQL string literal, inlined in statements: PostgreSQL
    /// casts such a literal to the column's type, a text column and the reference
    /// service's ENUM `api_key_status` alike, where a bound text parameter fails.
    pub(super) const fn sql_literal(self) -> &'static str {
        match self {
            Self::Active => "'active'",
            Self::Revoked => "'revoked'",
            Self::Expired => "'expired'",
        }
    }

    /// Reads the `status` column: NULL is `active` (the reference service's
    /// default), and a value other than `active`, `revoked` or `expired` is treated
    /// as revoked, so that it fails closed.
    pub(super) fn from_column(value: Option<&str>) -> Self {
        match value {
            None | Some("active") => Self::Active,
            Some("expired") => Self::Expired,
            Some(_) => Self::Revoked,
        }
    }
}

/// The policy columns of a row (`scopes`, `metadata`, the rate limit,
/// `allowed_cidrs`), read.
pub(super) struct StoredPolicy {
    pub(super) scopes: Option<Scopes>,
    pub(super) metadata: Option<Metadata>,
    pub(super) rate_limit: Option<RateLimit>,
    pub(super) allowed_cidrs: Option<AllowedNetworks>,
    /// Whether every stored value is one the crate would accept on input.
    in_bounds: bool,
}

impl StoredPolicy {
    /// Reads the columns. JSON `null` reads as SQL NULL. A value the crate
    /// would refuse on input (scopes that are not a valid list, metadata that
    /// is not a valid object, a rate limit out of bounds or half set, an
    /// allowlist that is not a valid list of networks) fails
    /// closed: see [`status`](Self::status); a warning names the key (never
    /// the value).
    pub(super) fn from_columns(
        key_id: Uuid,
        scopes: Option<String>,
        metadata: Option<String>,
        requests: Option<i32>,
        period_seconds: Option<i32>,
        allowed_cidrs: Option<String>,
    ) -> Self {
        let mut in_bounds = true;
        let mut refuse = |what: &str| {
            tracing::warn!(%key_id, "stored {what}; the key is refused until it is corrected");
            in_bounds = false;
        };
        let scopes = json_column(scopes).and_then(|json| {
            let scopes = Scopes::from_stored(&json);
            if scopes.is_none() {
                refuse("scopes are not a valid list of scopes");
            }
            scopes
        });
        let metadata = json_column(metadata).and_then(|json| {
            let metadata = Metadata::from_stored(&json);
            if metadata.is_none() {
                refuse("metadata is not a valid metadata object");
            }
            metadata
        });
        let rate_limit = match (requests, period_seconds) {
            (None, None) => None,
            (Some(requests), Some(period)) => {
                let limit = u32::try_from(requests)
                    .ok()
                    .zip(u32::try_from(period).ok())
                    .and_then(|(requests, period)| RateLimit::new(requests, period).ok());
                if limit.is_none() {
                    refuse("rate limit is out of bounds");
                }
                limit
            }
            _ => {
                refuse("rate limit has only one of its two columns set");
                None
            }
        };
        let allowed_cidrs = json_column(allowed_cidrs).and_then(|json| {
            let networks = AllowedNetworks::from_stored(&json);
            if networks.is_none() {
                refuse("allowed_cidrs is not a valid list of networks");
            }
            networks
        });
        Self {
            scopes,
            metadata,
            rate_limit,
            allowed_cidrs,
            in_bounds,
        }
    }

    /// The key's status as validation must see it: `stored`, or
    /// [`KeyStatus::Revoked`] when a policy value is out of bounds, so that
    /// the key is refused (as an unknown stored status is) rather than let
    /// through with less policy than its row names.
    pub(super) fn status(&self, stored: KeyStatus) -> KeyStatus {
        if self.in_bounds {
            stored
        } else {
            KeyStatus::Revoked
        }
    }
}

/// A JSON column's text; JSON `null` reads as SQL NULL.
fn json_column(json: Option<String>) -> Option<String> {
    json.filter(|json| json.trim() != "null")
}
