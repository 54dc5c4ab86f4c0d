//! The command-line tool, run as a process.
//!
//! Each test gets a temporary working directory and a fresh database: a SQLite
//! file always, and a fresh PostgreSQL schema / MySQL database on
//! `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` (those tests are ignored unless run
//! with `--include-ignored`). Every run checks that stdout
//! and stderr hold no 64-hex-digit string and no pepper, and that an error is
//! one line.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::{Value, json};
use tower_api_keys::{
    ApiKeyValidator, KeyPair, Pepper, PepperId, Rejection, hash::KeyHasher, store::SeaOrmRepository,
};
use uuid::Uuid;

#[path = "common/provision.rs"]
mod provision;

const BIN: &str = env!("CARGO_BIN_EXE_tower-api-keys");
const PEPPER: &str = "cli-test-pepper-0123456789";
const NEW_PEPPER: &str = "cli-test-pepper-after-rotation";

/// A fresh database for one test, and how to drop it.
struct Db {
    url: String,
    backend: &'static str,
    /// The PostgreSQL schema / MySQL database to drop at the end.
    cleanup: Option<provision::Fresh>,
}

impl Db {
    /// A SQLite file (not yet created) in `dir`.
    fn sqlite(dir: &std::path::Path) -> Self {
        Self {
            url: format!("sqlite://{}", dir.join("keys.db").display()),
            backend: "sqlite",
            cleanup: None,
        }
    }

    /// A fresh schema of `TEST_POSTGRES_URL`, named in the URL's `options`;
    /// panics when it is unset.
    async fn postgres() -> Self {
        let schema = provision::postgres_schema("tak_cli_", |_| String::new()).await;
        let (url, name) = (&schema.admin_url, &schema.name);
        let separator = if url.contains('?') { '&' } else { '?' };
        Self {
            url: format!("{url}{separator}options=-c%20search_path%3D{name}"),
            backend: "postgres",
            cleanup: Some(schema),
        }
    }

    /// A fresh database on the server of `TEST_MYSQL_URL`; panics when it is
    /// unset.
    async fn mysql() -> Self {
        let (database, url) = provision::mysql_database("tak_cli_").await;
        Self {
            url,
            backend: "mysql",
            cleanup: Some(database),
        }
    }

    async fn drop_it(self) {
        if let Some(fresh) = self.cleanup {
            fresh.drop_it().await;
        }
    }
}

/// What one run of the tool left.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout is not JSON ({err}): {self:?}"))
    }

    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(self.code, 0, "{self:?}");
        assert_eq!(self.stderr, "", "logs are off without RUST_LOG");
        self
    }

    /// Exits with `code`, one line on stderr, nothing on stdout.
    #[track_caller]
    fn fails(self, code: i32) -> Self {
        assert_eq!(self.code, code, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        assert!(self.stderr.starts_with("error: "), "{self:?}");
        assert!(self.stderr.ends_with('\n'), "{self:?}");
        assert_eq!(self.stderr.lines().count(), 1, "one line: {self:?}");
        self
    }
}

/// A working directory, a database and the pepper in the environment.
struct Tool {
    dir: tempfile::TempDir,
    db: Db,
    pepper: Option<&'static str>,
    previous: Option<&'static str>,
}

impl Tool {
    fn new(dir: tempfile::TempDir, db: Db) -> Self {
        Self {
            dir,
            db,
            pepper: Some(PEPPER),
            previous: None,
        }
    }

    /// A tool over a SQLite file in a fresh directory.
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::sqlite(dir.path());
        Self::new(dir, db)
    }

    /// A tool over `db`, in a fresh directory.
    fn on(db: Db) -> Self {
        Self::new(tempfile::tempdir().unwrap(), db)
    }

    fn run(&self, args: &[&str]) -> Out {
        self.run_with(args, None, &[])
    }

    fn run_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("DATABASE_URL", &self.db.url)
            .env_remove("RUST_LOG")
            .env_remove("API_KEY_PEPPER")
            .env_remove("API_KEY_PREVIOUS_PEPPERS")
            .env_remove("API_KEY_PREFIX")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(pepper) = self.pepper {
            command.env("API_KEY_PEPPER", pepper);
        }
        if let Some(previous) = self.previous {
            command.env("API_KEY_PREVIOUS_PEPPERS", previous);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(input.as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        let out = Out {
            code: output.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        };
        for text in [&out.stdout, &out.stderr] {
            assert!(!has_hex64(text), "a 64-hex string was printed: {out:?}");
            for pepper in [PEPPER, NEW_PEPPER] {
                assert!(!text.contains(pepper), "the pepper was printed: {out:?}");
            }
        }
        out
    }

    /// `create --json` for `account` with `title` and any further arguments.
    fn create(&self, account: Uuid, title: &str, extra: &[&str]) -> Value {
        let account = account.to_string();
        let mut args = vec!["create", "--json", "--account", &account, "--title", title];
        args.extend_from_slice(extra);
        self.run(&args).ok().json()
    }

    fn list(&self, account: Uuid) -> Vec<Value> {
        let out = self.run(&["list", "--json", "--account", &account.to_string()]);
        match out.ok().json() {
            Value::Array(keys) => keys,
            other => panic!("not an array: {other}"),
        }
    }

    /// A validator over the same database, with the test pepper.
    async fn validator(&self) -> ApiKeyValidator {
        let repo = SeaOrmRepository::connect(&self.db.url).await.unwrap();
        ApiKeyValidator::builder(repo, Pepper::try_from(PEPPER).unwrap())
            .with_change_feed(false)
            .build()
    }

    async fn finish(self) {
        self.db.drop_it().await;
    }
}

/// Whether `text` holds 64 or more hexadecimal digits in a row.
fn has_hex64(text: &str) -> bool {
    let mut run = 0;
    for byte in text.bytes() {
        run = if byte.is_ascii_hexdigit() { run + 1 } else { 0 };
        if run >= 64 {
            return true;
        }
    }
    false
}

fn credential(created: &Value) -> String {
    format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    )
}

/// An import line for a key made elsewhere, hashed with `pepper`; returns the
/// line and the key's credential.
fn foreign_key(account: Uuid, title: &str, pepper: &str, extra: Value) -> (String, String) {
    let pair = KeyPair::generate().unwrap();
    let hash = KeyHasher::new(&Pepper::try_from(pepper).unwrap())
        .hash(pair.secret_key.expose())
        .to_hex();
    let mut line = json!({
        "public_key": pair.public_key.as_str(),
        "secret_key_hash": hash,
        "account_id": account,
        "title": title,
    });
    if let (Value::Object(line), Value::Object(extra)) = (&mut line, extra) {
        line.extend(extra);
    }
    (line.to_string(), pair.credential())
}

/// Runs a test on SQLite, and on PostgreSQL / MySQL: those are ignored unless
/// run with `--include-ignored`, and fail there if their URL is unset.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(super::Tool::sqlite()).await;
            }

            #[tokio::test]
            #[ignore = "needs TEST_POSTGRES_URL"]
            async fn postgres() {
                super::$name(super::Tool::on(super::Db::postgres().await)).await;
            }

            #[tokio::test]
            #[ignore = "needs TEST_MYSQL_URL"]
            async fn mysql() {
                super::$name(super::Tool::on(super::Db::mysql().await)).await;
            }
        }
    )*};
}

on_every_backend!(
    create_prints_the_secret_once_and_the_key_validates,
    list_is_newest_first_and_per_account,
    show_revoke_and_delete_by_id,
    unknown_key_ids_exit_2,
    rotate_prints_a_new_secret_and_revokes_the_old_key,
    import_writes_every_valid_line_with_its_status,
    import_with_a_bad_line_writes_nothing,
    import_with_a_duplicate_public_key_writes_nothing,
    pepper_status_counts_keys_per_pepper,
    create_refuses_metadata_no_database_could_store,
    create_and_import_stop_at_max_keys_per_account,
    allowlists_are_checked_stored_normalised_and_imported,
);

/// `--allow-cidr` and an import's `allowed_cidrs`: a bad entry is exit 1 with
/// nothing written; good ones are stored normalised, shown by `show`, and a
/// key imported with one keeps it.
async fn allowlists_are_checked_stored_normalised_and_imported(tool: Tool) {
    let account = Uuid::new_v4();
    let account_text = account.to_string();
    for bad in ["10.0.0.0/33", "fe80::1%eth0", "example.com", ""] {
        let out = tool
            .run(&[
                "create",
                "--account",
                &account_text,
                "--title",
                "t",
                "--allow-cidr",
                "127.0.0.1",
                "--allow-cidr",
                bad,
            ])
            .fails(1);
        assert_eq!(
            out.stderr,
            "error: invalid --allow-cidr: entry 1 is not an IPv4 or IPv6 address or CIDR (e.g. 203.0.113.0/24)\n",
            "{bad:?}"
        );
    }
    let many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    let mut args = vec!["create", "--account", &account_text, "--title", "t"];
    for cidr in &many {
        args.extend(["--allow-cidr", cidr]);
    }
    let out = tool.run(&args).fails(1);
    assert!(out.stderr.contains("at most 64"), "{out:?}");
    assert!(tool.list(account).is_empty(), "nothing was written");

    let created = tool.create(
        account,
        "fenced",
        &[
            "--allow-cidr",
            "192.0.2.77/24",
            "--allow-cidr",
            "192.0.2.0/24",
        ],
    );
    assert_eq!(created["allowed_cidrs"], json!(["192.0.2.0/24"]));
    let shown = tool
        .run(&["show", created["key_id"].as_str().unwrap()])
        .ok();
    assert!(
        shown.stdout.contains("allowed_cidrs 192.0.2.0/24\n"),
        "{}",
        shown.stdout
    );
    let open = tool.create(account, "open", &[]);
    assert_eq!(open["allowed_cidrs"], Value::Null);

    let (line, _) = foreign_key(
        account,
        "imported",
        PEPPER,
        json!({"allowed_cidrs": ["::ffff:10.0.0.1/120", "2001:db8::/32"]}),
    );
    tool.run_with(&["import", "-"], Some(&line), &[]).ok();
    let imported = tool
        .list(account)
        .into_iter()
        .find(|key| key["title"] == "imported")
        .unwrap();
    assert_eq!(
        imported["allowed_cidrs"],
        json!(["::ffff:10.0.0.0/120", "2001:db8::/32"])
    );
    tool.finish().await;
}

async fn create_prints_the_secret_once_and_the_key_validates(tool: Tool) {
    let account = Uuid::new_v4();
    let created = tool.create(
        account,
        "  CI deploys ",
        &[
            "--description",
            "from the pipeline",
            "--expires-in-days",
            "30",
            "--scope",
            "reports:write",
            "--scope",
            "reports:read",
            "--metadata",
            r#"{"team":"ops","n":1}"#,
            "--rate-limit",
            "100/60",
            "--allow-cidr",
            "10.1.2.3/8",
            "--allow-cidr",
            "2001:db8::1",
        ],
    );
    let object = created.as_object().unwrap();
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "allowed_cidrs",
            "created_at",
            "description",
            "expires_at",
            "key_id",
            "last_used_at",
            "metadata",
            "public_key",
            "rate_limit",
            "rotated_from",
            "scopes",
            "secret_key",
            "status",
            "title",
            "token"
        ],
        "{}",
        tool.db.backend
    );
    assert_eq!(created["title"], "CI deploys");
    assert_eq!(created["token"], credential(&created), "no key prefix");
    assert_eq!(created["description"], "from the pipeline");
    assert_eq!(created["status"], "active");
    assert_eq!(created["scopes"], json!(["reports:read", "reports:write"]));
    assert_eq!(created["metadata"], json!({"team": "ops", "n": 1}));
    assert_eq!(
        created["rate_limit"],
        json!({"requests": 100, "period_seconds": 60})
    );
    assert_eq!(
        created["allowed_cidrs"],
        json!(["10.0.0.0/8", "2001:db8::1/128"])
    );
    assert!(created["expires_at"].is_string());
    let secret = created["secret_key"].as_str().unwrap();
    assert!(secret.starts_with("sk_") && secret.len() == 35);

    // Stored as shown, and never shown again.
    let key_id = created["key_id"].as_str().unwrap();
    let shown = tool.run(&["show", "--json", key_id]).ok();
    assert!(!shown.stdout.contains(secret));
    let mut expected = created.clone();
    expected.as_object_mut().unwrap().remove("secret_key");
    expected.as_object_mut().unwrap().remove("token");
    assert_eq!(shown.json(), expected);
    let listed = tool.run(&["list", "--account", &account.to_string()]).ok();
    assert!(!listed.stdout.contains(secret));
    assert!(listed.stdout.contains(key_id));

    // The key works with the same pepper.
    let validator = tool.validator().await;
    let key = validator.validate(&credential(&created)).await.unwrap();
    assert_eq!(key.account_id().into_inner(), account);
    assert_eq!(key.key_id().to_string(), key_id);
    assert!(key.has_scope("reports:read"));
    validator.shutdown().await;
    tool.finish().await;
}

/// `--metadata` with U+0000 in a string or nested past 16 levels is a
/// validation error (exit 1) on every backend, not a store failure (exit 3)
/// or a row one database keeps and another refuses; 16 levels are kept.
async fn create_refuses_metadata_no_database_could_store(tool: Tool) {
    let account = Uuid::new_v4();
    let account_text = account.to_string();
    let nested = |levels: usize| {
        let mut value = json!("leaf");
        for _ in 1..levels {
            value = json!({ "k": value });
        }
        json!({ "k": value }).to_string()
    };
    for metadata in [
        r#"{"k":"a\u0000b"}"#.to_owned(),
        r#"{"\u0000":1}"#.to_owned(),
        r#"{"k":[["\u0000"]]}"#.to_owned(),
        nested(17),
        nested(32),
    ] {
        let out = tool
            .run(&[
                "create",
                "--account",
                &account_text,
                "--title",
                "t",
                "--metadata",
                &metadata,
            ])
            .fails(1);
        assert!(out.stderr.contains("invalid --metadata"), "{out:?}");
    }
    assert!(tool.list(account).is_empty(), "{}", tool.db.backend);
    let kept = tool.create(account, "16 levels", &["--metadata", &nested(16)]);
    assert_eq!(kept["metadata"].to_string(), nested(16));
    tool.finish().await;
}

/// `MAX_KEYS_PER_ACCOUNT` bounds the keys of one account: `create` and
/// `import` past it fail with exit 1 and write nothing; `rotate` at the limit
/// works.
async fn create_and_import_stop_at_max_keys_per_account(tool: Tool) {
    let account = Uuid::new_v4();
    let account_text = account.to_string();
    let limit = [("MAX_KEYS_PER_ACCOUNT", "2")];
    let create = |title: &str| {
        tool.run_with(
            &[
                "create",
                "--json",
                "--account",
                &account_text,
                "--title",
                title,
            ],
            None,
            &limit,
        )
    };
    let first = create("one").ok().json();
    create("two").ok();
    let out = create("three").fails(1);
    assert!(out.stderr.contains("too many API keys"), "{out:?}");
    let (line, _) = foreign_key(account, "imported", PEPPER, json!({}));
    let out = tool
        .run_with(&["import", "-"], Some(&line), &limit)
        .fails(1);
    assert!(out.stderr.contains("too many API keys"), "{out:?}");
    assert_eq!(tool.list(account).len(), 2, "{}", tool.db.backend);
    tool.run_with(&["rotate", first["key_id"].as_str().unwrap()], None, &limit)
        .ok();
    assert_eq!(tool.list(account).len(), 3);
    // The flag says the same, and the default (1,000) leaves room.
    let out = tool
        .run(&[
            "create",
            "--max-keys-per-account",
            "3",
            "--account",
            &account_text,
            "--title",
            "four",
        ])
        .fails(1);
    assert!(out.stderr.contains("at most 3"), "{out:?}");
    tool.run_with(&["import", "-"], Some(&line), &[]).ok();
    tool.finish().await;
}

async fn list_is_newest_first_and_per_account(tool: Tool) {
    let account = Uuid::new_v4();
    let ids: Vec<Value> = ["first", "second", "third"]
        .iter()
        .map(|title| tool.create(account, title, &[])["key_id"].clone())
        .collect();
    tool.create(Uuid::new_v4(), "another account", &[]);
    let listed: Vec<Value> = tool
        .list(account)
        .iter()
        .map(|key| key["key_id"].clone())
        .collect();
    assert_eq!(listed, [ids[2].clone(), ids[1].clone(), ids[0].clone()]);
    for key in tool.list(account) {
        assert!(key.get("secret_key").is_none() && key.get("secret_key_hash").is_none());
    }

    let table = tool.run(&["list", "--account", &account.to_string()]).ok();
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(rows.len(), 4, "{table:?}");
    assert!(rows[0].starts_with("KEY_ID"));
    assert!(rows[1].contains("third") && rows[3].contains("first"));
    assert!(!table.stdout.contains("another account"));

    let empty = tool.list(Uuid::new_v4());
    assert!(empty.is_empty());
    tool.finish().await;
}

async fn show_revoke_and_delete_by_id(tool: Tool) {
    let account = Uuid::new_v4();
    let created = tool.create(account, "to retire", &[]);
    let key_id = created["key_id"].as_str().unwrap();

    let shown = tool.run(&["show", key_id]).ok();
    assert!(shown.stdout.contains("to retire") && shown.stdout.contains("active"));
    assert!(
        !shown
            .stdout
            .contains(created["secret_key"].as_str().unwrap())
    );

    let revoked = tool.run(&["revoke", "--json", key_id]).ok();
    assert_eq!(
        revoked.json(),
        json!({"message": "API key revoked successfully"})
    );
    assert_eq!(
        tool.run(&["show", "--json", key_id]).ok().json()["status"],
        "revoked"
    );
    // Idempotent.
    tool.run(&["revoke", key_id]).ok();
    let validator = tool.validator().await;
    assert_eq!(
        validator.validate(&credential(&created)).await.unwrap_err(),
        Rejection::InvalidCredential
    );
    validator.shutdown().await;

    let deleted = tool.run(&["delete", "--json", key_id]).ok();
    assert_eq!(
        deleted.json(),
        json!({"message": "API key deleted successfully"})
    );
    let gone = tool.run(&["show", key_id]).fails(2);
    assert_eq!(gone.stderr, "error: API key not found\n");
    assert!(tool.list(account).is_empty());
    tool.finish().await;
}

async fn unknown_key_ids_exit_2(tool: Tool) {
    let unknown = Uuid::new_v4().to_string();
    for command in ["show", "revoke", "delete", "rotate"] {
        let out = tool.run(&[command, &unknown]).fails(2);
        assert_eq!(out.stderr, "error: API key not found\n", "{command}");
        tool.run(&[command, "--json", &unknown]).fails(2);
    }
    tool.finish().await;
}

async fn rotate_prints_a_new_secret_and_revokes_the_old_key(tool: Tool) {
    let account = Uuid::new_v4();
    let old = tool.create(
        account,
        "rotating",
        &["--scope", "reports:read", "--rate-limit", "5/1"],
    );
    let old_id = old["key_id"].as_str().unwrap();

    let new = tool
        .run(&["rotate", "--json", old_id, "--grace-period-seconds", "0"])
        .ok()
        .json();
    assert_eq!(new["rotated_from"], old["key_id"]);
    assert_ne!(new["key_id"], old["key_id"]);
    assert_ne!(new["secret_key"], old["secret_key"]);
    assert_eq!(new["title"], "rotating");
    assert_eq!(new["scopes"], json!(["reports:read"]));
    assert_eq!(new["rate_limit"], old["rate_limit"]);
    assert_eq!(
        tool.run(&["show", "--json", old_id]).ok().json()["status"],
        "revoked"
    );

    let validator = tool.validator().await;
    assert!(validator.validate(&credential(&old)).await.is_err());
    let key = validator.validate(&credential(&new)).await.unwrap();
    assert_eq!(key.account_id().into_inner(), account);
    validator.shutdown().await;

    let again = tool.run(&["rotate", old_id]).fails(1);
    assert_eq!(again.stderr, "error: API key is not active\n");

    // Without --json: the new secret, once.
    let new_id = new["key_id"].as_str().unwrap();
    let text = tool
        .run(&["rotate", new_id, "--grace-period-seconds", "60"])
        .ok();
    // The secret, and the token (pk_…:sk_… without a key prefix).
    assert_eq!(text.stdout.matches("sk_").count(), 2, "{text:?}");
    assert!(
        text.stdout.contains(&format!("rotated_from  {new_id}")),
        "{text:?}"
    );
    let listed = tool.list(account);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1]["status"], "active", "in its grace period");
    let too_long = tool.run(&["rotate", new_id, "--grace-period-seconds", "604801"]);
    assert!(too_long.fails(1).stderr.contains("grace_period_seconds"));
    tool.finish().await;
}

async fn import_writes_every_valid_line_with_its_status(tool: Tool) {
    let account = Uuid::new_v4();
    let (active, active_credential) = foreign_key(
        account,
        "imported active",
        PEPPER,
        json!({
            "created_at": "2024-01-01T00:00:00Z",
            "scopes": ["reports:read"],
            "metadata": {"source": "legacy"},
            "rate_limit": {"requests": 10, "period_seconds": 60},
        }),
    );
    let (revoked, revoked_credential) = foreign_key(
        account,
        "imported revoked",
        PEPPER,
        json!({"status": "revoked", "created_at": "2024-01-02T00:00:00Z"}),
    );
    let fixed_id = Uuid::new_v4();
    let (expired, _) = foreign_key(
        account,
        "imported expired",
        PEPPER,
        json!({
            "key_id": fixed_id,
            "description": null,
            "expires_at": "2024-02-01T00:00:00Z",
            "last_used_at": "2024-01-15T10:00:00.5Z",
            "created_at": "2024-01-03T00:00:00Z",
            "pepper_id": null,
        }),
    );
    let file = tool.dir.path().join("keys.jsonl");
    std::fs::write(&file, format!("{active}\n\n{revoked}\r\n{expired}")).unwrap();

    let out = tool.run(&["import", "--json", file.to_str().unwrap()]).ok();
    assert_eq!(out.json(), json!({"imported": 3}));

    let listed = tool.list(account);
    let summary: Vec<(&str, &str)> = listed
        .iter()
        .map(|key| {
            (
                key["title"].as_str().unwrap(),
                key["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("imported expired", "expired"),
            ("imported revoked", "revoked"),
            ("imported active", "active"),
        ]
    );
    assert_eq!(listed[0]["key_id"], json!(fixed_id));
    assert_eq!(listed[0]["last_used_at"], "2024-01-15T10:00:00.500Z");
    assert_eq!(listed[2]["scopes"], json!(["reports:read"]));
    assert_eq!(listed[2]["metadata"], json!({"source": "legacy"}));
    assert_eq!(
        listed[2]["rate_limit"],
        json!({"requests": 10, "period_seconds": 60})
    );

    let validator = tool.validator().await;
    let key = validator.validate(&active_credential).await.unwrap();
    assert_eq!(key.account_id().into_inner(), account);
    assert!(validator.validate(&revoked_credential).await.is_err());
    validator.shutdown().await;
    tool.finish().await;
}

async fn import_with_a_bad_line_writes_nothing(tool: Tool) {
    let account = Uuid::new_v4();
    let good = || foreign_key(account, "good", PEPPER, json!({})).0;
    let bad_lines = [
        foreign_key(account, "   ", PEPPER, json!({})).0,
        foreign_key(account, "typo", PEPPER, json!({"expire_at": null})).0,
        foreign_key(account, "status", PEPPER, json!({"status": "paused"})).0,
        foreign_key(account, "scopes", PEPPER, json!({"scopes": ["Bad Scope"]})).0,
        foreign_key(
            account,
            "cidrs",
            PEPPER,
            json!({"allowed_cidrs": ["10.0.0.0/33"]}),
        )
        .0,
        foreign_key(account, "no cidrs", PEPPER, json!({"allowed_cidrs": []})).0,
        "{\"public_key\": ".to_owned(),
        r#"{"title": "no key"}"#.to_owned(),
        json!({
            "public_key": "pk_short",
            "secret_key_hash": "nothex",
            "account_id": account,
            "title": "malformed",
        })
        .to_string(),
    ];
    for bad in &bad_lines {
        let input = format!("{}\n{bad}\n{}\n", good(), good());
        let out = tool.run_with(&["import", "-"], Some(&input), &[]).fails(1);
        assert!(
            out.stderr
                .starts_with("error: import refused, nothing written: line 2: "),
            "{out:?}"
        );
        assert!(!out.stderr.contains("line 1") && !out.stderr.contains("line 3"));
    }
    assert!(tool.list(account).is_empty(), "nothing was written");
    tool.finish().await;
}

async fn import_with_a_duplicate_public_key_writes_nothing(tool: Tool) {
    let account = Uuid::new_v4();
    let (first, _) = foreign_key(account, "first", PEPPER, json!({}));
    let (second, _) = foreign_key(account, "second", PEPPER, json!({}));
    let mut twin: Value = serde_json::from_str(&first).unwrap();
    twin["title"] = json!("twin");
    let input = format!("{first}\n{second}\n{twin}\n");
    let out = tool.run_with(&["import", "-"], Some(&input), &[]).fails(1);
    assert_eq!(
        out.stderr,
        "error: import refused, nothing written: line 3: public_key: the same as on line 1\n"
    );
    assert!(tool.list(account).is_empty());

    // A public key the store already has.
    let existing = tool.create(account, "already here", &[]);
    let mut clash: Value = serde_json::from_str(&second).unwrap();
    clash["public_key"] = existing["public_key"].clone();
    let input = format!("{first}\n{clash}\n");
    let out = tool.run_with(&["import", "-"], Some(&input), &[]).fails(1);
    assert_eq!(
        out.stderr,
        "error: import refused, nothing written: line 2: public_key: already in the key store\n"
    );
    let listed = tool.list(account);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["title"], "already here");
    tool.finish().await;
}

async fn pepper_status_counts_keys_per_pepper(mut tool: Tool) {
    let account = Uuid::new_v4();
    let created = tool.create(account, "one", &[]);
    tool.create(account, "two", &[]);
    let (legacy_row, _) = foreign_key(account, "legacy", PEPPER, json!({}));
    tool.run_with(&["import", "-"], Some(&legacy_row), &[]).ok();
    let revoked = tool.create(account, "revoked", &[]);
    tool.run(&["revoke", revoked["key_id"].as_str().unwrap()])
        .ok();

    let old_id = PepperId::of(&Pepper::try_from(PEPPER).unwrap()).to_string();
    let new_id = PepperId::of(&Pepper::try_from(NEW_PEPPER).unwrap()).to_string();
    let status = tool.run(&["pepper", "status", "--json"]).ok().json();
    assert_eq!(
        status,
        json!([{"pepper_id": old_id, "role": "current", "in_ring": true, "keys": 3}])
    );

    // Mid-rotation: a new current pepper, the old one as previous (and legacy).
    tool.pepper = Some(NEW_PEPPER);
    tool.previous = Some(PEPPER);
    let status = tool.run(&["pepper", "status", "--json"]).ok().json();
    assert_eq!(
        status,
        json!([
            {"pepper_id": new_id, "role": "current", "in_ring": true, "keys": 0},
            {"pepper_id": old_id, "role": "legacy", "in_ring": true, "keys": 3},
        ])
    );
    let table = tool.run(&["pepper", "status"]).ok();
    assert!(table.stdout.starts_with("PEPPER_ID"));
    assert!(table.stdout.contains(&old_id) && table.stdout.contains("legacy"));

    tool.run(&["pepper", "retire", &new_id]).fails(1);
    let retired = tool
        .run(&["pepper", "retire", "--json", &old_id])
        .ok()
        .json();
    assert_eq!(retired, json!({"pepper_id": old_id, "revoked": 3}));
    let status = tool.run(&["pepper", "status", "--json"]).ok().json();
    assert_eq!(status[1]["keys"], 0);
    assert_eq!(
        tool.run(&["show", "--json", created["key_id"].as_str().unwrap()])
            .ok()
            .json()["status"],
        "revoked"
    );
    tool.finish().await;
}

#[tokio::test]
async fn create_without_json_prints_the_secret_once() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    let out = tool
        .run(&["create", "--account", &account, "--title", "laptop"])
        .ok();
    // The SQLite file the tool created is its owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tool.dir.path().join("keys.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "keys.db has mode {mode:o}");
    }
    // The secret, and the token (without a key prefix, pk_…:sk_…).
    assert_eq!(out.stdout.matches("sk_").count(), 2, "{out:?}");
    assert!(out.stdout.contains("secret_key"));
    assert!(out.stdout.contains("\ntoken "), "{out:?}");
    assert!(out.stdout.contains("laptop"));
    let listed = tool.run(&["list", "--account", &account]).ok();
    assert!(!listed.stdout.contains("sk_"));
}

#[tokio::test]
async fn commands_that_do_not_hash_need_no_pepper() {
    let mut tool = Tool::sqlite();
    let account = Uuid::new_v4();
    let created = tool.create(account, "made with a pepper", &[]);
    let key_id = created["key_id"].as_str().unwrap();

    tool.pepper = None;
    tool.run(&["migrate"]).ok();
    let migrated = tool.run(&["migrate", "--json"]).ok().json();
    assert_eq!(migrated["message"], "migrations applied");
    assert!(!migrated["migrations"].as_array().unwrap().is_empty());
    assert_eq!(tool.list(account).len(), 1);
    tool.run(&["show", key_id]).ok();
    let (line, _) = foreign_key(account, "imported", PEPPER, json!({}));
    tool.run_with(&["import", "-"], Some(&line), &[]).ok();
    tool.run(&["revoke", key_id]).ok();
    tool.run(&["delete", key_id]).ok();

    let account = account.to_string();
    for args in [
        vec!["create", "--account", &account, "--title", "t"],
        vec!["rotate", key_id],
        vec!["pepper", "status"],
    ] {
        let out = tool.run(&args).fails(1);
        assert!(out.stderr.contains("no pepper configured"), "{out:?}");
    }
    assert!(
        !tool.dir.path().join("api-keys.pepper").exists(),
        "the tool never writes a pepper file"
    );

    // The pepper file of the example server is read.
    std::fs::write(
        tool.dir.path().join("api-keys.pepper"),
        format!("{PEPPER}\n"),
    )
    .unwrap();
    let created = tool.create(Uuid::new_v4(), "from the file", &[]);
    let validator = tool.validator().await;
    validator.validate(&credential(&created)).await.unwrap();
    validator.shutdown().await;

    // A pepper that is too short is refused with a clear message.
    let out = tool
        .run_with(
            &["create", "--account", &account, "--title", "t"],
            None,
            &[("API_KEY_PEPPER", "short")],
        )
        .fails(1);
    assert!(out.stderr.contains("API_KEY_PEPPER"), "{out:?}");
}

#[tokio::test]
async fn usage_errors_exit_1() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    // `create --account <account> --title t` and then `extra`.
    let create_t = |extra: &[&'static str]| {
        let mut args: Vec<&str> = vec!["create", "--account", &account, "--title", "t"];
        args.extend_from_slice(extra);
        args
    };
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["frobnicate"],
        vec!["list"],
        vec!["list", "--account", "not-a-uuid"],
        vec!["show", "12345"],
        vec!["show"],
        vec!["create", "--account", &account],
        create_t(&["--rate-limit", "10"]),
        create_t(&["--rate-limit", "0/60"]),
        create_t(&["--metadata", "[1]"]),
        create_t(&["--metadata", "{"]),
        create_t(&["--scope", "Bad"]),
        create_t(&["--expires-in-days", "0"]),
        vec!["create", "--account", &account, "--title", "   "],
        vec!["rotate", &account, "--grace-period-seconds", "-1"],
        vec!["import"],
        vec!["import", "does-not-exist.jsonl"],
        vec!["pepper"],
        vec!["pepper", "retire", ""],
        vec!["list", "--account", &account, "--jsn"],
    ];
    for args in cases {
        let out = tool.run(&args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        out.fails(1);
    }
    let help = tool.run(&["--help"]).ok();
    assert!(help.stdout.contains("Usage: tower-api-keys"));
    let help = tool.run(&["import", "--help"]).ok();
    assert!(help.stdout.contains("JSON lines"));
}

#[tokio::test]
async fn import_reads_standard_input_and_refuses_huge_lines() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4();
    let empty = tool
        .run_with(&["import", "--json", "-"], Some(""), &[])
        .ok();
    assert_eq!(empty.json(), json!({"imported": 0}));

    let (line, _) = foreign_key(account, "x", PEPPER, json!({}));
    let huge = format!("{}\n{line}\n", "x".repeat(1 << 20));
    let out = tool.run_with(&["import", "-"], Some(&huge), &[]).fails(1);
    assert!(out.stderr.contains("line 1: longer than"), "{out:?}");

    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let out = tool.run_with(&["import", "-"], Some(&nested), &[]).fails(1);
    assert!(out.stderr.contains("line 1: not valid JSON"), "{out:?}");

    let out = tool.run_with(&["import", "-"], Some(&line), &[]).ok();
    assert_eq!(out.stdout, "imported 1 API keys\n");
    assert_eq!(tool.list(account).len(), 1);
}

/// An import line that names a member twice is refused (exit 1), whichever
/// of the two a JSON parser would keep: nothing is written.
#[tokio::test]
async fn import_refuses_a_member_named_twice() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4();
    let (good, _) = foreign_key(account, "fine", PEPPER, json!({}));
    let (line, credential) = foreign_key(account, "twice", PEPPER, json!({"status": "revoked"}));
    let twice = line.replace(
        r#""status":"revoked""#,
        r#""status":"revoked","status":"active""#,
    );
    assert_ne!(twice, line);
    let out = tool
        .run_with(&["import", "-"], Some(&format!("{good}\n{twice}\n")), &[])
        .fails(1);
    assert!(
        out.stderr.contains("line 2: `status` is named twice"),
        "{out:?}"
    );
    assert!(tool.list(account).is_empty());
    let validator = tool.validator().await;
    assert!(validator.validate(&credential).await.is_err());
    validator.shutdown().await;
}

#[tokio::test]
async fn logs_appear_only_with_rust_log() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    let out = tool.run_with(
        &["create", "--account", &account, "--title", "logged"],
        None,
        &[("RUST_LOG", "tower_api_keys=info")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("API key created"), "{out:?}");
    let secret = out
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("secret_key"))
        .unwrap()
        .trim();
    assert!(!out.stderr.contains(secret));
}

#[tokio::test]
async fn an_unreachable_database_exits_3_without_its_password() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    let list = ["list", "--account", account.as_str()];
    let missing_dir = tool.dir.path().join("no/such/dir/keys.db");
    let url = format!("sqlite://{}", missing_dir.display());
    let out = tool
        .run_with(&list, None, &[("DATABASE_URL", &url)])
        .fails(3);
    assert!(out.stderr.contains("cannot open the key store"), "{out:?}");

    #[cfg(feature = "postgres")]
    {
        let url = "postgres://postgres:hunter2-secret@127.0.0.1:1/x";
        for args in [&list[..], &["migrate"], &["show", &account]] {
            let out = tool.run_with(args, None, &[("DATABASE_URL", url)]).fails(3);
            assert!(!out.stderr.contains("hunter2"), "{out:?}");
            assert!(
                out.stderr.contains("postgres://***@127.0.0.1:1/x"),
                "{out:?}"
            );
        }
        // The flag works, but its password shows in `ps`: a warning says so
        // (without the password), then the error.
        for args in [
            vec!["list", "--database-url", url, "--account", &account],
            vec!["--database-url", url, "list", "--account", &account],
        ] {
            let out = tool.run_with(&args, None, &[]);
            assert_eq!(out.code, 3, "{out:?}");
            let lines: Vec<&str> = out.stderr.lines().collect();
            assert_eq!(lines.len(), 2, "{out:?}");
            assert_eq!(
                lines[0],
                "warning: the password in --database-url shows in the process list (ps); \
                 set DATABASE_URL instead"
            );
            assert!(
                lines[1].starts_with("error: cannot open the key store"),
                "{out:?}"
            );
            assert!(!out.stderr.contains("hunter2"), "{out:?}");
        }
    }
    // No password, or the variable: no warning.
    let url = tool.db.url.clone();
    let out = tool
        .run_with(
            &["list", "--database-url", &url, "--account", &account],
            None,
            &[],
        )
        .ok();
    assert_eq!(out.stderr, "");
    let help = tool.run(&["--help"]).ok();
    assert!(help.stdout.contains("Prefer the DATABASE_URL"), "{help:?}");
}

/// A database URL is never printed with its password, whatever characters the
/// password holds (CONTRACT §18): not in the one-line error (the driver's own
/// error may quote the URL), not in the logs, not from `migrate`.
#[tokio::test]
async fn never_prints_a_password_whatever_its_characters() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    let mut urls = Vec::new();
    for scheme in ["postgres", "mysql"] {
        for c in ["?", "/", "@", "#", ":", "&", "%40", "%3F", "%2F", "%23"] {
            urls.push(format!("{scheme}://keys:Xq7{c}S3CRET@127.0.0.1:1/db"));
        }
        for c in ["#", "@", "%26", "?"] {
            urls.push(format!(
                "{scheme}://127.0.0.1:1/db?sslmode=disable&password=Xq7{c}S3CRET"
            ));
        }
    }
    // Each run waits for its connect timeout: all of them at once.
    let runs: Vec<(&String, Out)> = std::thread::scope(|scope| {
        let handles: Vec<_> = urls
            .iter()
            .flat_map(|url| {
                [
                    (vec!["list", "--account", account.as_str()], None),
                    (vec!["migrate", "--json"], Some("trace")),
                ]
                .into_iter()
                .map(move |(args, log)| (url, args, log))
            })
            .map(|(url, args, log)| {
                let tool = &tool;
                scope.spawn(move || {
                    let mut env = vec![("DATABASE_URL", url.as_str())];
                    env.extend(log.map(|filter| ("RUST_LOG", filter)));
                    (url, tool.run_with(&args, None, &env))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (url, out) in runs {
        assert_eq!(out.code, 3, "{url}: {out:?}");
        assert!(
            out.stderr.contains("cannot open the key store"),
            "{url}: {out:?}"
        );
        for part in ["Xq7", "S3CRET"] {
            assert!(
                !out.stderr.contains(part) && !out.stdout.contains(part),
                "{url}: the password shows: {out:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// The token form (API_KEY_PREFIX) and `scanning-pattern`.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn create_and_rotate_print_the_token_of_api_key_prefix() {
    let tool = Tool::sqlite();
    let account = Uuid::new_v4().to_string();
    let prefix = [("API_KEY_PREFIX", "acme")];
    let created = tool
        .run_with(
            &["create", "--json", "--account", &account, "--title", "ci"],
            None,
            &prefix,
        )
        .ok()
        .json();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("acme_") && token.len() == 75, "{token}");
    let validator = {
        let repo = SeaOrmRepository::connect(&tool.db.url).await.unwrap();
        ApiKeyValidator::builder(repo, Pepper::try_from(PEPPER).unwrap())
            .with_change_feed(false)
            .with_key_prefix(tower_api_keys::KeyPrefix::new("acme").unwrap())
            .build()
    };
    let key = validator.validate(&token).await.unwrap();
    assert_eq!(
        key.key_id().to_string(),
        created["key_id"].as_str().unwrap()
    );

    let key_id = created["key_id"].as_str().unwrap();
    let text = tool.run_with(&["rotate", key_id], None, &prefix).ok();
    let line = text
        .stdout
        .lines()
        .find(|line| line.starts_with("token "))
        .unwrap_or_else(|| panic!("no token line: {text:?}"));
    let successor = line["token".len()..].trim();
    assert!(
        successor.starts_with("acme_") && successor != token,
        "{line}"
    );
    assert!(validator.validate(successor).await.is_ok());
    validator.shutdown().await;
    tool.finish().await;
}

#[tokio::test]
async fn a_bad_api_key_prefix_is_a_usage_error() {
    let tool = Tool::sqlite();
    for bad in ["Acme", "a", "acme_", "0acme", "abcdefghijklmnopq"] {
        let out = tool
            .run_with(&["scanning-pattern"], None, &[("API_KEY_PREFIX", bad)])
            .fails(1);
        assert!(
            out.stderr.contains("API_KEY_PREFIX: invalid key prefix"),
            "{out:?}"
        );
        if bad.len() > 4 {
            assert!(
                !out.stderr.contains(bad),
                "the value is not echoed: {out:?}"
            );
        }
    }
}

/// Credentials and tokens of `prefix` made by the library, and near misses.
fn samples(prefix: &str) -> (Vec<String>, Vec<String>) {
    let key_prefix = tower_api_keys::KeyPrefix::new(prefix).unwrap();
    let mut good = Vec::new();
    let mut near = Vec::new();
    for _ in 0..20 {
        let pair = KeyPair::generate().unwrap();
        let credential = pair.credential();
        let token = key_prefix
            .token(&pair.public_key, &pair.secret_key)
            .expose()
            .to_owned();
        near.extend([
            format!("{}_{}", prefix.to_uppercase(), &token[prefix.len() + 1..]),
            format!("x{token}"),
            format!("{token}a"),
            token[..token.len() - 1].to_owned(),
            token.replacen('_', "-", 1),
            format!("other_{}", &token[prefix.len() + 1..]),
            format!("{}_{}", prefix, &token[prefix.len() + 2..]),
            credential.replacen("pk_", "PK_", 1),
            credential.replacen(':', "", 1),
            credential.replacen(':', " : ", 1),
            format!("{credential}a"),
            credential[..credential.len() - 1].to_owned(),
            format!("x{credential}"),
        ]);
        good.extend([credential, token]);
    }
    (good, near)
}

#[test]
fn scanning_pattern_matches_exactly_tokens_and_credentials() {
    let tool = Tool::sqlite();
    let out = tool
        .run_with(&["scanning-pattern"], None, &[("API_KEY_PREFIX", "acme")])
        .ok();
    let pattern = out.stdout.trim_end();
    let whole = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    let found = regex::Regex::new(pattern).unwrap();
    let (good, near) = samples("acme");
    for value in &good {
        assert!(whole.is_match(value), "{value}");
        // Found inside text, as a scanner reads it.
        let text = format!("export API_KEY=\"{value}\" # deploy");
        assert_eq!(found.find(&text).map(|m| m.as_str()), Some(value.as_str()));
    }
    for value in &near {
        assert!(!found.is_match(value), "a near miss matched: {value}");
    }
    // The JSON form carries the same pattern.
    let json = tool
        .run_with(
            &["scanning-pattern", "--json"],
            None,
            &[("API_KEY_PREFIX", "acme")],
        )
        .ok()
        .json();
    assert_eq!(json["regex"], pattern);

    // Without a prefix: the credential form only.
    let plain = tool.run(&["scanning-pattern"]).ok();
    let plain = regex::Regex::new(plain.stdout.trim_end()).unwrap();
    assert!(
        good.iter()
            .any(|value| value.starts_with("pk_") && plain.is_match(value))
    );
    assert!(
        !good
            .iter()
            .any(|value| value.starts_with("acme_") && plain.is_match(value))
    );
}

#[test]
fn scanning_pattern_as_a_gitleaks_rule() {
    let tool = Tool::sqlite();
    let out = tool
        .run_with(
            &["scanning-pattern", "--format", "gitleaks"],
            None,
            &[("API_KEY_PREFIX", "acme")],
        )
        .ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "[[rules]]", "{out:?}");
    assert_eq!(lines[1], "id = \"tower-api-keys-acme\"");
    assert!(lines[2].starts_with("description = \""));
    assert_eq!(lines[4], r#"keywords = ["acme_", "pk_"]"#);
    let regex = lines[3]
        .strip_prefix("regex = '''")
        .and_then(|rest| rest.strip_suffix("'''"))
        .unwrap_or_else(|| panic!("{}", lines[3]));
    let regex = regex::Regex::new(regex).unwrap();
    let (good, near) = samples("acme");
    assert!(good.iter().all(|value| regex.is_match(value)));
    assert!(!near.iter().any(|value| regex.is_match(value)));
}
