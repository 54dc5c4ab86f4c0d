//! Where production runs (CONTRACT §13.1, §13.2): the example server as two
//! processes through a stock PgBouncer in transaction mode (the feed polling
//! the change log through it, or listening on a direct URL) and in session
//! mode; a standby refused as `DATABASE_URL`; a streaming standby as the read
//! replica, with its replay paused.
//!
//! PgBouncer is Debian's package (`.ci/run` installs it); the standby is a
//! private PostgreSQL primary and `pg_basebackup -R` of it, made by the test.
//! The PgBouncer tests also need `TEST_POSTGRES_URL`. Every test here is
//! ignored unless run with `--include-ignored` (CI does), and fails there when
//! what it needs is missing.
#![cfg(all(unix, feature = "axum", feature = "sqlite", feature = "postgres"))]

mod common;

use std::time::{Duration, Instant};

use common::{
    postgres::{PgBouncer, PgCluster, PoolMode},
    server::{ADMIN_TOKEN, Server, admin, assert_whoami, client, create_key, whoami},
};
use reqwest::Method;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use serde_json::{Value, json};
use uuid::Uuid;

/// The pepper both processes share, as replicas of one service do.
const PEPPER: &str = "topology-test-pepper-0123456789";
/// §7 and §13.1's bounds, with room for a loaded 2-core CI machine.
const LISTEN_BOUND: Duration = Duration::from_secs(3);
const POLL_BOUND: Duration = Duration::from_secs(4);

/// A fresh database on the PostgreSQL at `url`, dropped (with whatever still
/// holds a connection to it) by [`drop_database`].
async fn fresh_database(url: &str) -> (DatabaseConnection, String) {
    let admin = Database::connect(url).await.unwrap();
    let name = format!("tak_{}", Uuid::new_v4().simple());
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap();
    (admin, name)
}

async fn drop_database(admin: DatabaseConnection, name: &str) {
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .await
        .ok();
    admin.close().await.ok();
}

/// `url` with `database` as its path.
fn with_database(url: &str, database: &str) -> String {
    let mut url: reqwest::Url = url.parse().unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// Starts one example server with `env` (plus the shared pepper and admin
/// token), once it answers.
async fn server(dir: &std::path::Path, run: &str, env: &[(&str, &str)]) -> Server {
    let mut env = env.to_vec();
    env.extend([("API_KEY_PEPPER", PEPPER), ("ADMIN_TOKEN", ADMIN_TOKEN)]);
    let mut server = Server::start_with(dir, dir, run, &env);
    server.wait_ready(&client()).await;
    server
}

/// Sends a management request and checks its status, never a 5xx.
async fn manage(
    server: &Server,
    method: Method,
    path: &str,
    account: Uuid,
    body: Option<Value>,
    status: u16,
) -> Value {
    let mut request = admin(&client(), method, server.url(path), ADMIN_TOKEN, account);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{path}: {text}\n{}", server.output());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Waits until `server` refuses `credential` with 401; how long it took.
async fn refused_within(server: &Server, credential: &str, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = whoami(&client(), server, credential).await.status();
        assert!(
            status.as_u16() < 500,
            "a {status} while waiting\n{}",
            server.output()
        );
        if status == 401 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "the revoked key was still accepted {bound:?} later\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every route of §5, §8 and §9 through two processes `a` and `b`, with no
/// 5xx; a revoke through `a` is refused by `b` within `bound`.
async fn every_route_through(a: &Server, b: &Server, bound: Duration) {
    let client = client();
    let account = Uuid::new_v4();
    let first = create_key(&client, a, ADMIN_TOKEN, account, "first").await;
    let second = create_key(&client, b, ADMIN_TOKEN, account, "second").await;
    for server in [a, b] {
        assert_whoami(&client, server, &first, account).await;
        assert_whoami(&client, server, &second, account).await;
    }
    let listed = manage(b, Method::GET, "/v1/api-keys", account, None, 200).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    let path = format!("/v1/api-keys/{}", first.key_id);
    manage(a, Method::GET, &path, account, None, 200).await;
    let patched = manage(
        b,
        Method::PATCH,
        &path,
        account,
        Some(json!({"scopes": ["reports:read"], "rate_limit": {"requests": 100, "period_seconds": 60}})),
        200,
    )
    .await;
    assert_eq!(patched["scopes"], json!(["reports:read"]));
    manage(a, Method::GET, &format!("{path}/usage"), account, None, 200).await;
    let rotated = manage(
        a,
        Method::POST,
        &format!("/v1/api-keys/{}/rotate", second.key_id),
        account,
        Some(json!({})),
        201,
    )
    .await;
    assert_eq!(rotated["rotated_from"], second.key_id.as_str());
    // The rotated key was revoked (grace 0): the other process refuses it.
    refused_within(b, &second.credential, bound).await;

    // A revoke through one process reaches the other within the bound.
    assert_eq!(whoami(&client, b, &first.credential).await.status(), 200);
    manage(
        a,
        Method::PATCH,
        &format!("{path}/revoke"),
        account,
        None,
        200,
    )
    .await;
    let took = refused_within(b, &first.credential, bound).await;
    eprintln!("revocation reached the other process in {took:?}");
    manage(b, Method::DELETE, &path, account, None, 200).await;
    manage(a, Method::GET, &path, account, None, 404).await;
    for server in [a, b] {
        let log = server.stderr();
        assert!(!log.contains("ERROR"), "{log}");
        assert!(!log.contains("prepared statement"), "{log}");
    }
}

/// PgBouncer in transaction mode: everything works through it, the feed
/// polls the change log through it (no `FEED_DATABASE_URL`) or listens on a
/// direct URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL and PgBouncer"]
async fn two_processes_through_pgbouncer_in_transaction_mode() {
    let direct = common::provision::required("TEST_POSTGRES_URL", "a PostgreSQL server");
    let upstream = common::faults::upstream_of(&direct).port();
    let bouncer = PgBouncer::start(upstream, PoolMode::Transaction);
    for listen in [false, true] {
        let (root, database) = fresh_database(&direct).await;
        let dir = tempfile::tempdir().unwrap();
        let pooled = bouncer.url_of(&database);
        let feed = with_database(&direct, &database);
        let mut env = vec![
            ("DATABASE_URL", pooled.as_str()),
            ("DATABASE_POOL_MODE", "transaction"),
        ];
        if listen {
            env.push(("FEED_DATABASE_URL", feed.as_str()));
        }
        let a = server(dir.path(), "a", &env).await;
        let b = server(dir.path(), "b", &env).await;
        let mode = if listen { "Listen" } else { "Poll" };
        assert!(b.stderr().contains(mode), "{}", b.stderr());
        every_route_through(&a, &b, if listen { LISTEN_BOUND } else { POLL_BOUND }).await;
        assert!(
            !bouncer.log().contains("prepared statement"),
            "{}",
            bouncer.log()
        );
        drop((a, b));
        drop_database(root, &database).await;
    }
}

/// PgBouncer in session mode, reached in the default mode: the feed listens
/// through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL and PgBouncer"]
async fn two_processes_through_pgbouncer_in_session_mode() {
    let direct = common::provision::required("TEST_POSTGRES_URL", "a PostgreSQL server");
    let upstream = common::faults::upstream_of(&direct).port();
    let bouncer = PgBouncer::start(upstream, PoolMode::Session);
    let (root, database) = fresh_database(&direct).await;
    let dir = tempfile::tempdir().unwrap();
    let pooled = bouncer.url_of(&database);
    let env = [("DATABASE_URL", pooled.as_str())];
    let a = server(dir.path(), "a", &env).await;
    let b = server(dir.path(), "b", &env).await;
    assert!(b.stderr().contains("Listen"), "{}", b.stderr());
    every_route_through(&a, &b, LISTEN_BOUND).await;
    drop((a, b));
    drop_database(root, &database).await;
}

/// A private primary and a streaming standby of it; panics when
/// PostgreSQL's server binaries are missing.
fn primary_and_standby() -> (PgCluster, PgCluster) {
    let primary = PgCluster::start();
    let standby = primary.standby();
    (primary, standby)
}

/// `DATABASE_URL` naming a standby stops the server (exit 1) before any
/// migration, with a message that says so; the CLI exits 1 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's server binaries (initdb)"]
async fn a_standby_as_database_url_is_refused_at_start() {
    let (_primary, standby) = tokio::task::block_in_place(primary_and_standby);
    let dir = tempfile::tempdir().unwrap();
    let url = standby.url();
    let mut server = Server::start_with(
        dir.path(),
        dir.path(),
        "standby",
        &[("DATABASE_URL", url.as_str()), ("API_KEY_PEPPER", PEPPER)],
    );
    let status = server.exit().await;
    assert_eq!(status.code(), Some(1), "{}", server.output());
    let stderr = server.stderr();
    assert!(stderr.contains("read-only"), "{stderr}");
    assert!(stderr.contains("standby"), "{stderr}");
    assert!(
        stderr.contains("DATABASE_URL must name the primary"),
        "{stderr}"
    );

    #[cfg(feature = "cli")]
    {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tower-api-keys"))
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("API_KEY_PEPPER", PEPPER)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("read-only"), "{stderr}");
    }
}

/// Index scans of `api_keys` on `cluster` so far.
async fn api_key_scans(cluster: &PgCluster) -> i64 {
    let db = Database::connect(cluster.url()).await.unwrap();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT COALESCE(SUM(idx_scan), 0)::bigint AS scans FROM pg_stat_user_tables \
             WHERE relname = 'api_keys'",
        ))
        .await
        .unwrap()
        .unwrap();
    let scans = row.try_get::<i64>("", "scans").unwrap();
    db.close().await.ok();
    scans
}

async fn on(cluster: &PgCluster, statement: &str) {
    let db = Database::connect(cluster.url()).await.unwrap();
    db.execute_unprepared(statement).await.unwrap();
    db.close().await.ok();
}

/// A standby as `READ_DATABASE_URL`: with its replay paused, a key created on
/// the primary works at once on both processes, and a key revoked on the
/// primary is refused within the bound and stays refused; once it replays
/// again, cache misses are read from the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's server binaries (initdb)"]
async fn a_lagging_read_replica_never_weakens_a_promise() {
    let (primary, standby) = tokio::task::block_in_place(primary_and_standby);
    let dir = tempfile::tempdir().unwrap();
    let (primary_url, standby_url) = (primary.url(), standby.url());
    let env = [
        ("DATABASE_URL", primary_url.as_str()),
        ("READ_DATABASE_URL", standby_url.as_str()),
    ];
    let a = server(dir.path(), "a", &env).await;
    let b = server(dir.path(), "b", &env).await;
    let client = client();
    let account = Uuid::new_v4();

    on(&standby, "SELECT pg_wal_replay_pause()").await;
    let key = create_key(&client, &a, ADMIN_TOKEN, account, "paused").await;
    assert_whoami(&client, &b, &key, account).await;
    assert_whoami(&client, &a, &key, account).await;
    manage(
        &a,
        Method::PATCH,
        &format!("/v1/api-keys/{}/revoke", key.key_id),
        account,
        None,
        200,
    )
    .await;
    refused_within(&b, &key.credential, LISTEN_BOUND).await;
    // Still refused while the standby, which has it active, stays paused.
    for _ in 0..30 {
        assert_eq!(whoami(&client, &b, &key.credential).await.status(), 401);
        assert_eq!(whoami(&client, &a, &key.credential).await.status(), 401);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Replaying again: once the standby has caught up, misses are read there.
    on(&standby, "SELECT pg_wal_replay_resume()").await;
    let keys: Vec<_> = {
        let mut keys = Vec::new();
        for i in 0..10 {
            keys.push(create_key(&client, &a, ADMIN_TOKEN, account, &format!("k{i}")).await);
        }
        keys
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = api_key_scans(&standby).await;
    for key in &keys {
        assert_whoami(&client, &b, key, account).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = api_key_scans(&standby).await;
    assert!(
        after - before >= keys.len() as i64,
        "the standby served {} of {} cache misses",
        after - before,
        keys.len()
    );
    for server in [&a, &b] {
        assert!(!server.stderr().contains("ERROR"), "{}", server.output());
    }
}
