// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement, Value,
    sea_query::{Expr, ExprTrait, NullOrdering, Order, Query},
};
use uuid::Uuid;

use super::{
    ApiKeyRecord, ApiKeyRepository, HashRewrite, KeyChanges, KeyStatus, LAST_USED_CHUNK,
    OldKeyLimit, PepperCount, RotateOutcome, Rotation, StoreError, StoredHash, StoredPolicy,
    USAGE_CHUNK, UsageCount, merge_usage,
};
use super::{
    conn::Conn,
    connect::{PoolMode, RepositoryBuilder, connect_options},
};
use crate::entity::{self, Column, Entity, Model};
use crate::policy::{Metadata, Scopes};

/// The SeaORM implementation of [`ApiKeyRepository`] over the `api_keys` table.
///
/// Works on SQLite, PostgreSQL and MySQL/MariaDB (each behind its cargo feature).
/// Run [`crate::migration::Migrator`] first, or let [`SeaOrmRepository::connect`]
/// do it. [`RepositoryBuilder`] adds a transaction-mode pooler, a read replica
/// and the change feed's own URL.
#[derive(Clone)]
pub struct SeaOrmRepository {
    db: DatabaseConnection,
    pool: Pool,
    mode: PoolMode,
    /// PostgreSQL in transaction mode: the pool, without named statements.
    #[cfg(feature = "postgres")]
    unprepared: Option<super::unprepared::Unprepared>,
    /// Where the change feed listens, when not on the pool's own URL.
    #[cfg(feature = "postgres")]
    feed_options: Option<sea_orm::sqlx::postgres::PgConnectOptions>,
    /// The read replica for lookups, if any.
    #[cfg(feature = "postgres")]
    replica: Option<std::sync::Arc<super::replica::ReadReplica>>,
}

impl std::fmt::Debug for SeaOrmRepository {
    /// The backend and how it is reached; never a URL (it may hold a password).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("SeaOrmRepository");
        debug
            .field("backend", &self.backend())
            .field("pool_mode", &self.mode);
        #[cfg(feature = "postgres")]
        debug
            .field("feed_url", &self.feed_options.is_some())
            .field("read_replica", &self.replica.is_some());
        debug.finish_non_exhaustive()
    }
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
            ") AS metadata, rotated_from, rate_limit_requests, rate_limit_period_seconds \
             FROM api_keys WHERE public_key = ",
            $placeholder
        )
    };
}

/// Decodes one `api_keys` row read by [`select_by_public_key!`].
macro_rules! record_from_row {
    ($row:expr) => {{
        use sea_orm::sqlx::Row;
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
    /// Wraps an existing connection (pool). Does not run migrations.
    pub fn new(db: DatabaseConnection) -> Self {
        Self::with_mode(db, PoolMode::Session)
    }

    /// Wraps an existing connection reached in `mode`. Does not run migrations.
    pub(crate) fn with_mode(db: DatabaseConnection, mode: PoolMode) -> Self {
        let pool = Pool::of(&db);
        Self {
            #[cfg(feature = "postgres")]
            unprepared: match (&pool, mode) {
                (Pool::Postgres(pool), PoolMode::Transaction) => {
                    Some(super::unprepared::Unprepared(pool.clone()))
                }
                _ => None,
            },
            #[cfg(feature = "postgres")]
            feed_options: None,
            #[cfg(feature = "postgres")]
            replica: None,
            pool,
            mode,
            db,
        }
    }

    /// Listens for changes on `options` instead of the pool's own URL.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_feed_options(
        mut self,
        options: sea_orm::sqlx::postgres::PgConnectOptions,
    ) -> Self {
        self.feed_options = Some(options);
        self
    }

    /// Reads cache misses from `pool`, a read replica.
    #[cfg(feature = "postgres")]
    pub(crate) fn with_replica(mut self, pool: sea_orm::sqlx::PgPool) -> Self {
        self.replica = Some(super::replica::ReadReplica::start(pool));
        self
    }

    /// Connects to `url` with [`connect_options`] and runs the crate's migrations.
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        Self::connect_with(connect_options(url)).await
    }

    /// Connects with the given options and runs the crate's migrations.
    ///
    /// A URL whose driver is not compiled in (`postgres://` without the crate
    /// feature `postgres`, say) is refused with an error that names the feature,
    /// and so is a read-only database (a standby). [`RepositoryBuilder`] has
    /// the other settings.
    ///
    /// A SQLite database file that does not exist yet is created here,
    /// readable and writable by its owner only (mode 0600 on Unix, as the
    /// pepper file): SQLite gives its `-wal` and `-shm` files the same mode.
    /// An existing file keeps its mode.
    pub async fn connect_with(options: ConnectOptions) -> Result<Self, DbErr> {
        Ok(RepositoryBuilder::new(options).connect().await?)
    }

    /// Starts configuring a repository on `url` (with [`connect_options`]).
    pub fn builder(url: &str) -> RepositoryBuilder {
        RepositoryBuilder::new(connect_options(url))
    }

    /// How the database is reached.
    pub fn pool_mode(&self) -> PoolMode {
        self.mode
    }

    /// A connection that runs SeaORM statements as the store does: behind a
    /// transaction-mode pooler, without naming a prepared statement. Use it
    /// rather than [`connection`](Self::connection) for queries of your own
    /// in [`PoolMode::Transaction`]; otherwise it is that connection.
    pub fn executor(&self) -> impl ConnectionTrait + '_ {
        self.conn()
    }

    /// The connection the store's statements run on.
    fn conn(&self) -> Conn<'_> {
        #[cfg(feature = "postgres")]
        if let Some(unprepared) = &self.unprepared {
            return Conn::Unprepared(unprepared);
        }
        Conn::Orm(&self.db)
    }

    /// Where the change feed comes from (see [`crate::feed`]).
    fn feed_source(&self) -> Option<crate::feed::ChangeSource> {
        #[cfg(feature = "postgres")]
        if let Pool::Postgres(pool) = &self.pool {
            let fence = self.replica.as_ref().map(|replica| replica.fence.clone());
            return Some(crate::feed::ChangeSource::postgres(
                pool.clone(),
                self.mode,
                self.feed_options.clone(),
                fence,
            ));
        }
        crate::feed::ChangeSource::of(&self.db)
    }

    /// The underlying connection.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }
    /// One attempt of [`ApiKeyRepository::insert_within_limit`].
    async fn insert_within_limit_once(
        &self,
        records: &[ApiKeyRecord],
        max_keys_per_account: u64,
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
        for (account_id, adding) in super::keys_per_account(records) {
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
        transaction.commit().await.map_err(database)
    }

    /// One attempt of [`ApiKeyRepository::rotate`].
    async fn rotate_once(&self, rotation: &Rotation) -> Result<RotateOutcome, StoreError> {
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
        let old = read_old().one(&transaction).await.map_err(database)?;
        transaction.commit().await.map_err(database)?;
        Ok(
            old.map_or(RotateOutcome::NotFound, |row| RotateOutcome::Rotated {
                old: Box::new(ApiKeyRecord::from(row)),
                successor: Box::new(successor),
            }),
        )
    }
}

/// How many times a transaction the database rolled back for a deadlock is
/// run (the store timeout bounds them all).
const DEADLOCK_ATTEMPTS: u64 = 20;

/// The pause before attempt `attempt + 1` of a deadlocked transaction: a few
/// milliseconds at random, growing with the attempts, so that the
/// transactions rolled back do not meet again.
async fn retry_pause(attempt: u64) {
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
fn is_deadlock(err: &(dyn std::error::Error + 'static)) -> bool {
    let text = err.to_string();
    text.contains("1213")
        || text.contains("40001")
        || text.contains("40P01")
        || text.contains("Deadlock found")
}

fn database(err: DbErr) -> StoreError {
    StoreError::Database(Box::new(err))
}

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
fn json_value(backend: DatabaseBackend, json: Option<String>) -> Expr {
    let value = Expr::value(json);
    if backend == DatabaseBackend::Postgres {
        value.cast_as("jsonb")
    } else {
        value
    }
}

/// The `INSERT` of one key. Built by hand rather than from an `ActiveModel`:
/// `status` goes in as an SQL literal, which an adopted table's ENUM column
/// accepts, and the JSON columns need a cast on PostgreSQL.
fn insert_statement(
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
        ])
        .map_err(|err| StoreError::Database(Box::new(err)))?;
    Ok(statement)
}

/// A rate-limit bound as the `integer` column holds it (the bounds fit).
fn limit_column(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// `last_used_at` on PostgreSQL: the pairs as two arrays, joined by `UNNEST`.
const POSTGRES_LAST_USED: &str = "UPDATE api_keys AS k SET last_used_at = v.used_at \
     FROM UNNEST($1::uuid[], $2::timestamptz[]) AS v(key_id, used_at) \
     WHERE k.key_id = v.key_id AND (k.last_used_at IS NULL OR k.last_used_at < v.used_at)";

/// `UPDATE … last_used_at` for one chunk of pairs, joined against the pairs so
/// that its cost is linear in them; it writes only where `last_used_at` moves
/// forward. UUIDs and timestamps are bound as SeaORM binds them everywhere else
/// (SQLite: 16-byte blobs and RFC 3339 text; MySQL: `binary(16)` and
/// `datetime(6)`; PostgreSQL: `uuid` and `timestamptz`).
fn last_used_statement(backend: DatabaseBackend, chunk: &[(Uuid, DateTime<Utc>)]) -> Statement {
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
const REWRITE_CHUNK: usize = 2_000;

/// `UPDATE … secret_key_hash, pepper_id` for one chunk of re-hashes, joined
/// against a table of the rewrites (linear in them, as [`last_used_statement`]),
/// only where the row still holds the old hash.
fn rewrite_statement(backend: DatabaseBackend, chunk: &[HashRewrite]) -> Statement {
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
fn usage_statement(backend: DatabaseBackend, chunk: &[UsageCount]) -> Statement {
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
fn still_valid(now: DateTime<Utc>) -> Expr {
    Expr::cust("(status IS NULL OR status = 'active')")
        .and(Column::ExpiresAt.is_null().or(Column::ExpiresAt.gt(now)))
}

fn pair_values(chunk: &[(Uuid, DateTime<Utc>)]) -> Vec<Value> {
    chunk
        .iter()
        .flat_map(|(key_id, used_at)| [Value::from(*key_id), Value::from(*used_at)])
        .collect()
}

impl ApiKeyRepository for SeaOrmRepository {
    async fn find_by_public_key(
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
            Pool::Sqlite(pool) => {
                return fetch_by_public_key!(pool, "status", "text", "?", public_key);
            }
            #[cfg(feature = "postgres")]
            Pool::Postgres(pool) => return postgres_lookup(pool, self.mode, public_key).await,
            #[cfg(feature = "mysql")]
            Pool::MySql(pool) => {
                return fetch_by_public_key!(pool, "status", "char", "?", public_key);
            }
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
    ) -> Result<(), StoreError> {
        // Two creates for one new account can deadlock on MySQL/MariaDB (each
        // holds the gap lock of its locking read, each insert waits on the
        // other's): the database rolls one back, and running it again gives
        // the answer it would have had in turn, as for a rotation.
        let mut attempt = 1;
        loop {
            match self
                .insert_within_limit_once(&records, max_keys_per_account)
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
        entity::find(self.backend())
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .one(&self.conn())
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
            .exec(&self.conn())
            .await
            .map_err(database)?;
        self.get(account_id, key_id).await
    }

    async fn update(
        &self,
        account_id: Uuid,
        key_id: Uuid,
        changes: &KeyChanges,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
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
            update
                .filter(Column::KeyId.eq(key_id))
                .filter(Column::AccountId.eq(account_id))
                .exec(&self.conn())
                .await
                .map_err(database)?;
        }
        self.get(account_id, key_id).await
    }

    async fn rotate(&self, rotation: Rotation) -> Result<RotateOutcome, StoreError> {
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
            match self.rotate_once(&rotation).await {
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
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let Some(record) = self.get(account_id, key_id).await? else {
            return Ok(None);
        };
        let result = Entity::delete_many()
            .filter(Column::KeyId.eq(key_id))
            .filter(Column::AccountId.eq(account_id))
            .exec(&self.conn())
            .await
            .map_err(database)?;
        Ok((result.rows_affected > 0).then_some(record))
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
    ) -> Result<u64, StoreError> {
        let mut names = Column::PepperId.eq(pepper_id);
        if include_legacy {
            names = names.or(Column::PepperId.is_null());
        }
        Entity::update_many()
            .col_expr(Column::Status, Expr::cust(KeyStatus::Revoked.sql_literal()))
            .filter(still_valid(Utc::now()))
            .filter(names)
            .exec(&self.conn())
            .await
            .map(|done| done.rows_affected)
            .map_err(database)
    }

    fn change_source(&self) -> Option<crate::feed::ChangeSource> {
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
            if let (Pool::Postgres(pool), PoolMode::Session) = (&self.pool, self.mode) {
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
