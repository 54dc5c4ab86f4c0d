//! `tower-api-keys audit` as a process on a SQLite file: the changes the tool
//! makes are audited with the actor `cli`, and the log reads back newest
//! first, per account or key, a page at a time.

use std::process::Command;

use serde_json::Value;
use uuid::Uuid;

const BIN: &str = env!("CARGO_BIN_EXE_tower-api-keys");
const PEPPER: &str = "cli-audit-test-pepper-0123";

fn run(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("keys.db").display()),
        )
        .env("API_KEY_PEPPER", PEPPER)
        .env_remove("API_KEY_PREVIOUS_PEPPERS")
        .env_remove("API_KEY_PREFIX")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn json(dir: &std::path::Path, args: &[&str]) -> Value {
    let (code, stdout, stderr) = run(dir, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn the_tools_changes_are_audited_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let account = Uuid::new_v4().to_string();
    let created = json(
        dir,
        &["create", "--json", "--account", &account, "--title", "a"],
    );
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let rotated = json(dir, &["rotate", "--json", &key_id]);
    let successor = rotated["key_id"].as_str().unwrap().to_owned();
    json(dir, &["revoke", "--json", &successor]);
    let other = Uuid::new_v4().to_string();
    json(
        dir,
        &["create", "--json", "--account", &other, "--title", "b"],
    );

    let page = json(dir, &["audit", "--json"]);
    let actions: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            assert_eq!(entry["actor"], "cli");
            assert_eq!(entry["source"], Value::Null);
            entry["action"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        actions,
        ["created", "revoked", "created", "rotated", "created"]
    );

    // One account, one key, one entry a page.
    let page = json(
        dir,
        &["audit", "--json", "--account", &account, "--limit", "2"],
    );
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    let next = page["next_before"].as_i64().unwrap().to_string();
    let rest = json(
        dir,
        &["audit", "--json", "--account", &account, "--before", &next],
    );
    assert_eq!(rest["entries"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_before"], Value::Null);
    let page = json(dir, &["audit", "--json", "--key", &key_id]);
    let keys: Vec<&str> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [key_id.as_str(), key_id.as_str()]);

    // Text: one line per entry under a header; no secret anywhere.
    let (code, text, _) = run(dir, &["audit", "--key", &key_id]);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.starts_with("ID"));
    assert!(!text.contains(created["secret_key"].as_str().unwrap()));
}

#[test]
fn bad_audit_arguments_exit_1_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for args in [
        &["audit", "--limit", "0"][..],
        &["audit", "--limit", "501"],
        &["audit", "--before", "0"],
        &["audit", "--before", "x"],
        &["audit", "--account", "nope"],
        &["audit", "--key", "nope"],
    ] {
        let (code, stdout, stderr) = run(dir, args);
        assert_eq!(code, 1, "{args:?}: {stdout} {stderr}");
        assert!(stdout.is_empty());
        assert!(!stderr.is_empty());
    }
    let page = json(dir, &["audit", "--json"]);
    assert_eq!(page["entries"], serde_json::json!([]));
    let (_, text, _) = run(dir, &["audit"]);
    assert_eq!(text, "no audit entries\n");
}

#[tokio::test]
async fn events_failed_lists_and_events_retry_puts_back() {
    use sea_orm::ConnectionTrait;

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let account = Uuid::new_v4().to_string();
    let created = json(
        dir,
        &["create", "--json", "--account", &account, "--title", "a"],
    );
    // As the dispatcher leaves an event after 24 h of failed attempts.
    let url = format!("sqlite://{}", dir.join("keys.db").display());
    let repo = tower_api_keys::store::SeaOrmRepository::connect(&url)
        .await
        .unwrap();
    repo.connection()
        .execute_unprepared(
            "UPDATE tower_api_keys_outbox SET state = 'failed', attempts = 30, \
             last_error = 'answered 503 Service Unavailable'",
        )
        .await
        .unwrap();

    let failed = json(dir, &["events", "failed", "--json"]);
    let failed = failed.as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["type"], "key.created");
    assert_eq!(failed[0]["key_id"], created["key_id"]);
    assert_eq!(failed[0]["attempts"], 30);
    assert_eq!(failed[0]["payload"]["data"]["key_id"], created["key_id"]);
    let event_id = failed[0]["event_id"].as_str().unwrap().to_owned();
    let (code, text, _) = run(dir, &["events", "failed"]);
    assert_eq!(code, 0);
    assert!(
        text.contains(&event_id) && text.contains("answered 503"),
        "{text}"
    );

    // Unknown id: exit 2; neither an id nor --all: exit 1; nothing changed.
    assert_eq!(run(dir, &["events", "retry", "msg_unknown"]).0, 2);
    assert_eq!(run(dir, &["events", "retry"]).0, 1);
    assert_eq!(run(dir, &["events", "retry", &event_id, "--all"]).0, 1);
    assert_eq!(
        json(dir, &["events", "failed", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        json(dir, &["events", "retry", "--json", &event_id])["retried"],
        1
    );
    assert_eq!(
        json(dir, &["events", "failed", "--json"]),
        serde_json::json!([])
    );
    let (_, text, _) = run(dir, &["events", "failed"]);
    assert_eq!(text, "no failed events\n");
    let state: Option<String> = repo
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Sqlite,
            "SELECT state FROM tower_api_keys_outbox",
        ))
        .await
        .unwrap()
        .map(|row| row.try_get("", "state").unwrap());
    assert_eq!(state.as_deref(), Some("pending"));
}
