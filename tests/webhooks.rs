//! Lifecycle webhooks end to end (CONTRACT §16.2): the example server as two
//! processes on one database (SQLite file, PostgreSQL, MariaDB) delivers to a
//! real HTTP receiver, `tests/support/webhook_receiver.py`, which verifies
//! every signature with the Standard Webhooks reference library
//! (`standardwebhooks` from PyPI), independently of the crate. A receiver that
//! fails its first requests, one stopped for a while, and a replica killed
//! with SIGKILL mid-delivery: no event lost, none delivered twice in normal
//! operation, the order per key kept.
#![cfg(unix)]

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::server::{ADMIN_TOKEN, Server, admin, client, create_key, free_port};
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

/// A `whsec_` secret (24 bytes).
const SECRET: &str = "whsec_dGVzdC13ZWJob29rLXNlY3JldC0yNGJ5dGVz";
/// How long a test waits for deliveries before it fails: a bound, not a
/// measurement.
const DEADLINE: Duration = Duration::from_secs(150);

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Db::sqlite().await).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs TEST_POSTGRES_URL"]
            async fn $name() { super::$name(super::Db::postgres().await).await; })*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs TEST_MYSQL_URL"]
            async fn $name() { super::$name(super::Db::mysql().await).await; })*
        }
    };
}

on_every_backend!(
    two_replicas_deliver_every_event_once_in_order_per_key,
    a_receiver_stopped_for_a_while_loses_nothing,
    a_replica_killed_mid_delivery_loses_nothing,
);

/// One database that several server processes share, and the test's own
/// connection to read the outbox.
struct Db {
    url: String,
    dir: tempfile::TempDir,
    conn: DatabaseConnection,
    cleanup: Option<common::provision::Fresh>,
}

impl Db {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        Self::open(url, dir, None).await
    }

    async fn postgres() -> Self {
        let schema = common::provision::postgres_schema("tak_hook_", |_| String::new()).await;
        let separator = if schema.admin_url.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!(
            "{}{separator}options=-c%20search_path%3D{}",
            schema.admin_url, schema.name
        );
        Self::open(url, tempfile::tempdir().unwrap(), Some(schema)).await
    }

    async fn mysql() -> Self {
        let (database, url) = common::provision::mysql_database("tak_hook_").await;
        Self::open(url, tempfile::tempdir().unwrap(), Some(database)).await
    }

    async fn open(
        url: String,
        dir: tempfile::TempDir,
        cleanup: Option<common::provision::Fresh>,
    ) -> Self {
        // The crate's migrations, so that the test can read the outbox at once.
        let repo = tower_api_keys::store::SeaOrmRepository::connect(&url)
            .await
            .unwrap();
        Self {
            conn: repo.connection().clone(),
            url,
            dir,
            cleanup,
        }
    }

    /// Every outbox row, oldest first: `(event_id, key_id, event_type, state, attempts)`.
    async fn outbox(&self) -> Vec<(String, String, String, String, i64)> {
        let backend = self.conn.get_database_backend();
        let rows = self
            .conn
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT event_id, key_id, event_type, state, attempts \
                 FROM tower_api_keys_outbox ORDER BY id",
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                let key_id: Uuid = row.try_get("", "key_id").unwrap();
                let attempts: i32 = row.try_get("", "attempts").unwrap();
                (
                    row.try_get("", "event_id").unwrap(),
                    key_id.to_string(),
                    row.try_get("", "event_type").unwrap(),
                    row.try_get("", "state").unwrap(),
                    i64::from(attempts),
                )
            })
            .collect()
    }

    /// A server process on this database; `webhook` adds `WEBHOOK_URL`.
    fn server(&self, run: &str, webhook: Option<&Receiver>, lease: &str) -> Server {
        let url = webhook.map(Receiver::url);
        let mut env = vec![
            ("DATABASE_URL", self.url.as_str()),
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("API_KEY_PEPPER", "webhook-test-pepper-0123456789"),
            ("WEBHOOK_LEASE_SECONDS", lease),
            ("RUST_LOG", "info"),
        ];
        if let Some(url) = &url {
            env.push(("WEBHOOK_URL", url));
            env.push(("WEBHOOK_SECRET", SECRET));
        }
        Server::start_with(self.dir.path(), self.dir.path(), run, &env)
    }

    async fn cleanup(self) {
        self.conn.close().await.ok();
        if let Some(fresh) = &self.cleanup {
            fresh.drop_it().await;
        }
    }
}

/// The Python receiver as a process.
struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Receiver {
    fn start(dir: &Path, port: u16, extra: &[&str]) -> Self {
        let log = dir.join("received.jsonl");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/webhook_receiver.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(SECRET)
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the receiver");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(
            ready.trim(),
            "ready",
            "the receiver did not start (is the PyPI package standardwebhooks installed?)"
        );
        Self { child, port, log }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/api-keys", self.port)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Every request recorded so far.
    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until every event of the outbox was answered 200 by the receiver
/// (and the outbox holds at least `events`); returns the receiver's lines.
async fn all_delivered(db: &Db, receiver: &Receiver, events: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let outbox = db.outbox().await;
        let lines = receiver.lines();
        let acknowledged: std::collections::HashSet<&str> = lines
            .iter()
            .filter(|line| line["status"] == 200)
            .map(|line| line["id"].as_str().unwrap())
            .collect();
        if outbox.len() >= events
            && outbox
                .iter()
                .all(|row| acknowledged.contains(row.0.as_str()))
            && outbox.iter().all(|row| row.3 == "delivered")
        {
            return lines;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "not every event was delivered: outbox {outbox:?}, received {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every line verified; no event acknowledged twice; the acknowledgements of
/// each key in the outbox's order.
async fn check_deliveries(db: &Db, lines: &[Value], allow_duplicates: bool) {
    for line in lines {
        assert_eq!(
            line["verified"], true,
            "a request that does not verify: {line}"
        );
    }
    let mut acknowledged: Vec<&str> = lines
        .iter()
        .filter(|line| line["status"] == 200)
        .map(|line| line["id"].as_str().unwrap())
        .collect();
    if !allow_duplicates {
        let mut unique = acknowledged.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            acknowledged.len(),
            "an event delivered twice: {lines:?}"
        );
    }
    acknowledged.dedup();
    let outbox = db.outbox().await;
    let mut per_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (event_id, key_id, ..) in &outbox {
        per_key.entry(key_id).or_default().push(event_id);
    }
    for (key_id, expected) in per_key {
        let delivered: Vec<&str> = acknowledged
            .iter()
            .copied()
            .filter(|id| expected.contains(id))
            .fold(Vec::new(), |mut seen, id| {
                if !seen.contains(&id) {
                    seen.push(id);
                }
                seen
            });
        assert_eq!(delivered, expected, "order of key {key_id}'s events");
    }
}

async fn request(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    account: Uuid,
    body: Option<Value>,
) -> Value {
    let mut request = admin(&client(), method, server.url(path), ADMIN_TOKEN, account);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// A key's life through two servers: created on `a`, renamed on `b`,
/// rotated on `a`, its successor revoked on `b`, the old key deleted on `a`.
async fn life(a: &Server, b: &Server, account: Uuid, title: &str) {
    let key = create_key(&client(), a, ADMIN_TOKEN, account, title)
        .await
        .key_id;
    let path = format!("/v1/api-keys/{key}");
    request(
        b,
        reqwest::Method::PATCH,
        &path,
        account,
        Some(json!({"title": format!("{title}!")})),
    )
    .await;
    let successor = request(
        a,
        reqwest::Method::POST,
        &format!("{path}/rotate"),
        account,
        None,
    )
    .await;
    let successor = successor["key_id"].as_str().unwrap().to_owned();
    request(
        b,
        reqwest::Method::PATCH,
        &format!("/v1/api-keys/{successor}/revoke"),
        account,
        None,
    )
    .await;
    request(a, reqwest::Method::DELETE, &path, account, None).await;
}

async fn two_replicas_deliver_every_event_once_in_order_per_key(db: Db) {
    let receiver = Receiver::start(db.dir.path(), free_port(), &["--fail-first", "3"]);
    let mut a = db.server("a", Some(&receiver), "60");
    let mut b = db.server("b", Some(&receiver), "60");
    a.wait_ready(&client()).await;
    b.wait_ready(&client()).await;
    let account = Uuid::new_v4();
    for title in ["one", "two", "three"] {
        life(&a, &b, account, title).await;
    }
    // Per key: created, updated, rotated, deleted; its successor: created, revoked.
    let lines = all_delivered(&db, &receiver, 18).await;
    check_deliveries(&db, &lines, false).await;
    let outbox = db.outbox().await;
    let kinds: Vec<&str> = outbox.iter().map(|row| row.2.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|kind| **kind == "key.created").count(),
        6
    );
    assert_eq!(
        kinds.iter().filter(|kind| **kind == "key.revoked").count(),
        3
    );
    // The first three requests failed and were tried again under the same
    // `webhook-id`, signed afresh.
    let failed: Vec<&Value> = lines.iter().filter(|line| line["status"] == 500).collect();
    assert_eq!(failed.len(), 3);
    for failure in failed {
        let retried = lines
            .iter()
            .find(|line| line["id"] == failure["id"] && line["status"] == 200)
            .expect("a failed event was delivered later");
        assert_ne!(retried["timestamp"], failure["timestamp"]);
        assert_ne!(retried["signature"], failure["signature"]);
    }
    // The audit log through the API: the actor `admin` and the client address.
    let audit = request(
        &a,
        reqwest::Method::GET,
        "/v1/api-keys/audit?limit=500",
        account,
        None,
    )
    .await;
    let entries = audit["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 18);
    assert!(
        entries
            .iter()
            .all(|e| e["actor"] == "admin" && e["source"] == "127.0.0.1")
    );
    a.stop("TERM").await;
    b.stop("TERM").await;
    db.cleanup().await;
}

async fn a_receiver_stopped_for_a_while_loses_nothing(db: Db) {
    let port = free_port();
    let mut receiver = Receiver::start(db.dir.path(), port, &[]);
    let mut a = db.server("a", Some(&receiver), "60");
    let mut b = db.server("b", Some(&receiver), "60");
    a.wait_ready(&client()).await;
    b.wait_ready(&client()).await;
    let account = Uuid::new_v4();
    create_key(&client(), &a, ADMIN_TOKEN, account, "before").await;
    all_delivered(&db, &receiver, 1).await;

    receiver.stop();
    life(&a, &b, account, "meanwhile").await;
    // Both replicas tried and failed (nothing listens), and will try again.
    let started = Instant::now();
    while !db
        .outbox()
        .await
        .iter()
        .any(|row| row.3 == "pending" && row.4 >= 2)
    {
        assert!(
            started.elapsed() < DEADLINE,
            "no retries: {:?}",
            db.outbox().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let receiver = Receiver::start(db.dir.path(), port, &[]);
    let lines = all_delivered(&db, &receiver, 7).await;
    check_deliveries(&db, &lines, false).await;
    a.stop("TERM").await;
    b.stop("TERM").await;
    db.cleanup().await;
}

async fn a_replica_killed_mid_delivery_loses_nothing(db: Db) {
    // The first request is held for longer than the lease; its sender is
    // killed meanwhile, and the event must reach the receiver all the same.
    let receiver = Receiver::start(db.dir.path(), free_port(), &["--hold-first", "20"]);
    let mut quiet = db.server("quiet", None, "15");
    let mut sender = db.server("sender", Some(&receiver), "15");
    quiet.wait_ready(&client()).await;
    sender.wait_ready(&client()).await;
    let account = Uuid::new_v4();
    let key = create_key(&client(), &quiet, ADMIN_TOKEN, account, "held")
        .await
        .key_id;
    // A second event of the same key must wait for the first.
    request(
        &quiet,
        reqwest::Method::PATCH,
        &format!("/v1/api-keys/{key}/revoke"),
        account,
        None,
    )
    .await;
    let started = Instant::now();
    while !receiver.lines().iter().any(|line| line["status"] == "held") {
        assert!(
            started.elapsed() < DEADLINE,
            "the first event never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = Command::new("kill")
        .args(["-KILL", &sender.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    sender.exit().await;
    let mut successor = db.server("successor", Some(&receiver), "15");
    successor.wait_ready(&client()).await;
    let lines = all_delivered(&db, &receiver, 2).await;
    // The held request may have been answered into a closed connection; the
    // event was delivered again after the lease, so duplicates are allowed
    // here, but not loss or disorder.
    check_deliveries(&db, &lines, true).await;
    let outbox = db.outbox().await;
    assert_eq!(
        outbox.iter().map(|row| row.2.as_str()).collect::<Vec<_>>(),
        ["key.created", "key.revoked"]
    );
    quiet.stop("TERM").await;
    successor.stop("TERM").await;
    db.cleanup().await;
}
