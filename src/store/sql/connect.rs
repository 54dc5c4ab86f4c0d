//! Connecting the SQL store: connection options, the pool mode, the read
//! replica and the feed's own URL, the start-up checks and the migrations.

// Without a database driver only the generic SeaORM paths remain.
#![cfg_attr(
    not(any(feature = "sqlite", feature = "postgres", feature = "mysql")),
    allow(unused_imports, unused_variables, dead_code)
)]

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use super::SeaOrmRepository;
use crate::store::conn::PoolMode;

/// Connection options with the defaults this crate relies on.
///
/// - `test_before_acquire(false)`: no ping before every query (a lookup on local
///   PostgreSQL drops from about 229 µs to 151 µs); a broken connection surfaces as
///   a store error, which the layer answers with `503`, and the pool replaces it.
/// - SQLite files: created if missing (mode 0600 when
///   [`RepositoryBuilder::connect`] creates them), WAL journal, `synchronous = NORMAL`, a 5 s
///   busy timeout and a pool of 4 connections (SeaORM otherwise uses one, which
///   serializes every lookup). In-memory SQLite keeps a single connection, since
///   each connection would see its own empty database.
/// - Other backends: a pool of 10 connections.
///
/// - PostgreSQL: no `extra_float_digits` startup parameter, which a stock
///   PgBouncer refuses (the crate reads no floating-point column).
///
/// Adjust the returned options further before passing them to
/// [`SeaOrmRepository::connect_with`] or [`RepositoryBuilder::new`].
pub fn connect_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .test_before_acquire(false)
        .sqlx_logging(false)
        .connect_timeout(CONNECT_TIMEOUT)
        .acquire_timeout(CONNECT_TIMEOUT);
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
        #[cfg(feature = "postgres")]
        options.map_sqlx_postgres_opts(|opts| opts.extra_float_digits(None));
    }
    options
}

/// Creates the database file a `sqlite:` URL names if it does not exist yet,
/// empty (SQLite reads an empty file as an empty database) and, on Unix, with
/// mode 0600, before the driver would create it with the process's default
/// mode (usually 0644). In-memory databases and URLs that open read-only or
/// without creating (`mode=ro`, `mode=rw`) are left alone; so is any failure,
/// which the driver then reports when it opens the file itself.
#[cfg(feature = "sqlite")]
fn create_sqlite_file(url: &str) {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") || url.contains(":memory:") {
        return;
    }
    let mode = url
        .split_once('?')
        .into_iter()
        .flat_map(|(_, query)| query.split('&'))
        .find_map(|pair| pair.strip_prefix("mode="));
    if mode.is_some_and(|mode| mode != "rwc") {
        return;
    }
    let Ok(options) = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url) else {
        return;
    };
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    // `create_new`: an existing file is neither truncated nor changed.
    let _ = file.open(options.get_filename());
}

/// How long opening a connection (or waiting for one from the pool) may take
/// before it counts as failed, so that a store that cannot be reached fails a
/// start within seconds instead of retrying for half a minute.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The crate feature a database URL needs, if that feature is not compiled in.
fn missing_driver(url: &str, compiled: &[&'static str]) -> Option<&'static str> {
    let scheme = url.split(':').next().unwrap_or_default();
    let feature = match scheme {
        "sqlite" => "sqlite",
        "postgres" | "postgresql" => "postgres",
        "mysql" | "mariadb" => "mysql",
        _ => return None,
    };
    (!compiled.contains(&feature)).then_some(feature)
}

/// The database drivers compiled into this build.
const COMPILED_DRIVERS: &[&str] = &[
    #[cfg(feature = "sqlite")]
    "sqlite",
    #[cfg(feature = "postgres")]
    "postgres",
    #[cfg(feature = "mysql")]
    "mysql",
];

/// Why [`RepositoryBuilder::connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A URL's driver is not compiled into this build.
    #[error(
        "{scheme}:// databases need the crate feature `{feature}`, which this build does not have"
    )]
    MissingFeature {
        /// The URL's scheme.
        scheme: String,
        /// The crate feature to enable.
        feature: &'static str,
    },
    /// The database is read-only: a standby or a read replica, not the
    /// primary. Nothing ran on it (no migration).
    #[error(
        "the database is read-only (a standby or a read replica): the key store must name the \
         primary, and a replica can serve lookups as the read replica"
    )]
    ReadOnly,
    /// A setting this database does not support.
    #[error("{0}")]
    Unsupported(&'static str),
    /// The database failed or could not be reached.
    #[error(transparent)]
    Database(#[from] DbErr),
}

impl ConnectError {
    /// Whether the configuration is at fault (a missing feature, a read-only
    /// database, an unsupported setting), rather than the database being
    /// unreachable or failing: a command-line tool exits 1 for these.
    pub fn is_configuration(&self) -> bool {
        !matches!(self, Self::Database(_))
    }
}

impl From<ConnectError> for DbErr {
    fn from(err: ConnectError) -> Self {
        match err {
            ConnectError::Database(err) => err,
            other => DbErr::Custom(other.to_string()),
        }
    }
}

/// Configures and connects a [`SeaOrmRepository`]: the pool mode, a read
/// replica, the change feed's own URL.
///
/// ```no_run
/// # async fn run() -> Result<(), sea_orm::DbErr> {
/// use tower_api_keys::store::{PoolMode, RepositoryBuilder, connect_options};
///
/// // PgBouncer in transaction mode, LISTEN on a direct URL, lookups on a standby.
/// let repository = RepositoryBuilder::new(connect_options("postgres://app@pgbouncer:6432/keys"))
///     .with_pool_mode(PoolMode::Transaction)
///     .with_feed_url("postgres://app@primary:5432/keys")
///     .with_read_replica("postgres://app@standby:5432/keys")
///     .connect()
///     .await?;
/// # let _ = repository; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RepositoryBuilder {
    options: ConnectOptions,
    pool_mode: PoolMode,
    read_replica: Option<ConnectOptions>,
    feed: Option<String>,
    migrate: bool,
}

impl RepositoryBuilder {
    /// Starts from `options` (see [`connect_options`]).
    pub fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            pool_mode: PoolMode::Session,
            read_replica: None,
            feed: None,
            migrate: true,
        }
    }

    /// How the database is reached: default [`PoolMode::Session`].
    pub fn with_pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// A PostgreSQL read replica (a streaming standby) for cache-miss lookups;
    /// every write, the flush, the change feed and the key manager's reads use
    /// the primary. A lagging replica never weakens a promise: see
    /// DECISIONS.md, "A read replica". Default: none. Needs the change feed: without it every lookup reads the primary.
    pub fn with_read_replica(mut self, url: &str) -> Self {
        self.read_replica = Some(connect_options(url));
        self
    }

    /// Where the change feed listens (PostgreSQL): a direct or session-mode
    /// URL of the primary. Default: the repository's own URL in session mode;
    /// in transaction mode, none (the feed polls the change log through the
    /// pool).
    pub fn with_feed_url(mut self, url: &str) -> Self {
        self.feed = Some(url.to_owned());
        self
    }

    /// Whether [`connect`](Self::connect) runs the crate's migrations: default
    /// **yes**.
    pub fn with_migrations(mut self, run: bool) -> Self {
        self.migrate = run;
        self
    }

    /// Connects: checks that every URL's driver is compiled in, that the
    /// database is not read-only (a standby), runs the migrations (in
    /// transaction mode in one transaction, so that they pass through the
    /// pooler), and connects the read replica.
    pub async fn connect(self) -> Result<SeaOrmRepository, ConnectError> {
        use sea_orm_migration::MigratorTrait;
        for url in std::iter::once(self.options.get_url())
            .chain(self.read_replica.as_ref().map(ConnectOptions::get_url))
            .chain(self.feed.as_deref())
        {
            if let Some(feature) = missing_driver(url, COMPILED_DRIVERS) {
                let scheme = url.split(':').next().unwrap_or_default().to_owned();
                return Err(ConnectError::MissingFeature { scheme, feature });
            }
        }
        let is_postgres =
            |url: &str| url.starts_with("postgres:") || url.starts_with("postgresql:");
        if self.pool_mode == PoolMode::Transaction && !is_postgres(self.options.get_url()) {
            return Err(ConnectError::Unsupported(
                "the transaction pool mode is for PostgreSQL poolers (PgBouncer, Supavisor); \
                 other databases are reached in session mode",
            ));
        }
        let primary_is_postgres = is_postgres(self.options.get_url());
        if self.read_replica.is_some()
            && !(primary_is_postgres
                && self
                    .read_replica
                    .as_ref()
                    .is_some_and(|replica| is_postgres(replica.get_url())))
        {
            return Err(ConnectError::Unsupported(
                "read replicas are supported on PostgreSQL (streaming standbys) only",
            ));
        }
        if self.feed.is_some()
            && !(primary_is_postgres && self.feed.as_deref().is_some_and(is_postgres))
        {
            return Err(ConnectError::Unsupported(
                "a separate feed URL is for PostgreSQL only (other databases poll the change log)",
            ));
        }
        #[cfg(feature = "sqlite")]
        create_sqlite_file(self.options.get_url());
        let db = Database::connect(self.options.clone()).await?;
        if is_read_only(&db).await? {
            let _ = db.close().await;
            return Err(ConnectError::ReadOnly);
        }
        if self.migrate {
            match self.pool_mode {
                PoolMode::Session => crate::store::migration::Migrator::up(&db, None).await?,
                PoolMode::Transaction => migrate_in_one_transaction(&self.options).await?,
            }
        }
        #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
        let mut repository = SeaOrmRepository::with_mode(db, self.pool_mode);
        #[cfg(feature = "postgres")]
        {
            if let Some(feed) = &self.feed {
                let options = feed
                    .parse::<sea_orm::sqlx::postgres::PgConnectOptions>()
                    .map_err(|_| {
                        ConnectError::Unsupported("the feed URL is not a valid PostgreSQL URL")
                    })?
                    .extra_float_digits(None);
                repository = repository.with_feed_options(options);
            }
            if let Some(options) = self.read_replica {
                let replica = Database::connect(options).await?;
                repository =
                    repository.with_replica(replica.get_postgres_connection_pool().clone());
            }
        }
        Ok(repository)
    }
}

/// Whether the database is read-only (a PostgreSQL standby, a MySQL/MariaDB
/// replica with `read_only`): the repository writes, and its feed must run on
/// the primary. Asked before any migration.
async fn is_read_only(db: &DatabaseConnection) -> Result<bool, DbErr> {
    #[cfg(any(feature = "postgres", feature = "mysql"))]
    use sea_orm::{DatabaseConnectionType as Type, sqlx::Row};
    // The simple query protocol: no prepared statement, whatever the pooler.
    let read_only: i32 = match &db.inner {
        #[cfg(feature = "postgres")]
        Type::SqlxPostgresPoolConnection(_) => {
            sea_orm::sqlx::raw_sql("SELECT pg_is_in_recovery()::int")
                .fetch_one(db.get_postgres_connection_pool())
                .await
                .and_then(|row| row.try_get(0))
                .map_err(|err| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(err.into())))?
        }
        #[cfg(feature = "mysql")]
        Type::SqlxMySqlPoolConnection(_) => {
            let read_only: i64 =
                sea_orm::sqlx::raw_sql("SELECT CAST(@@global.read_only AS SIGNED)")
                    .fetch_one(db.get_mysql_connection_pool())
                    .await
                    .and_then(|row| row.try_get(0))
                    .map_err(|err| DbErr::Conn(sea_orm::RuntimeErr::SqlxError(err.into())))?;
            i32::from(read_only != 0)
        }
        #[allow(unreachable_patterns)]
        _ => 0,
    };
    Ok(read_only != 0)
}

/// Runs the migrations through a transaction-mode pooler: on a connection of
/// their own, in one transaction (the pooler keeps one server session for it),
/// whose named prepared statements are deallocated before it commits; the
/// connection is then closed, so nothing it prepared is used again.
async fn migrate_in_one_transaction(options: &ConnectOptions) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    use sea_orm_migration::MigratorTrait;
    let mut options = options.clone();
    options.max_connections(1).min_connections(0);
    let db = Database::connect(options).await?;
    let transaction = db.begin().await?;
    crate::store::migration::Migrator::up(&transaction, None).await?;
    transaction.execute_unprepared("DEALLOCATE ALL").await?;
    transaction.commit().await?;
    db.close().await
}

#[cfg(test)]
mod driver_tests {
    use super::missing_driver;

    #[test]
    fn a_url_whose_driver_is_missing_names_the_feature() {
        let only_sqlite = &["sqlite"];
        assert_eq!(
            missing_driver("postgres://u@h/db", only_sqlite),
            Some("postgres")
        );
        assert_eq!(
            missing_driver("postgresql://h/db", only_sqlite),
            Some("postgres")
        );
        assert_eq!(
            missing_driver("mysql://root@h/db", only_sqlite),
            Some("mysql")
        );
        assert_eq!(missing_driver("mariadb://h/db", only_sqlite), Some("mysql"));
        assert_eq!(missing_driver("sqlite://keys.db", only_sqlite), None);
        assert_eq!(
            missing_driver("sqlite://keys.db", &["postgres"]),
            Some("sqlite")
        );
        assert_eq!(
            missing_driver("postgres://h/db", &["sqlite", "postgres"]),
            None
        );
        // Unknown schemes are left to the driver's own error.
        assert_eq!(missing_driver("oracle://h/db", only_sqlite), None);
    }
}
