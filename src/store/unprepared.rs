//! PostgreSQL through a transaction-mode pooler (PgBouncer `pool_mode =
//! transaction`, Supavisor's port 6543): SeaORM's statements run on sqlx
//! without any prepared statement.
//!
//! sqlx prepares every statement under a name (`sqlx_s_1`, …) and keeps it on
//! its connection. Behind a transaction-mode pooler, consecutive transactions
//! of one client connection run on different server connections, and one
//! server connection serves many clients: a name prepared by one client is
//! missing for it later, or already taken for another (`prepared statement
//! "sqlx_s_1" already exists`). Even an unnamed statement is not safe outside
//! a transaction: sqlx parses it in one round trip and binds it in the next,
//! and the pooler may send the two to different server connections (`bind
//! message supplies 2 parameters, but prepared statement "" requires 3`).
//!
//! So each statement runs as one simple-protocol query: SeaQuery writes its
//! values into the text as escaped literals (`sea_query::inject_parameters`,
//! the PostgreSQL query builder's own quoting), and the server parses, plans
//! and runs it in one round trip. Rows come back in text form, which sqlx
//! decodes for every type the store reads.
//!
//! [`Unprepared`] and [`UnpreparedTransaction`] implement SeaORM's
//! [`ConnectionTrait`], so the store's queries are written once and run on
//! either kind of connection.

use std::sync::Arc;

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, RuntimeErr, Statement,
    sea_query::{PostgresQueryBuilder, inject_parameters},
    sqlx::{self, PgPool, Postgres},
};
use tokio::sync::Mutex;

/// A PostgreSQL pool whose statements are never prepared under a name.
#[derive(Debug, Clone)]
pub(crate) struct Unprepared(pub(crate) PgPool);

/// A transaction on an [`Unprepared`] pool.
pub(crate) struct UnpreparedTransaction(Mutex<sqlx::Transaction<'static, Postgres>>);

/// `stmt` as one simple-protocol query, its values written in as literals.
fn query(stmt: &Statement) -> sqlx::RawSql {
    let sql = match &stmt.values {
        Some(values) if !values.0.is_empty() => {
            inject_parameters(&stmt.sql, &values.0, &PostgresQueryBuilder)
        }
        _ => stmt.sql.clone(),
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

impl Unprepared {
    /// Begins a transaction: the pooler keeps one server connection for it.
    pub(crate) async fn begin(&self) -> Result<UnpreparedTransaction, DbErr> {
        let transaction = self.0.begin().await.map_err(exec_err)?;
        Ok(UnpreparedTransaction(Mutex::new(transaction)))
    }
}

impl UnpreparedTransaction {
    pub(crate) async fn commit(self) -> Result<(), DbErr> {
        self.0.into_inner().commit().await.map_err(exec_err)
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl ConnectionTrait for Unprepared {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        query(&stmt)
            .execute(&self.0)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.0)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        query(&stmt)
            .fetch_optional(&self.0)
            .await
            .map(|row| row.map(QueryResult::from))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        query(&stmt)
            .fetch_all(&self.0)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(query_err)
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl ConnectionTrait for UnpreparedTransaction {
    fn get_database_backend(&self) -> DbBackend {
        DbBackend::Postgres
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut transaction = self.0.lock().await;
        query(&stmt)
            .execute(&mut **transaction)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut transaction = self.0.lock().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut **transaction)
            .await
            .map(ExecResult::from)
            .map_err(exec_err)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut transaction = self.0.lock().await;
        query(&stmt)
            .fetch_optional(&mut **transaction)
            .await
            .map(|row| row.map(QueryResult::from))
            .map_err(query_err)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut transaction = self.0.lock().await;
        query(&stmt)
            .fetch_all(&mut **transaction)
            .await
            .map(|rows| rows.into_iter().map(QueryResult::from).collect())
            .map_err(query_err)
    }
}
