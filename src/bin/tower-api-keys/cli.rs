//! The command line, as clap parses it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use tower_api_keys::RateLimit;
use uuid::Uuid;

/// The default key store: a SQLite file in the working directory, created if
/// missing (as the example server's).
pub(crate) const DEFAULT_DATABASE_URL: &str = "sqlite://api-keys.db";

/// Manage the API keys of a `tower-api-keys` key store.
///
/// Reads the store from DATABASE_URL and the peppers from API_KEY_PEPPER and
/// API_KEY_PREVIOUS_PEPPERS, or else from the file `api-keys.pepper` in the
/// working directory, as the example server does; with API_KEY_PREFIX set,
/// `create` and `rotate` also print the key's token form. The tool never creates a
/// pepper: `create`, `rotate` and `pepper …` need one. Every command runs the crate's
/// migrations first.
///
/// Exit status: 0 ok, 1 usage or validation error (a bad command line or
/// DATABASE_URL too), 2 no such key or pepper, 3 key store unavailable.
/// Errors are one line on stderr; logs are off unless RUST_LOG is set.
#[derive(Debug, Parser)]
// A missing command is an error naming the commands, not the whole help.
#[command(
    name = "tower-api-keys",
    version,
    propagate_version = true,
    arg_required_else_help = false
)]
pub(crate) struct Cli {
    /// The key store: sqlite://…, postgres://… or mysql://… (MariaDB too).
    /// Prefer the DATABASE_URL variable: a password given with this flag
    /// shows in the process list (`ps`) of every user of the machine, and the
    /// tool warns about it.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = DEFAULT_DATABASE_URL,
        value_name = "URL"
    )]
    pub(crate) database_url: String,

    /// How DATABASE_URL is reached: `session` (a direct connection or a
    /// session-mode pooler) or `transaction` (PgBouncer in transaction mode,
    /// Supavisor's port 6543).
    #[arg(
        long,
        global = true,
        env = "DATABASE_POOL_MODE",
        default_value = "session",
        value_name = "MODE"
    )]
    pub(crate) database_pool_mode: tower_api_keys::store::PoolMode,

    /// The most keys one account may have (every key not deleted counts);
    /// `create` and `import` refuse one more (exit 1).
    #[arg(
        long,
        global = true,
        env = "MAX_KEYS_PER_ACCOUNT",
        default_value_t = tower_api_keys::limits::DEFAULT_MAX_KEYS_PER_ACCOUNT,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "N"
    )]
    pub(crate) max_keys_per_account: u64,

    /// Print one JSON document on stdout, with the field names of the HTTP API.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the crate's migrations (every command does) and report.
    Migrate,
    /// Create a key; prints its secret, this once.
    Create(CreateArgs),
    /// The keys of one account, newest first.
    List {
        /// The owning account.
        #[arg(long, value_name = "UUID")]
        account: Uuid,
    },
    /// One key, whatever its account.
    Show {
        /// The key's id.
        key_id: Uuid,
    },
    /// Revoke a key (idempotent).
    Revoke {
        /// The key's id.
        key_id: Uuid,
    },
    /// Delete a key.
    Delete {
        /// The key's id.
        key_id: Uuid,
    },
    /// Replace a key with a new one (same title, description, scopes, metadata,
    /// rate limit, allowlist and lifetime); prints the new secret, this once.
    Rotate {
        /// The key to replace.
        key_id: Uuid,
        /// How long the old key keeps working, 0 to 604800; 0 revokes it at once.
        #[arg(long, default_value_t = 0, value_name = "SECONDS")]
        grace_period_seconds: u64,
    },
    /// Import keys hashed elsewhere with the same pepper, from JSON lines.
    ///
    /// One JSON object per line: `public_key`, `secret_key_hash`, `account_id`
    /// and `title` required; `key_id`, `description`, `status`
    /// (active|revoked|expired), `expires_at`, `last_used_at`, `created_at`
    /// (RFC 3339), `scopes`, `metadata`, `rate_limit` ({"requests",
    /// "period_seconds"}), `allowed_cidrs` (an array of CIDRs) and `pepper_id`
    /// optional. Blank lines are skipped; a
    /// member named twice in one object is refused.
    /// Every line is checked before any is written, and all are written in one
    /// transaction: one bad line, or a `public_key` or `key_id` that exists
    /// already (in the file or the store), writes nothing.
    Import {
        /// The file to read, or `-` for standard input.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// The audit log, newest first: every account's, or one account's or
    /// key's.
    Audit {
        /// Only this account's entries.
        #[arg(long, value_name = "UUID")]
        account: Option<Uuid>,
        /// Only this key's entries.
        #[arg(long = "key", value_name = "KEY_ID")]
        key: Option<Uuid>,
        /// At most this many entries, 1–500.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=500), value_name = "N")]
        limit: u32,
        /// Only entries with an id below this one (the next page).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..), value_name = "ID")]
        before: Option<i64>,
    },
    /// Pepper rotation: keys per pepper, and retiring an old pepper.
    #[command(subcommand, arg_required_else_help = false)]
    Pepper(PepperCommand),
    /// Lifecycle events kept as failed after 24 h of retries.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Print a pattern for secret scanners that matches exactly this service's
    /// credentials: the token form of API_KEY_PREFIX (when set) and
    /// `pk_…:sk_…`. Reads neither the store nor the pepper.
    ScanningPattern {
        /// `regex` (one line) or `gitleaks` (a `[[rules]]` entry for its TOML
        /// configuration).
        #[arg(long, value_enum, default_value_t = PatternFormat::Regex)]
        format: PatternFormat,
    },
}

/// The forms `scanning-pattern` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PatternFormat {
    /// The regular expression alone.
    Regex,
    /// A gitleaks rule.
    Gitleaks,
}

/// `events …`.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// The failed events, oldest first.
    Failed {
        /// At most this many, 1–1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000), value_name = "N")]
        limit: u32,
    },
    /// Put failed events back for delivery (a running server sends them).
    Retry {
        /// The event's id (`webhook-id`, as `events failed` shows it).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        event_id: Option<String>,
        /// Every failed event.
        #[arg(long)]
        all: bool,
    },
}

/// `pepper …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PepperCommand {
    /// Keys that can still validate, per pepper id (current, previous, legacy,
    /// and any that rows name but the configuration lacks).
    Status,
    /// Revoke every key still hashed with a previous pepper (the end of a
    /// rotation, for keys unused since it began).
    Retire {
        /// The pepper's id, as `pepper status` shows it.
        pepper_id: String,
    },
}

/// `create …`.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The owning account.
    #[arg(long, value_name = "UUID")]
    pub(crate) account: Uuid,
    /// Title, 1–255 characters (trimmed).
    #[arg(long)]
    pub(crate) title: String,
    /// Description, up to 4096 characters.
    #[arg(long)]
    pub(crate) description: Option<String>,
    /// Expire the key after this many days (1–365); default: never.
    #[arg(long, value_name = "DAYS", allow_negative_numbers = true)]
    pub(crate) expires_in_days: Option<i64>,
    /// A scope the key grants (repeat for several); without any, the key is
    /// unrestricted.
    #[arg(long = "scope", value_name = "SCOPE")]
    pub(crate) scopes: Vec<String>,
    /// Metadata, a JSON object of at most 4096 bytes.
    #[arg(long, value_name = "JSON")]
    pub(crate) metadata: Option<String>,
    /// The key's own rate limit, `<requests>/<seconds>` (e.g. `100/60`).
    #[arg(long, value_name = "REQUESTS/SECONDS", value_parser = parse_rate_limit)]
    pub(crate) rate_limit: Option<RateLimit>,
    /// A network the key may be used from, a CIDR or an address (repeat for
    /// several, at most 64); without any, the key works from any address.
    #[arg(long = "allow-cidr", value_name = "CIDR")]
    pub(crate) allow_cidrs: Vec<String>,
}

/// `<requests>/<seconds>`, within the bounds of [`RateLimit::new`].
fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let (requests, seconds) = text
        .split_once('/')
        .ok_or("expected <requests>/<seconds>, e.g. 100/60")?;
    let requests: u32 = requests
        .trim()
        .parse()
        .map_err(|_| "requests must be between 1 and 1000000")?;
    let seconds: u32 = seconds
        .trim()
        .parse()
        .map_err(|_| "period_seconds must be between 1 and 86400")?;
    RateLimit::new(requests, seconds).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rate_limits_parse_within_bounds() {
        assert_eq!(
            parse_rate_limit("100/60"),
            Ok(RateLimit::new(100, 60).unwrap())
        );
        for bad in [
            "", "100", "/60", "100/", "0/60", "5/0", "5/86401", "-1/5", "a/b", "1/2/3",
        ] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }
}
