// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The lookup by public key, the one query on the request path.

use sea_orm::{ColumnTrait, QueryFilter};

use super::{SeaOrmRepository, columns::record_from_row, database};
#[cfg(feature = "postgres")]
use crate::store::conn::PoolMode;
use crate::store::entity::{self, Column};
use crate::store::{ApiKeyRecord, StoreError, conn::Pool};

/// The lookup by public key, straight through sqlx: SeaORM's query building and
/// row mapping cost as much as the query itself on a local database
/// (`benches/store.rs`). `$status` and `$json` read the `status` and JSON
/// columns as text: on PostgreSQL they are cast, since an adopted table's
/// `status` is an ENUM and the JSON columns are `jsonb`; on MySQL the JSON
/// columns are cast to `char`.
macro_rules! select_by_public_key {
    ($status:literal, $json:literal, $placeholder:literal) => {
        concat!(
            "SELECT key_id, public_key, secret_key_hash, account_id, title, description, ",
            $status,
            " AS status, expires_at, last_used_at, created_at, pepper_id, ",
            "CAST(scopes AS ",
            $json,
            ") AS scopes, CAST(metadata AS ",
            $json,
            ") AS metadata, rotated_from, rate_limit_requests, rate_limit_period_seconds, \
             CAST(allowed_cidrs AS ",
            $json,
            ") AS allowed_cidrs FROM api_keys WHERE public_key = ",
            $placeholder
        )
    };
}

macro_rules! fetch_by_public_key {
    ($pool:expr, $status:literal, $json:literal, $placeholder:literal, $public_key:expr) => {{
        match sea_orm::sqlx::query(select_by_public_key!($status, $json, $placeholder))
            .bind($public_key)
            .fetch_optional($pool)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(row)) => record_from_row!(&row).map(Some),
            Err(err) => Err(StoreError::Database(Box::new(err))),
        }
    }};
}

/// The PostgreSQL lookup: a prepared statement kept on the connection, or,
/// through a transaction-mode pooler, one simple-protocol query with the
/// public key inlined (its alphabet, `pk_` and 32 alphanumerics, is checked
/// first): one round trip, and nothing prepared under a name.
#[cfg(feature = "postgres")]
async fn postgres_lookup(
    pool: &sea_orm::sqlx::PgPool,
    mode: PoolMode,
    public_key: &str,
) -> Result<Option<ApiKeyRecord>, StoreError> {
    const SQL: &str = select_by_public_key!("status::text", "text", "$1");
    if mode == PoolMode::Session {
        return fetch_by_public_key!(pool, "status::text", "text", "$1", public_key);
    }
    if crate::key::PublicKey::parse(public_key).is_err() {
        // Not the shape of a public key: no row has it.
        return Ok(None);
    }
    let sql = SQL.replace("$1", &format!("'{public_key}'"));
    match sea_orm::sqlx::raw_sql(sea_orm::sqlx::AssertSqlSafe(sql))
        .fetch_optional(pool)
        .await
    {
        Ok(None) => Ok(None),
        Ok(Some(row)) => record_from_row!(&row).map(Some),
        Err(err) => Err(StoreError::Database(Box::new(err))),
    }
}

impl SeaOrmRepository {
    /// [`ApiKeyRepository::find_by_public_key`](crate::store::ApiKeyRepository::find_by_public_key).
    pub(super) async fn lookup(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        #[cfg(feature = "postgres")]
        if let Some(replica) = &self.replica
            && replica.fence.allows(public_key)
        {
            // A key the replica does not know may be a moment old: the primary
            // is asked before it is taken for unknown.
            if let Some(record) = postgres_lookup(&replica.pool, self.mode, public_key).await? {
                return Ok(Some(record));
            }
        }
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Some(Pool::Sqlite(pool)) => {
                return fetch_by_public_key!(pool, "status", "text", "?", public_key);
            }
            #[cfg(feature = "postgres")]
            Some(Pool::Postgres(pool)) => {
                return postgres_lookup(pool, self.mode, public_key).await;
            }
            #[cfg(feature = "mysql")]
            Some(Pool::MySql(pool)) => {
                return fetch_by_public_key!(pool, "status", "char", "?", public_key);
            }
            // A mock or proxy connection: through SeaORM.
            _ => {}
        }
        entity::find(self.backend())
            .filter(Column::PublicKey.eq(public_key))
            .one(&self.db)
            .await
            .map(|row| row.map(ApiKeyRecord::from))
            .map_err(database)
    }
}
