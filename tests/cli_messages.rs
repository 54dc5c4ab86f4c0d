//! What the command-line tool says when it cannot do what it is asked, run as
//! a process: a bad command line, a database URL it cannot use, a database it
//! cannot reach, a pepper id it does not know. Each case checks the exit
//! status, that the one line on stderr names the cause, and that no password
//! is printed.
//!
//! The tests against a closed port or an invalid host need no server. Those
//! against a real server read `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` and are
//! ignored by default.

use std::process::{Command, Stdio};

use tower_api_keys::{Pepper, PepperId};
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_tower-api-keys");
const PEPPER: &str = "cli-messages-pepper-0123456789";
const OTHER_PEPPER: &str = "cli-messages-pepper-after-rotation";
/// The password every URL of these tests carries: it must never be printed.
const PASSWORD: &str = "S3CRET-pw";

/// What one run of the tool left.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Exits with `code`, one line on stderr starting `error: `, nothing on
    /// stdout, no password anywhere.
    #[track_caller]
    fn fails(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        self
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        self
    }

    #[track_caller]
    fn says(self, part: &str) -> Self {
        assert!(self.stderr.contains(part), "{part:?} missing: {self:?}");
        self
    }
}

/// Runs the tool in `dir` with `DATABASE_URL=url`, the pepper `pepper` (none
/// if `None`) and no other configuration.
fn run_in(dir: &std::path::Path, url: &str, pepper: Option<&str>, args: &[&str]) -> Out {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", url)
        .env_remove("RUST_LOG")
        .env_remove("API_KEY_PEPPER")
        .env_remove("API_KEY_PREVIOUS_PEPPERS")
        .env_remove("DATABASE_POOL_MODE")
        .env_remove("MAX_KEYS_PER_ACCOUNT")
        .stdin(Stdio::null());
    if let Some(pepper) = pepper {
        command.env("API_KEY_PEPPER", pepper);
    }
    let output = command.output().unwrap();
    let out = Out {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(PASSWORD), "a password was printed: {out:?}");
        assert!(!text.contains(PEPPER) && !text.contains(OTHER_PEPPER));
    }
    out
}

/// Runs the tool over `url` in a fresh directory, with the test pepper.
fn run(url: &str, args: &[&str]) -> Out {
    let dir = tempfile::tempdir().unwrap();
    run_in(dir.path(), url, Some(PEPPER), args)
}

/// A SQLite URL in `dir`.
fn sqlite(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("keys.db").display())
}

/// Runs `list` over each URL at once (each may wait for a connect timeout).
fn list_each(urls: &[String]) -> Vec<Out> {
    let account = Uuid::new_v4().to_string();
    std::thread::scope(|scope| {
        let runs: Vec<_> = urls
            .iter()
            .map(|url| {
                let account = &account;
                scope.spawn(move || run(url, &["list", "--account", account]))
            })
            .collect();
        runs.into_iter().map(|run| run.join().unwrap()).collect()
    })
}

#[test]
fn a_bad_command_line_prints_clap_whole_message_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path());
    let run = |args: &[&str]| run_in(dir.path(), &url, Some(PEPPER), args);

    // The missing argument is named, with the usage line.
    run(&["list"])
        .fails(1)
        .says("the following required arguments were not provided: --account <UUID>")
        .says("Usage: tower-api-keys list")
        .says("try '--help'");
    run(&["create", "--account", &Uuid::new_v4().to_string()])
        .fails(1)
        .says("--title <TITLE>");
    // clap's tip survives.
    run(&["list", "--acount", "x"])
        .fails(1)
        .says("unexpected argument '--acount' found")
        .says("tip: a similar argument exists: '--account'");
    run(&["frobnicate"])
        .fails(1)
        .says("unrecognized subcommand 'frobnicate'");
    run(&["list", "--account", "not-a-uuid"])
        .fails(1)
        .says("invalid value 'not-a-uuid' for '--account <UUID>'");
    // A missing command lists the commands.
    run(&[])
        .fails(1)
        .says("requires a subcommand")
        .says("migrate, create, list");
    run(&["pepper"]).fails(1).says("status, retire");

    // Help and version are no errors.
    let help = run(&["--help"]).ok();
    assert!(help.stdout.contains("Usage: tower-api-keys"), "{help:?}");
    assert_eq!(help.stderr, "");
    let help = run(&["pepper", "retire", "--help"]).ok();
    assert!(help.stdout.contains("pepper status"), "{help:?}");
    let version = run(&["--version"]).ok();
    assert!(version.stdout.starts_with("tower-api-keys "), "{version:?}");
    assert!(
        !dir.path().join("keys.db").exists(),
        "nothing was opened for a bad command line"
    );
}

#[test]
fn a_database_url_the_tool_cannot_use_is_a_usage_error() {
    let account = Uuid::new_v4().to_string();
    let list = ["list", "--account", account.as_str()];
    run(&format!("redis://u:{PASSWORD}@127.0.0.1:1/0"), &list)
        .fails(1)
        .says("unknown kind of database, `redis:`")
        .says("expected sqlite://…, postgres://… or mysql://…");
    run(&format!("postgress://u:{PASSWORD}@127.0.0.1:1/db"), &list)
        .fails(1)
        .says("`postgress:`");
    run(&format!("mariadb://u:{PASSWORD}@127.0.0.1:1/db"), &list)
        .fails(1)
        .says("MariaDB is reached with a mysql:// URL");
    run("", &list)
        .fails(1)
        .says("DATABASE_URL (or --database-url) is empty");
    // Not a URL: maybe a password set in the wrong variable, never quoted.
    for not_a_url in [PASSWORD, "x"] {
        let out = run(not_a_url, &list)
            .fails(1)
            .says("DATABASE_URL (or --database-url) is not a URL; expected sqlite://…");
        assert!(!out.stderr.contains("<not a URL>"), "{out:?}");
    }
}

#[test]
fn a_refused_connection_says_so() {
    let urls = [
        format!("postgres://postgres:{PASSWORD}@127.0.0.1:1/test"),
        format!("mysql://root:{PASSWORD}@127.0.0.1:1/test"),
    ];
    for (url, out) in urls.iter().zip(list_each(&urls)) {
        let shown = url.replace(&format!("{}:{PASSWORD}@", user(url)), "***@");
        let out = out
            .fails(3)
            .says(&format!("cannot open the key store at {shown}: "))
            .says("Connection refused");
        assert!(!out.stderr.contains("pool timed out while"), "{out:?}");
    }
}

#[test]
fn an_unknown_host_says_so() {
    let urls = [
        format!("postgres://u:{PASSWORD}@nonexistent.invalid/db"),
        format!("mysql://u:{PASSWORD}@nonexistent.invalid/db"),
    ];
    for (url, out) in urls.iter().zip(list_each(&urls)) {
        let scheme = url.split(':').next().unwrap();
        out.fails(3)
            .says(&format!(
                "cannot open the key store at {scheme}://***@nonexistent.invalid/db: "
            ))
            .says("failed to lookup address information");
    }
}

#[test]
#[ignore = "needs TEST_MYSQL_URL"]
fn refused_credentials_say_so() {
    let admin = std::env::var("TEST_MYSQL_URL").expect("TEST_MYSQL_URL must be set");
    let server = server_of(&admin);
    let url = format!("mysql://nobody:{PASSWORD}@{server}/test");
    run(&url, &["list", "--account", &Uuid::new_v4().to_string()])
        .fails(3)
        .says(&format!(
            "cannot open the key store at mysql://***@{server}/test: "
        ))
        .says("Access denied for user 'nobody'");
}

#[test]
#[ignore = "needs TEST_POSTGRES_URL"]
fn a_database_that_does_not_exist_says_so() {
    let admin = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL must be set");
    let (server, user) = (server_of(&admin), user(&admin));
    let database = format!("tak_no_such_db_{}", Uuid::new_v4().simple());
    let url = format!("postgres://{user}:{PASSWORD}@{server}/{database}");
    run(&url, &["migrate"])
        .fails(3)
        .says(&format!(
            "cannot open the key store at postgres://***@{server}/{database}: "
        ))
        .says(&format!("database \"{database}\" does not exist"));
}

#[test]
fn retiring_an_unknown_pepper_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite(dir.path());
    let id_of = |pepper: &str| PepperId::of(&Pepper::try_from(pepper).unwrap()).to_string();
    let (old_id, new_id) = (id_of(PEPPER), id_of(OTHER_PEPPER));
    let account = Uuid::new_v4().to_string();
    let create = ["create", "--account", &account, "--title", "t"];
    run_in(dir.path(), &url, Some(PEPPER), &create).ok();

    // Neither configured nor named by a key: a typo, not a retirement.
    for unknown in ["0123456789abcdef", "no-such-pepper", new_id.as_str()] {
        run_in(
            dir.path(),
            &url,
            Some(PEPPER),
            &["pepper", "retire", unknown],
        )
        .fails(2)
        .says(&format!("no pepper {unknown}: it is not configured"))
        .says("`pepper status` lists the pepper ids");
    }
    // The current pepper: a usage error.
    run_in(
        dir.path(),
        &url,
        Some(PEPPER),
        &["pepper", "retire", &old_id],
    )
    .fails(1)
    .says("the current pepper cannot be retired");
    // A pepper the configuration lost but a key names can be retired.
    let out = run_in(
        dir.path(),
        &url,
        Some(OTHER_PEPPER),
        &["pepper", "retire", &old_id],
    )
    .ok();
    assert_eq!(
        out.stdout,
        format!("pepper {old_id} retired: 1 keys revoked\n")
    );
    // A configured previous pepper is known, though no key names it.
    let out = Command::new(BIN)
        .args(["pepper", "retire", &old_id])
        .current_dir(dir.path())
        .env("DATABASE_URL", &url)
        .env("API_KEY_PEPPER", OTHER_PEPPER)
        .env("API_KEY_PREVIOUS_PEPPERS", PEPPER)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("pepper {old_id} retired: 0 keys revoked\n")
    );
    // Neither configured nor named by a key that can still validate: unknown.
    run_in(
        dir.path(),
        &url,
        Some(OTHER_PEPPER),
        &["pepper", "retire", &old_id],
    )
    .fails(2);
}

/// The `host:port` of a URL.
fn server_of(url: &str) -> &str {
    let rest = url.split_once("://").expect("a URL").1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?']).next().unwrap()
}

/// The user of a URL (empty if none).
fn user(url: &str) -> &str {
    let rest = url.split_once("://").expect("a URL").1;
    rest.rsplit_once('@')
        .map_or("", |(userinfo, _)| userinfo.split(':').next().unwrap())
}
