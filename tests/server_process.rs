//! The example server (`examples/server.rs`) as a real process over real HTTP:
//! configuration from the environment, the pepper file, key management behind
//! the stand-in admin login, `/v1/whoami` behind the layer, graceful shutdown on
//! SIGTERM and SIGINT (with `last_used_at` flushed), a restart on the same
//! files, and logs that never show a secret.
#![cfg(all(unix, feature = "axum", feature = "sqlite"))]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::server::{
    ADMIN_TOKEN, Server, admin, assert_whoami, client, create_key, create_key_with, problem, whoami,
};
use serde_json::{Value, json};
use tower_api_keys::{Pepper, hash::KeyHasher};
use uuid::Uuid;

/// Length of the longest run of hex digits in `text`.
fn longest_hex_run(text: &str) -> usize {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

#[test]
fn hex_runs_are_measured() {
    assert_eq!(longest_hex_run("key_id=0b1c-ffff ab"), 4);
    assert_eq!(longest_hex_run(&"a".repeat(64)), 64);
    assert_eq!(longest_hex_run("xyz"), 0);
}

#[tokio::test]
async fn serves_manages_keys_shuts_down_gracefully_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();

    // First run: fresh directory, so a pepper file and a database are created.
    let mut server = Server::start(dir.path(), logs.path(), "first", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;

    let first = create_key(&client, &server, ADMIN_TOKEN, account, "first").await;
    let second = create_key(&client, &server, ADMIN_TOKEN, account, "second").await;
    assert_whoami(&client, &server, &first, account).await;
    assert_whoami(&client, &server, &second, account).await;
    let bearer = client
        .get(server.url("/v1/whoami"))
        .bearer_auth(&first.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);

    // The layer's refusals and the fallback are problem documents.
    let missing = client.get(server.url("/v1/whoami")).send().await.unwrap();
    assert_eq!(problem(missing, 401).await["detail"], "Missing API key");
    let unknown = client
        .get(server.url("/no-such-route"))
        .send()
        .await
        .unwrap();
    problem(unknown, 404).await;

    // The stand-in host login on the management routes.
    let list = server.url("/v1/api-keys");
    let wrong = admin(
        &client,
        reqwest::Method::GET,
        list.clone(),
        "wrong-token",
        account,
    )
    .send()
    .await
    .unwrap();
    assert!(wrong.headers().contains_key("www-authenticate"));
    problem(wrong, 401).await;
    let no_token = client
        .get(&list)
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap();
    problem(no_token, 401).await;
    let no_account = client
        .get(&list)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    problem(no_account, 401).await;
    let bad_account = client
        .get(&list)
        .bearer_auth(ADMIN_TOKEN)
        .header("x-account-id", "not-a-uuid")
        .send()
        .await
        .unwrap();
    problem(bad_account, 400).await;
    // An API key is not a management credential.
    let with_key = client
        .get(&list)
        .bearer_auth(&first.credential)
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap();
    problem(with_key, 401).await;
    let listed: Value = admin(&client, reqwest::Method::GET, list, ADMIN_TOKEN, account)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains("sk_"));

    // Revocation takes effect on the very next request.
    let revoked = admin(
        &client,
        reqwest::Method::PATCH,
        server.url(&format!("/v1/api-keys/{}/revoke", second.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = whoami(&client, &server, &second.credential).await;
    assert_eq!(problem(refused, 401).await["detail"], "Invalid API key");

    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    let first_run = server.output();
    assert_eq!(server.stdout(), "", "a given ADMIN_TOKEN is not printed");
    assert!(
        server
            .stderr()
            .contains("generated a new pepper and saved it to api-keys.pepper"),
        "{first_run}"
    );
    assert!(server.stderr().contains("listening on http://127.0.0.1:"));
    drop(server);

    let pepper_file = dir.path().join("api-keys.pepper");
    let mode = std::fs::metadata(&pepper_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "pepper file mode {mode:o}");
    let pepper_text = std::fs::read_to_string(&pepper_file).unwrap();
    let pepper_text = pepper_text.trim_end_matches('\n');
    assert!(pepper_text.len() >= 16);

    // Second run on the same directory: same pepper, same database.
    let mut server = Server::start(dir.path(), logs.path(), "second", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;
    assert_whoami(&client, &server, &first, account).await;
    let refused = whoami(&client, &server, &second.credential).await;
    assert_eq!(problem(refused, 401).await["detail"], "Invalid API key");
    let shown: Value = admin(
        &client,
        reqwest::Method::GET,
        server.url(&format!("/v1/api-keys/{}", first.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(shown["status"], "active");
    assert!(
        shown["last_used_at"].is_string(),
        "last_used_at was written by the first run: {shown}"
    );
    let shown: Value = admin(
        &client,
        reqwest::Method::GET,
        server.url(&format!("/v1/api-keys/{}", second.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(shown["status"], "revoked");

    let status = server.stop("INT").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    assert_eq!(server.stdout(), "");
    assert!(
        server
            .stderr()
            .contains("loaded the pepper from api-keys.pepper"),
        "{}",
        server.output()
    );
    let second_run = server.output();
    drop(server);

    // Nothing secret in any log.
    let logs = format!("{first_run}\n{second_run}");
    let hasher = KeyHasher::new(&Pepper::try_from(pepper_text).unwrap());
    for key in [&first, &second] {
        let hash = hasher.hash(&key.secret_key).to_hex();
        for secret in [&key.secret_key, &key.credential, &hash] {
            assert!(
                !logs.contains(secret.as_str()),
                "a secret was logged:\n{logs}"
            );
        }
    }
    assert!(!logs.contains(pepper_text), "the pepper was logged");
    assert!(!logs.contains(ADMIN_TOKEN), "the admin token was logged");
    assert!(
        longest_hex_run(&logs) < 64,
        "a 64-hex-character string was logged:\n{logs}"
    );
}

#[tokio::test]
async fn generates_and_prints_an_admin_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();

    let mut server = Server::start(dir.path(), logs.path(), "generated", None);
    server.wait_ready(&client).await;
    let stdout = server.stdout();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout: {stdout:?}");
    let token = lines[0]
        .strip_prefix("ADMIN_TOKEN=")
        .expect("an ADMIN_TOKEN= line");
    assert!(token.len() >= 32, "a long random token");

    let list = server.url("/v1/api-keys");
    let listed = admin(&client, reqwest::Method::GET, list.clone(), token, account)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.json::<Value>().await.unwrap(), json!([]));
    let wrong = admin(&client, reqwest::Method::GET, list, &token[1..], account)
        .send()
        .await
        .unwrap();
    problem(wrong, 401).await;
    let key = create_key(&client, &server, token, account, "with a generated token").await;
    assert_whoami(&client, &server, &key, account).await;

    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    assert_eq!(server.stdout(), stdout, "the token is printed once");
    let stderr = server.stderr();
    assert!(!stderr.contains(token), "the token was logged:\n{stderr}");
    assert!(!stderr.contains(&key.secret_key));
    assert!(longest_hex_run(&stderr) < 64, "{stderr}");
}

#[tokio::test]
async fn refuses_an_admin_token_under_16_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), logs.path(), "short", Some("fifteen-bytes!!"));
    let status = server.exit().await;
    assert!(!status.success(), "{status}:\n{}", server.output());
    let stderr = server.stderr();
    assert!(stderr.contains("ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("at least 16 bytes"), "{stderr}");
    assert!(
        !stderr.contains("fifteen-bytes!!"),
        "the token was printed:\n{stderr}"
    );
}

#[tokio::test]
async fn never_shows_a_database_password() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: the connection fails and the server says so.
    let url =
        "postgres://keys:pw-in-userinfo@127.0.0.1:1/keys?sslmode=disable&password=pw-in-query";
    let mut server = Server::start_with(
        dir.path(),
        logs.path(),
        "password",
        &[("ADMIN_TOKEN", ADMIN_TOKEN), ("DATABASE_URL", url)],
    );
    let status = server.exit().await;
    assert!(!status.success(), "{status}:\n{}", server.output());
    let output = server.output();
    assert!(output.contains("127.0.0.1:1"), "{output}");
    assert!(!output.contains("pw-in-userinfo"), "{output}");
    assert!(!output.contains("pw-in-query"), "{output}");
}

/// The routes of CONTRACT §6 that arrived with §8–§10: scope-guarded
/// `/v1/reports`, revocation by the key holder without the admin token, a
/// limited key's 429, and `GET /metrics` counting what happened.
#[tokio::test]
async fn serves_reports_revocations_rate_limits_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();
    let mut server = Server::start(dir.path(), logs.path(), "policy", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;

    let reader = create_key_with(
        &client,
        &server,
        ADMIN_TOKEN,
        account,
        json!({"title": "reader", "scopes": ["reports:read"], "rate_limit": {"requests": 3, "period_seconds": 3600}}),
    )
    .await;
    let whoami_body: Value = whoami(&client, &server, &reader.credential)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami_body["scopes"], json!(["reports:read"]));
    let report = client
        .get(server.url("/v1/reports"))
        .header("x-api-key", &reader.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(report.status(), 200);
    assert_eq!(report.headers()["ratelimit"], "\"key\";r=1;t=2400");
    let body: Value = report.json().await.unwrap();
    assert_eq!(
        body,
        json!({"account_id": account.to_string(), "key_id": reader.key_id})
    );
    let write = client
        .post(server.url("/v1/reports"))
        .header("x-api-key", &reader.credential)
        .send()
        .await
        .unwrap();
    assert_eq!(
        write.headers()["www-authenticate"],
        "Bearer error=\"insufficient_scope\", scope=\"reports:write\""
    );
    assert_eq!(problem(write, 403).await["detail"], "Insufficient scope");
    let limited = whoami(&client, &server, &reader.credential).await;
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(problem(limited, 429).await["detail"], "Rate limit exceeded");

    let metrics = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "tower_api_keys_verifications_total{outcome=\"valid\"} 3",
        "tower_api_keys_verifications_total{outcome=\"forbidden\"} 1",
        "tower_api_keys_verifications_total{outcome=\"rate_limited\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    assert!(!metrics.contains(&reader.key_id) && !metrics.contains("pk_"));

    // The management API's OpenAPI document, with the paths as mounted.
    #[cfg(feature = "openapi")]
    {
        let document: Value = client
            .get(server.url("/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        for path in [
            "/v1/api-keys",
            "/v1/api-keys/{key_id}/rotate",
            "/v1/api-keys/revocations",
        ] {
            assert!(
                document["paths"][path].is_object(),
                "{path} not in the document"
            );
        }
    }

    // Revocation by whoever holds the credential: no admin token.
    let other = create_key(&client, &server, ADMIN_TOKEN, account, "leaked").await;
    let revocation = |credential: String| {
        client
            .post(server.url("/v1/api-keys/revocations"))
            .json(&json!({ "credential": credential }))
            .send()
    };
    let garbage = revocation("pk_nope".into()).await.unwrap();
    assert_eq!(garbage.status(), 200);
    let garbage = garbage.text().await.unwrap();
    let revoked = revocation(other.credential.clone()).await.unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(revoked.text().await.unwrap(), garbage);
    assert_eq!(garbage, r#"{"message":"Revocation processed"}"#);
    let refused = whoami(&client, &server, &other.credential).await;
    assert_eq!(problem(refused, 401).await["detail"], "Invalid API key");

    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
    assert!(!server.output().contains(&reader.secret_key));
    drop(server);

    // The counts written at shutdown survive a restart: whoami, GET and POST
    // /v1/reports were let through by the layer (the guard's 403 counts), the
    // 429 was not.
    let mut server = Server::start(dir.path(), logs.path(), "policy-again", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;
    let usage: Value = admin(
        &client,
        reqwest::Method::GET,
        server.url(&format!("/v1/api-keys/{}/usage?days=2", reader.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let today = chrono::Utc::now().date_naive().to_string();
    assert_eq!(
        usage["days"][0],
        json!({"date": today, "requests": 3}),
        "{usage}"
    );
    assert_eq!(usage["days"][1]["requests"], 0, "{usage}");
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
}
