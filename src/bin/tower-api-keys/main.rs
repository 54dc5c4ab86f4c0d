//! `tower-api-keys`: the operators' command-line tool, over the same
//! [`KeyManager`](tower_api_keys::KeyManager) as the HTTP API.
//!
//! ```text
//! cargo install tower-api-keys --features cli
//! tower-api-keys create --account 6f1c0a52-3b8e-4a51-9a55-2f4a1c2b9d10 --title "CI deploys" \
//!     --scope reports:read --rate-limit 100/60
//! tower-api-keys list --account 6f1c0a52-3b8e-4a51-9a55-2f4a1c2b9d10 --json
//! tower-api-keys revoke <key_id>
//! ```
//!
//! | command | does |
//! |---|---|
//! | `migrate` | runs the crate's migrations (every command does) |
//! | `create --account <uuid> --title <t> [--description <d>] [--expires-in-days <n>] [--scope <s>]… [--metadata <json>] [--rate-limit <requests>/<seconds>]` | creates a key; prints its secret once |
//! | `list --account <uuid>` | the account's keys, newest first |
//! | `show <key_id>`, `revoke <key_id>`, `delete <key_id>` | one key, whatever its account |
//! | `rotate <key_id> [--grace-period-seconds <n>]` | replaces a key; prints the new secret once |
//! | `import <file or ->` | JSON lines of keys hashed elsewhere with the same pepper; all or nothing |
//! | `pepper status`, `pepper retire <id>` | keys per pepper; revoke the keys left on an old pepper |
//!
//! The key store is `DATABASE_URL` (or `--database-url`, which shows a
//! password to every user of the machine in `ps`: prefer the variable; the
//! tool warns. Default `sqlite://api-keys.db`, created if missing). `MAX_KEYS_PER_ACCOUNT` (or
//! `--max-keys-per-account`, default 1,000) bounds the keys of one account. The peppers are read as the
//! example server reads them: `API_KEY_PEPPER` and `API_KEY_PREVIOUS_PEPPERS`,
//! else the file `api-keys.pepper` in the working directory. The tool never
//! creates a pepper: `create`, `rotate` and `pepper …` need one; the other
//! commands neither hash nor need it.
//!
//! With `--json` a command prints one JSON document on stdout, with the field
//! names of the HTTP API. Exit status: `0` ok, `1` usage or validation error
//! (a bad command line, with clap's whole message and tip; a `DATABASE_URL`
//! that is empty, no URL or of an unknown kind), `2` no such key or pepper,
//! `3` key store unavailable (with the driver's reason: connection refused,
//! unknown host, access denied). An error is one line on stderr.
//! Logs are off unless `RUST_LOG` is set. Only `create` and `rotate` print a
//! secret; no command prints a hash or a pepper, and database URLs in errors
//! are redacted.

mod cli;
mod commands;
mod config;
mod database;
mod error;
mod import;
mod output;

use std::{
    io::{IsTerminal, Write},
    process::ExitCode,
};

use clap::{CommandFactory, FromArgMatches, error::ErrorKind, parser::ValueSource};
use tower_api_keys::store::url_has_secret;
use tracing_subscriber::EnvFilter;

use crate::{cli::Cli, error::CliError};

fn main() -> ExitCode {
    init_logs();
    let cli = match Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((Cli::from_arg_matches(&matches)?, matches)))
    {
        Ok((cli, matches)) => {
            warn_of_a_password_on_the_command_line(&cli, &matches);
            cli
        }
        Err(err) => return usage_error(&err),
    };
    let json = cli.json;
    let database_url = cli.database_url.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return fail(&CliError::unavailable(format!(
                "cannot start the tokio runtime: {err}"
            )));
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Background work (connection pools) ends here, not after the output.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(report) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(report.render(json).as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&CliError::usage(format!("cannot write to stdout: {err}"))),
            }
        }
        Err(err) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: {}",
                err.line(Some(&database_url))
            );
            err.exit_code()
        }
    }
}

/// Warns on stderr when `--database-url` (not `DATABASE_URL`) carries a
/// password: every user of the machine can read a process's arguments.
fn warn_of_a_password_on_the_command_line(cli: &Cli, matches: &clap::ArgMatches) {
    if matches.value_source("database_url") == Some(ValueSource::CommandLine)
        && url_has_secret(&cli.database_url)
    {
        let _ = writeln!(
            std::io::stderr(),
            "warning: the password in --database-url shows in the process list (ps); \
             set DATABASE_URL instead"
        );
    }
}

/// Logs on stderr, filtered by `RUST_LOG`, only when it is set.
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_none() {
        return;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::builder().parse_lossy(std::env::var("RUST_LOG").unwrap_or_default()),
        )
        .init();
}

/// Help and version go to stdout (exit 0). Any other clap error is a usage
/// error (exit 1): clap's whole message (what is wrong, which argument, its
/// tip, the usage line) on the one line of stderr every error gets.
fn usage_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = write!(std::io::stdout(), "{}", err.render());
            ExitCode::SUCCESS
        }
        _ => fail(&CliError::usage(clap_message(&err.render().to_string()))),
    }
}

/// clap's rendering of an error (plain text) on one line: the lines of a
/// paragraph joined by spaces, the paragraphs by `; `, without the leading
/// `error: ` (which [`fail`] prints).
fn clap_message(rendered: &str) -> String {
    let paragraphs: Vec<String> = rendered
        .split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .filter(|paragraph| !paragraph.is_empty())
        .collect();
    let message = paragraphs.join("; ");
    match message.strip_prefix("error: ") {
        Some(rest) => rest.to_owned(),
        None if message.is_empty() => "invalid command line; try '--help'".to_owned(),
        None => message,
    }
}

/// Prints `err` on one line of stderr and returns its exit status.
fn fail(err: &CliError) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {}", err.line(None));
    err.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's error for `args`, folded as the tool prints it.
    fn message(args: &[&str]) -> String {
        let err = Cli::command()
            .try_get_matches_from(std::iter::once("tower-api-keys").chain(args.iter().copied()))
            .expect_err("a usage error");
        clap_message(&err.render().to_string())
    }

    #[test]
    fn clap_errors_keep_the_argument_the_tip_and_the_usage() {
        assert_eq!(
            message(&["list"]),
            "the following required arguments were not provided: --account <UUID>; \
             Usage: tower-api-keys list --account <UUID>; For more information, try '--help'."
        );
        let typo = message(&["list", "--acount", "x"]);
        assert!(
            typo.starts_with("unexpected argument '--acount' found; tip: a similar argument exists: '--account'; Usage: tower-api-keys list"),
            "{typo}"
        );
        let missing = message(&["pepper"]);
        assert!(
            missing.contains("requires a subcommand") && missing.contains("status, retire"),
            "{missing}"
        );
        let missing = message(&[]);
        assert!(missing.contains("migrate, create, list"), "{missing}");
    }
}
