//! The database URL before connecting, and why a connection failed.

use std::{error::Error, time::Duration};

use sea_orm::{ConnAcquireErr, DbErr, RuntimeErr};
use tower_api_keys::store::{ConnectError, redact_url};

use crate::error::CliError;

/// What every message about an unusable URL suggests.
const EXPECTED: &str = "expected sqlite://…, postgres://… or mysql://… (MariaDB too)";

/// How long the one direct connection that explains a pool timeout may take.
const DIAGNOSIS_TIMEOUT: Duration = Duration::from_secs(3);

/// Checks the URL before anything connects: a usage error (exit 1) when it is
/// empty, no URL, or of a kind of database the tool does not know. (A kind
/// this build has no driver for is refused by `connect`, see
/// [`connect_error`].)
pub(crate) fn check_url(url: &str) -> Result<(), CliError> {
    if url.trim().is_empty() {
        return Err(CliError::usage_without_url(format!(
            "no key store: DATABASE_URL (or --database-url) is empty; {EXPECTED}"
        )));
    }
    // Never quoted: text that is no URL may well be a password.
    let Some(scheme) = scheme_of(url) else {
        return Err(CliError::usage_without_url(format!(
            "DATABASE_URL (or --database-url) is not a URL; {EXPECTED}"
        )));
    };
    // Which driver a known scheme needs, and whether this build has it, is
    // the library's to say: `connect` refuses it as `MissingFeature`.
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" | "postgres" | "postgresql" | "mysql" => {}
        "mariadb" => {
            return Err(CliError::usage(
                "DATABASE_URL names a mariadb:// database: MariaDB is reached with a mysql:// URL",
            ));
        }
        scheme => {
            return Err(CliError::usage(format!(
                "DATABASE_URL names an unknown kind of database, `{scheme}:`; {EXPECTED}"
            )));
        }
    }
    // A URL its driver cannot parse stays the store's error (exit 3), as the
    // driver reports it.
    Ok(())
}

/// The message for a URL whose driver this build lacks.
fn missing_driver(scheme: &str, feature: &str) -> String {
    format!(
        "{scheme}: databases need the `{feature}` driver, which this build of tower-api-keys \
         lacks: install it with `cargo install tower-api-keys --features cli,{feature}`"
    )
}

/// The scheme of `url` (RFC 3986: a letter, then letters, digits, `+`, `-`
/// or `.`, before the first `:`), if it has one.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once(':')?;
    let mut chars = scheme.chars();
    (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// The error of a failed [`connect`](tower_api_keys::store::RepositoryBuilder::connect)
/// of `url`: the configuration's fault (exit 1), or the store unavailable
/// (exit 3) with the driver's own reason. A pool timeout hides that reason (the
/// pool retries a refused connection until its timeout, then forgets why), so
/// one direct connection asks the driver for it.
pub(crate) async fn connect_error(err: ConnectError, url: &str) -> CliError {
    let shown = redact_url(url);
    match err {
        ConnectError::ReadOnly => CliError::usage(format!(
            "DATABASE_URL ({shown}) names a read-only server (a standby or a read \
             replica): DATABASE_URL must name the primary"
        )),
        ConnectError::MissingFeature { scheme, feature } => {
            CliError::usage(missing_driver(&scheme, feature))
        }
        err if err.is_configuration() => CliError::usage(with_sources(&err)),
        err => {
            let mut reason = with_sources(&err);
            if is_pool_timeout(&err)
                && let Some(cause) = direct_connect_error(url).await
            {
                reason = format!("{cause} (retried until the connection pool timed out)");
            }
            CliError::unavailable(format!("cannot open the key store at {shown}: {reason}"))
        }
    }
}

/// `err` and each of its sources that its message does not already hold.
fn with_sources(err: &(dyn Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        source = cause.source();
    }
    text
}

/// Whether connecting failed only because the pool's timeout ran out.
fn is_pool_timeout(err: &ConnectError) -> bool {
    match err {
        ConnectError::Database(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)) => true,
        ConnectError::Database(DbErr::Conn(RuntimeErr::SqlxError(err))) => {
            matches!(**err, sea_orm::sqlx::Error::PoolTimedOut)
        }
        _ => false,
    }
}

/// Why one direct connection to `url` fails, if it does (within
/// [`DIAGNOSIS_TIMEOUT`]); `None` when it succeeds or for SQLite.
async fn direct_connect_error(url: &str) -> Option<String> {
    use sea_orm::sqlx::{ConnectOptions, Connection};
    let scheme = scheme_of(url)?.to_ascii_lowercase();
    let attempt = async {
        match scheme.as_str() {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => {
                // As the pool connects: without `extra_float_digits`, which a
                // stock PgBouncer refuses.
                let options = url
                    .parse::<sea_orm::sqlx::postgres::PgConnectOptions>()?
                    .extra_float_digits(None);
                options.connect().await?.close().await
            }
            #[cfg(feature = "mysql")]
            "mysql" => {
                let options = url.parse::<sea_orm::sqlx::mysql::MySqlConnectOptions>()?;
                options.connect().await?.close().await
            }
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(DIAGNOSIS_TIMEOUT, attempt).await {
        Ok(Ok(())) => None,
        Ok(Err(err)) => Some(with_sources(&err)),
        Err(_) => Some(format!(
            "the server did not answer within {} s",
            DIAGNOSIS_TIMEOUT.as_secs()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn urls_the_tool_cannot_use_are_usage_errors() {
        for url in [
            "",
            "  ",
            "hunter2",
            "/var/keys.db",
            "redis://h/db",
            "postgress://h/db",
            "mariadb://h/db",
        ] {
            let err = check_url(url).expect_err(url);
            assert_eq!(err.kind, Kind::Usage, "{url}");
        }
        for url in [
            "sqlite://keys.db",
            "sqlite::memory:",
            "postgres://u:pw@h/db",
            "postgresql://h/db",
            "mysql://u@h:3306/db",
        ] {
            assert!(check_url(url).is_ok(), "{url}");
        }
        let err = check_url("hunter2").unwrap_err();
        assert!(!err.line(Some("hunter2")).contains("hunter2"));
    }

    #[test]
    fn a_missing_driver_says_how_to_install_the_tool_with_it() {
        assert_eq!(
            missing_driver("postgres", "postgres"),
            "postgres: databases need the `postgres` driver, which this build of \
             tower-api-keys lacks: install it with `cargo install tower-api-keys --features \
             cli,postgres`"
        );
    }
}
