//! The SeaORM entity for the `api_keys` table.
//!
//! Column names and types follow the reference service (DECISIONS.md, "Storage and migrations"),
//! so rows it wrote are read as they are. Hosts may query this entity directly;
//! the crate itself goes through [`crate::store::SeaOrmRepository`].
//!
//! On a table adopted from the reference service (PostgreSQL), `status` is an
//! ENUM column: plain `Entity::find()` cannot decode it into a `String`. Use
//! [`find`], which reads it as text on every backend. To write `status`, inline
//! the value as an SQL literal (`Expr::cust("'revoked'")`): PostgreSQL casts an
//! untyped literal to an enum or a text column alike, but not a bound text
//! parameter.

use sea_orm::{DatabaseBackend, Iterable, QuerySelect, entity::prelude::*, sea_query::ExprTrait};

pub use super::StoredHash;

/// One row of `api_keys`.
///
/// `status` and `created_at` are nullable: the reference service's table allows
/// NULL in both (a NULL `status` means `active`, its default).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Primary key (UUID v4).
    #[sea_orm(primary_key, auto_increment = false)]
    pub key_id: Uuid,
    /// The public key, `pk_…`; unique.
    #[sea_orm(unique)]
    pub public_key: String,
    /// Lowercase hex HMAC-SHA256 of the secret key under the pepper; `Debug`
    /// prints it redacted.
    pub secret_key_hash: StoredHash,
    /// The owning account.
    pub account_id: Uuid,
    /// Trimmed title, 1–255 characters.
    pub title: String,
    /// Optional description.
    pub description: Option<String>,
    /// `active`, `revoked` or `expired`; `None` (NULL) reads as `active`.
    pub status: Option<String>,
    /// Expiry; `None` for never.
    pub expires_at: Option<DateTimeUtc>,
    /// Last use, written in batches.
    pub last_used_at: Option<DateTimeUtc>,
    /// Creation time; `None` only in rows written by another program.
    pub created_at: Option<DateTimeUtc>,
    /// The id of the pepper that made the hash; `None` for the legacy pepper.
    pub pepper_id: Option<String>,
    /// The key's scopes as JSON text (an array); `None`: unrestricted. The
    /// column is `jsonb` on PostgreSQL and `json` on MySQL: read it with
    /// [`find`], which selects it as text.
    pub scopes: Option<String>,
    /// The key's metadata as JSON text (an object); typed as `scopes`.
    pub metadata: Option<String>,
    /// The key a rotation replaced with this one.
    pub rotated_from: Option<Uuid>,
    /// Rate limit: requests per period (set together with the period).
    pub rate_limit_requests: Option<i32>,
    /// Rate limit: the period in seconds.
    pub rate_limit_period_seconds: Option<i32>,
    /// The networks the key may be used from, as JSON text (an array of
    /// CIDRs); `None`: any address. Typed as `scopes`.
    pub allowed_cidrs: Option<String>,
}

/// `api_keys` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// `Entity::find()` that reads `status` and the JSON columns as text
/// whatever the columns' types: on PostgreSQL it selects them cast to `text`, so
/// that a table adopted from the reference service (where `status` is the ENUM
/// `api_key_status`) and the `jsonb` columns decode; on MySQL the `json`
/// columns are cast to `char`; on SQLite every column is read as it is.
///
/// ```
/// # async fn list(db: &sea_orm::DatabaseConnection) -> Result<(), sea_orm::DbErr> {
/// use sea_orm::{ConnectionTrait, EntityTrait};
/// let rows = tower_api_keys::entity::find(db.get_database_backend()).all(db).await?;
/// # Ok(()) }
/// ```
pub fn find(backend: DatabaseBackend) -> Select<Entity> {
    let cast: &[(&str, &str)] = match backend {
        DatabaseBackend::Postgres => &[
            ("status", "text"),
            ("scopes", "text"),
            ("metadata", "text"),
            ("allowed_cidrs", "text"),
        ],
        DatabaseBackend::MySql => &[
            ("scopes", "char"),
            ("metadata", "char"),
            ("allowed_cidrs", "char"),
        ],
        _ => return Entity::find(),
    };
    let mut select = Entity::find().select_only().columns(
        Column::iter().filter(|column| !cast.iter().any(|(name, _)| column.as_str() == *name)),
    );
    for (name, to) in cast {
        select = select.expr_as(
            Expr::col((Entity, sea_orm::sea_query::Alias::new(*name))).cast_as(*to),
            *name,
        );
    }
    select
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use sea_orm::ActiveValue::Set;

    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn model() -> Model {
        Model {
            key_id: Uuid::new_v4(),
            public_key: format!("pk_{}", "a".repeat(32)),
            secret_key_hash: StoredHash::new(HASH),
            account_id: Uuid::new_v4(),
            title: "t".into(),
            description: None,
            status: Some("active".into()),
            expires_at: None,
            last_used_at: None,
            created_at: Some(Utc::now()),
            pepper_id: None,
            scopes: None,
            metadata: None,
            rotated_from: None,
            rate_limit_requests: None,
            rate_limit_period_seconds: None,
            allowed_cidrs: None,
        }
    }

    #[test]
    fn debug_of_model_and_active_model_redacts_the_hash() {
        let model = model();
        let active = ActiveModel::from(model.clone());
        let partial = ActiveModel {
            secret_key_hash: Set(StoredHash::new(HASH)),
            ..Default::default()
        };
        for printed in [
            format!("{model:?}"),
            format!("{model:#?}"),
            format!("{active:?}"),
            format!("{partial:?}"),
            format!("{:?}", model.secret_key_hash),
        ] {
            assert!(!printed.contains(HASH), "{printed}");
            assert!(!printed.contains(&HASH[..16]), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
        // The rest of the row is still there to debug with.
        assert!(format!("{active:?}").contains(&model.public_key));
    }
}
