//! Fresh databases for one test on the servers the `TEST_*` variables name: a
//! PostgreSQL schema or a MySQL database, made and later dropped over an admin
//! connection of its own. (SQLite needs none: a file in a temporary directory.)
//!
//! Free of axum and of the rest of `common`, so that a test file built without
//! the `axum` feature (the command-line tool's) can include it by `#[path]`.
#![allow(dead_code, unreachable_pub)]

use sea_orm::{ConnectionTrait, Database, DbErr};
use uuid::Uuid;

/// A schema or database made for one test.
pub struct Fresh {
    /// The URL it was made on, to drop it again.
    pub admin_url: String,
    /// The schema's (PostgreSQL) or database's (MySQL) name.
    pub name: String,
    /// The statement that drops it.
    pub drop: String,
}

impl Fresh {
    /// Drops the schema or database (errors ignored: the test is over).
    pub async fn drop_it(&self) {
        admin(&self.admin_url, &self.drop).await.ok();
    }
}

/// Runs `statement` on a connection of its own to `url`.
pub async fn admin(url: &str, statement: &str) -> Result<(), DbErr> {
    let admin = Database::connect(url).await?;
    let result = admin.execute_unprepared(statement).await.map(drop);
    admin.close().await.ok();
    result
}

/// A name no other test uses, beginning with `prefix`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}{}", Uuid::new_v4().simple())
}

/// The value of `variable`; panics, saying what it is for, when it is unset.
///
/// The tests that need a server are `#[ignore = "needs TEST_…"]`: they run
/// with `cargo test -- --include-ignored` (`.ci/run` does), and there a
/// missing variable is a failure, never a silent pass.
pub fn required(variable: &str, what: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{variable} is not set: this test needs {what}; set it (see `.ci/run`) \
             or run without `--include-ignored`"
        ),
    }
}

/// The URL in `variable`; panics when it is unset or the driver's feature is
/// off.
fn configured(variable: &str, what: &str, feature: &str, enabled: bool) -> String {
    let url = required(variable, what);
    assert!(
        enabled,
        "{variable} is set but the `{feature}` feature is off: build the tests with \
         `--features {feature}` (or `--all-features`)"
    );
    url
}

/// A fresh schema named `prefix…` on `TEST_POSTGRES_URL`; `then(schema)`, if
/// not empty, runs right after `CREATE SCHEMA` in the same batch.
/// Panics when `TEST_POSTGRES_URL` is unset.
pub async fn postgres_schema(prefix: &str, then: impl FnOnce(&str) -> String) -> Fresh {
    let url = configured(
        "TEST_POSTGRES_URL",
        "a PostgreSQL server",
        "postgres",
        cfg!(feature = "postgres"),
    );
    let schema = unique_name(prefix);
    let mut create = format!("CREATE SCHEMA \"{schema}\"");
    let more = then(&schema);
    if !more.is_empty() {
        create = format!("{create}; {more}");
    }
    admin(&url, &create)
        .await
        .expect("TEST_POSTGRES_URL: creating the test's schema");
    Fresh {
        drop: format!("DROP SCHEMA \"{schema}\" CASCADE"),
        admin_url: url,
        name: schema,
    }
}

/// A fresh database named `prefix…` on the server of `TEST_MYSQL_URL`, and the
/// URL that reaches it. Panics when `TEST_MYSQL_URL` is unset.
pub async fn mysql_database(prefix: &str) -> (Fresh, String) {
    let url = configured(
        "TEST_MYSQL_URL",
        "a MySQL or MariaDB server",
        "mysql",
        cfg!(feature = "mysql"),
    );
    let database = unique_name(prefix);
    admin(
        &url,
        &format!("CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
    )
    .await
    .expect("TEST_MYSQL_URL: creating the test's database");
    let (base, _) = url
        .rsplit_once('/')
        .expect("TEST_MYSQL_URL names a database");
    let test_url = format!("{base}/{database}");
    (
        Fresh {
            drop: format!("DROP DATABASE `{database}`"),
            admin_url: url,
            name: database,
        },
        test_url,
    )
}
