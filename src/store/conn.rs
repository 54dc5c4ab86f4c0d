//! What the SQL store runs on.
//!
//! [`Conn`] is the connection its SeaORM statements run on: SeaORM's own, or
//! (for PostgreSQL behind a transaction-mode pooler) one that never prepares
//! a statement under a name. Both implement SeaORM's [`ConnectionTrait`], so
//! each query is written once.
//!
//! [`Pool`] is the sqlx pool under the SeaORM connection, for the queries
//! that go to sqlx directly: the lookup on the request path, the `last_used_at`
//! update with array binds, and the change feed's listener and poller.
//!
//! [`PoolMode`] is how the database is reached, which decides both.

use std::{fmt, str::FromStr};

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    QueryResult, Statement, TransactionTrait,
};

#[cfg(feature = "postgres")]
use super::unprepared::{Unprepared, UnpreparedTransaction};

/// How the database is reached (DECISIONS.md, "Deployment topologies in
/// detail": "Direct" and "PgBouncer or Supavisor in transaction mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PoolMode {
    /// A direct connection, or a pooler in session mode: each client
    /// connection keeps one server session. The default.
    #[default]
    Session,
    /// A PostgreSQL pooler in transaction mode (PgBouncer `pool_mode =
    /// transaction`, Supavisor's port 6543): consecutive transactions of one
    /// client connection may run on different server sessions. Nothing
    /// session-level goes through the pool: no named prepared statement, no
    /// `SET`, no `LISTEN`, no advisory lock. The change feed listens on the
    /// feed URL ([`RepositoryBuilder::with_feed_url`](crate::store::RepositoryBuilder::with_feed_url)) when one is given, and
    /// otherwise polls the change log through the pool.
    Transaction,
}

impl PoolMode {
    /// The mode's name, as [`FromStr`] reads it: `session` or `transaction`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Transaction => "transaction",
        }
    }
}

impl fmt::Display for PoolMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pool mode name other than `session` or `transaction`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pool mode {0:?}: expected `session` or `transaction`")]
pub struct UnknownPoolMode(String);

impl FromStr for PoolMode {
    type Err = UnknownPoolMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.trim().to_ascii_lowercase().as_str() {
            "session" => Ok(Self::Session),
            "transaction" => Ok(Self::Transaction),
            _ => Err(UnknownPoolMode(name.chars().take(32).collect())),
        }
    }
}

/// The sqlx pool of one backend, under a SeaORM connection.
#[derive(Debug, Clone)]
pub(crate) enum Pool {
    #[cfg(feature = "sqlite")]
    Sqlite(sea_orm::sqlx::SqlitePool),
    #[cfg(feature = "postgres")]
    Postgres(sea_orm::sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sea_orm::sqlx::MySqlPool),
}

impl Pool {
    /// The pool under `db`; `None` for a mock or proxy connection, or a
    /// backend whose driver feature is off (those go through SeaORM).
    pub(crate) fn of(db: &DatabaseConnection) -> Option<Self> {
        #[allow(unused_imports)]
        use sea_orm::DatabaseConnectionType as Type;
        // Each getter is called only for its own variant, so none can panic.
        match &db.inner {
            #[cfg(feature = "sqlite")]
            Type::SqlxSqlitePoolConnection(_) => {
                Some(Self::Sqlite(db.get_sqlite_connection_pool().clone()))
            }
            #[cfg(feature = "postgres")]
            Type::SqlxPostgresPoolConnection(_) => {
                Some(Self::Postgres(db.get_postgres_connection_pool().clone()))
            }
            #[cfg(feature = "mysql")]
            Type::SqlxMySqlPoolConnection(_) => {
                Some(Self::MySql(db.get_mysql_connection_pool().clone()))
            }
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }
}

/// A connection (pool) of the store.
pub(crate) enum Conn<'a> {
    Orm(&'a DatabaseConnection),
    #[cfg(feature = "postgres")]
    Unprepared(&'a Unprepared),
}

/// A transaction of the store.
pub(crate) enum Tx {
    Orm(DatabaseTransaction),
    #[cfg(feature = "postgres")]
    Unprepared(UnpreparedTransaction),
}

impl Conn<'_> {
    pub(crate) async fn begin(&self) -> Result<Tx, DbErr> {
        match self {
            Self::Orm(db) => db.begin().await.map(Tx::Orm),
            #[cfg(feature = "postgres")]
            Self::Unprepared(pool) => pool.begin().await.map(Tx::Unprepared),
        }
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        match self {
            Self::Orm(transaction) => transaction.commit().await,
            #[cfg(feature = "postgres")]
            Self::Unprepared(transaction) => transaction.commit().await,
        }
    }
}

/// Passes each call to the variant's connection.
macro_rules! delegate {
    ($self:ident, |$conn:ident| $call:expr) => {
        match $self {
            Self::Orm($conn) => $call,
            #[cfg(feature = "postgres")]
            Self::Unprepared($conn) => $call,
        }
    };
}

/// `ConnectionTrait` for a type whose variants each hold a connection, by
/// delegating every call to the one in use.
macro_rules! delegate_connection {
    ($($ty:ty),*) => {$(
        #[sea_orm_migration::async_trait::async_trait]
        impl ConnectionTrait for $ty {
            fn get_database_backend(&self) -> DbBackend {
                delegate!(self, |conn| conn.get_database_backend())
            }

            async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
                delegate!(self, |conn| conn.execute_raw(stmt).await)
            }

            async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
                delegate!(self, |conn| conn.execute_unprepared(sql).await)
            }

            async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
                delegate!(self, |conn| conn.query_one_raw(stmt).await)
            }

            async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
                delegate!(self, |conn| conn.query_all_raw(stmt).await)
            }
        }
    )*};
}

delegate_connection!(Conn<'_>, Tx);
