use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DbErr, EntityTrait, QueryFilter, QueryOrder, SqlErr,
    sea_query::{CaseStatement, Expr, NullOrdering, Order, Query},
};
use uuid::Uuid;

use super::{ApiKeyRecord, ApiKeyRepository, KeyStatus, StoreError, StoredHash};
use crate::entity::{self, Column, Entity, Model};

/// Connection options with the defaults this crate relies on.
///
/// - `test_before_acquire(false)`: no ping before every query (a lookup on local
///   PostgreSQL drops from about 229 µs to 151 µs); a broken connection surfaces as
///   a store error, which the layer answers with `503`, and the pool replaces it.
/// - SQLite files: created if missing, WAL journal, `synchronous = NORMAL`, a 5 s
///   busy timeout and a pool of 4 connections (SeaORM otherwise uses one, which
///   serializes every lookup). In-memory SQLite keeps a single connection, since
///   each connection would see its own empty database.
/// - Other backends: a pool of 10 connections.
///
/// Adjust the returned options further before passing them to
/// [`SeaOrmRepository::connect_with`].
pub fn connect_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options.test_before_acquire(false).sqlx_logging(false);
    if url.starts_with("sqlite:") {
        if url.contains(":memory:") || url.contains("mode=memory") {
            options.max_connections(1);
        } else {
            options.max_connections(4);
            #[cfg(feature = "sqlite")]
            options.map_sqlx_sqlite_opts(|opts| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(std::time::Duration::from_secs(5))
            });
        }
    } else {
        options.max_connections(10);
    }
    options
}

/// The SeaORM implementation of [`ApiKeyRepository`] over the `api_keys` table.
///
/// Works on SQLite, PostgreSQL and MySQL/MariaDB (each behind its cargo feature).
/// Run [`crate::migration::Migrator`] first, or let [`SeaOrmRepository::connect`]
/// do it.
#[derive(Debug, Clone)]
pub struct SeaOrmRepository {
    db: DatabaseConnection,
    pool: Pool,
}

/// The sqlx pool under the connection, for the one query on the request path.
#[derive(Debug, Clone)]
enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sea_orm::sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sea_orm::sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sea_orm::sqlx::MySqlPool),
    /// Mock, proxy or other connections: through SeaORM.
    Other,
}

impl Pool {
    fn of(db: &DatabaseConnection) -> Self {
        use sea_orm::DatabaseConnectionType as Type;
        // Each getter is called only for its own variant, so none can panic.
        match &db.inner {
            #[cfg(feature = "sqlite")]
            Type::SqlxSqlitePoolConnection(_) => {
                Self::Sqlite(db.get_sqlite_connection_pool().clone())
            }
            #[cfg(feature = "postgres")]
            Type::SqlxPostgresPoolConnection(_) => {
                Self::Postgres(db.get_postgres_connection_pool().clone())
            }
            #[cfg(feature = "mysql")]
            Type::SqlxMySqlPoolConnection(_) => Self::MySql(db.get_mysql_connection_pool().clone()),
            #[allow(unreachable_patterns)]
            _ => Self::Other,
        }
    }
}

/// The lookup by public key, straight through sqlx: SeaORM's query building and
/// row mapping cost as much as the query itself on a local database
/// (`benches/store.rs`). `$status` reads the `status` column as text: on
/// PostgreSQL it is cast, since an adopted table's column is an ENUM.
macro_rules! select_by_public_key {
    ($status:literal, $placeholder:literal) => {
        concat!(
            "SELECT key_id, public_key, secret_key_hash, account_id, title, description, ",
            $status,
            " AS status, expires_at, last_used_at, created_at FROM api_keys WHERE public_key = ",
            $placeholder
        )
    };
}

macro_rules! fetch_by_public_key {
    ($pool:expr, $status:literal, $placeholder:literal, $public_key:expr) => {{
        use sea_orm::sqlx::Row;
        match sea_orm::sqlx::query(select_by_public_key!($status, $placeholder))
            .bind($public_key)
            .fetch_optional($pool)
            .await
        {
            Ok(None) => Ok(None),
            Ok(Some(row)) => (|| -> Result<ApiKeyRecord, sea_orm::sqlx::Error> {
                Ok(ApiKeyRecord {
                    key_id: row.try_get("key_id")?,
                    public_key: row.try_get("public_key")?,
                    secret_key_hash: StoredHash::new(row.try_get::<String, _>("secret_key_hash")?),
                    account_id: row.try_get("account_id")?,
                    title: row.try_get("title")?,
                    description: row.try_get("description")?,
                    status: KeyStatus::from_column(row.try_get::<Option<&str>, _>("status")?),
                    expires_at: row.try_get("expires_at")?,
                    last_used_at: row.try_get("last_used_at")?,
                    created_at: row.try_get("created_at")?,
                })
            })()
            .map(Some)
            .map_err(|err| StoreError::Database(Box::new(err))),
            Err(err) => Err(StoreError::Database(Box::new(err))),
        }
    }};
}

impl SeaOrmRepository {
    /// Wraps an existing connection (pool). Does not run migrations.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            pool: Pool::of(&db),
            db,
        }
    }

    /// Connects to `url` with [`connect_options`] and runs the crate's migrations.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        Self::connect_with(connect_options(url)).await
    }

    /// Connects with the given options and runs the crate's migrations.
    pub async fn connect_with(options: ConnectOptions) -> Result<Self, DbErr> {
        use sea_orm_migration::MigratorTrait;
        let db = Database::connect(options).await?;
        crate::migration::Migrator::up(&db, None).await?;
        Ok(Self::new(db))
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }
}

fn database(err: DbErr) -> StoreError {
    StoreError::Database(Box::new(err))
}

impl From<Model> for ApiKeyRecord {
    fn from(model: Model) -> Self {
        Self {
            key_id: model.key_id,
            status: KeyStatus::from_column(model.status.as_deref()),
            public_key: model.public_key,
            secret_key_hash: model.secret_key_hash,
            account_id: model.account_id,
            title: model.title,
            description: model.description,
            expires_at: model.expires_at,
            last_used_at: model.last_used_at,
            created_at: model.created_at,
        }
    }
}

impl ApiKeyRepository for SeaOrmRepository {
    async fn find_by_public_key(
        &self,
        public_key: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        match &self.pool {
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(pool) => return fetch_by_public_key!(pool, "status", "?", public_key),
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => {
                return fetch_by_public_key!(pool, "status::text", "$1", public_key);
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => return fetch_by_public_key!(pool, "status", "?", public_key),
            Pool::Other => {}
        }
        entity::find(self.backend())
            .filter(Column::PublicKey.eq(public_key))
            .one(&self.db)
            .await
            .map(|row| row.map(ApiKeyRecord::from))
            .map_err(database)
    }

    async fn insert(&self, record: ApiKeyRecord) -> Result<(), StoreError> {
        // Built by hand rather than from an `ActiveModel`: `status` goes in as an
        // SQL literal, which an adopted table's ENUM column accepts.
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
            ])
            .map_err(|err| StoreError::Database(Box::new(err)))?;
        match self.db.execute(&statement).await {
            Ok(_) => Ok(()),
            Err(err) if matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                Err(StoreError::Conflict)
            }
            Err(err) => Err(database(err)),
        }
    }

    async fn list_by_account(&self, account_id: Uuid) -> Result<Vec<ApiKeyRecord>, StoreError> {
        entity::find(self.backend())
            .filter(Column::AccountId.eq(account_id))
            .order_by_with_nulls(Column::CreatedAt, Order::Desc, NullOrdering::Last)
            .all(&self.db)
            .await
            .map(|rows| rows.into_iter().map(ApiKeyRecord::from).collect())
            .map_err(database)
    }

    async fn get(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        entity::find(self.backend())
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .one(&self.db)
            .await
            .map(|row| row.map(ApiKeyRecord::from))
            .map_err(database)
    }

    async fn revoke(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        Entity::update_many()
            .col_expr(Column::Status, Expr::cust(KeyStatus::Revoked.sql_literal()))
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&self.db)
            .await
            .map_err(database)?;
        self.get(account_id, key_id).await
    }

    async fn delete(
        &self,
        account_id: Uuid,
        key_id: Uuid,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(record) = self.get(account_id, key_id).await? else {
            return Ok(None);
        };
        let result = Entity::delete_many()
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&self.db)
            .await
            .map_err(database)?;
        Ok((result.rows_affected > 0).then_some(record))
    }

    async fn record_last_used(&self, batch: &[(Uuid, DateTime<Utc>)]) -> Result<(), StoreError> {
        // One statement per chunk: UPDATE … SET last_used_at = CASE key_id WHEN … END
        // WHERE key_id IN (…). Three bound values per key keeps a chunk well below
        // every backend's parameter limit.
        for chunk in batch.chunks(5_000) {
            let mut case = CaseStatement::new();
            for (key_id, used_at) in chunk {
                case = case.case(Column::KeyId.eq(*key_id), Expr::value(*used_at));
            }
            let case = case.finally(Expr::col(Column::LastUsedAt));
            Entity::update_many()
                .col_expr(Column::LastUsedAt, case.into())
                .filter(Column::KeyId.is_in(chunk.iter().map(|(key_id, _)| *key_id)))
                .exec(&self.db)
                .await
                .map_err(database)?;
        }
        Ok(())
    }
}
