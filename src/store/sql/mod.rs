// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_macros)
)]

//! The SeaORM implementation of the key store, by concern: the repository
//! (here), how it connects and what it connects to (`connect`), the direct
//! lookup on the request path (`lookup`), the columns read and written (`columns`), the statements built
//! by hand (`statements`), the multi-statement transactions (`transactions`)
//! and the [`ApiKeyRepository`](super::ApiKeyRepository) methods
//! (`repository`).

use sea_orm::{
    ConnectOptions, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, SqlErr,
};

use super::{
    StoreError,
    conn::{Conn, Pool, PoolMode},
};

mod columns;
mod connect;
mod journal;
mod lookup;
mod outbox;
mod repository;
mod statements;
mod transactions;

pub use self::connect::{ConnectError, RepositoryBuilder, connect_options};

/// The SeaORM implementation of [`ApiKeyRepository`](super::ApiKeyRepository) over the
/// `api_keys` table.
///
/// Works on SQLite, PostgreSQL and MySQL/MariaDB (each behind its cargo feature).
/// Run [`crate::migration::Migrator`] first, or let [`SeaOrmRepository::connect`]
/// do it. [`RepositoryBuilder`] adds a transaction-mode pooler, a read replica
/// and the change feed's own URL.
#[derive(Clone)]
pub struct SeaOrmRepository {
    db: DatabaseConnection,
    /// The sqlx pool under `db`, if it has one.
    pool: Option<Pool>,
    mode: PoolMode,
    /// Whether changes write their audit rows and events (always, but in a
    /// benchmark's baseline).
    journal: bool,
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
                (Some(Pool::Postgres(pool)), PoolMode::Transaction) => {
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
            journal: true,
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
    fn feed_source(&self) -> Option<crate::store::feed::ChangeSource> {
        #[cfg(feature = "postgres")]
        if let Some(Pool::Postgres(pool)) = &self.pool {
            let fence = self.replica.as_ref().map(|replica| replica.fence.clone());
            return Some(crate::store::feed::ChangeSource::postgres(
                pool.clone(),
                self.mode,
                self.feed_options.clone(),
                fence,
            ));
        }
        crate::store::feed::ChangeSource::of(&self.db)
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

fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
