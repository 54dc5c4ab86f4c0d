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

/// URLs of `scheme` whose password, `Xq7` and `S3CRET` around one character
/// that ends a part of a URL (or a percent-escape), sits in the userinfo or a
/// query parameter. Nothing listens at them.
fn urls_with_awkward_passwords(scheme: &str) -> Vec<String> {
    let mut urls: Vec<String> = ["?", "/", "@", "#", ":", "&", "%40", "%3F", "%2F", "%23"]
        .iter()
        .map(|c| format!("{scheme}://keys:Xq7{c}S3CRET@127.0.0.1:1/0"))
        .collect();
    for c in ["#", "@", "%26", "?"] {
        urls.push(format!(
            "{scheme}://127.0.0.1:1/0?sslmode=disable&password=Xq7{c}S3CRET"
        ));
    }
    urls
}

/// Neither part of the password of [`urls_with_awkward_passwords`].
fn assert_no_password(output: &str, url: &str) {
    for part in ["Xq7", "S3CRET"] {
        assert!(
            !output.contains(part),
            "{url}: the password shows:\n{output}"
        );
    }
}

/// A database or Redis URL is never shown with its password, whatever
/// characters the password holds, in the example server's logs and errors
/// (CONTRACT §18), also where the driver's own error quotes the URL.
#[tokio::test]
async fn never_shows_a_password_whatever_its_characters() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for scheme in ["postgres", "mysql"] {
        for url in urls_with_awkward_passwords(scheme) {
            cases.push(("DATABASE_URL", url));
        }
    }
    for url in urls_with_awkward_passwords("redis") {
        cases.push(("REDIS_URL", url));
    }
    cases.push((
        "REDIS_URL",
        "redis://127.0.0.1:1,redis://:Xq7?S3CRET@127.0.0.1:2".to_owned(),
    ));
    // All at once: each fails within the connect timeout.
    let mut servers: Vec<(String, Server)> = cases
        .iter()
        .enumerate()
        .map(|(i, (variable, url))| {
            let run = tempfile::tempdir_in(dir.path()).unwrap().keep();
            let server = Server::start_with(
                &run,
                logs.path(),
                &format!("password-{i}"),
                &[
                    ("ADMIN_TOKEN", ADMIN_TOKEN),
                    ("RUST_LOG", "debug"),
                    (variable, url.as_str()),
                ],
            );
            (url.clone(), server)
        })
        .collect();
    for (url, server) in &mut servers {
        let status = server.exit().await;
        let output = server.output();
        assert!(!status.success(), "{url}: {status}:\n{output}");
        assert!(output.contains("error: "), "{url}:\n{output}");
        assert_no_password(&output, url);
    }
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

/// `MAX_KEYS_PER_ACCOUNT` bounds one account's keys: one more is a `409`
/// problem document (revoked keys count), another account is not affected.
#[tokio::test]
async fn max_keys_per_account_is_a_409_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();
    let mut server = Server::start_with(
        dir.path(),
        logs.path(),
        "limit",
        &[("ADMIN_TOKEN", ADMIN_TOKEN), ("MAX_KEYS_PER_ACCOUNT", "2")],
    );
    server.wait_ready(&client).await;
    let first = create_key(&client, &server, ADMIN_TOKEN, account, "one").await;
    create_key(&client, &server, ADMIN_TOKEN, account, "two").await;
    let revoked = admin(
        &client,
        reqwest::Method::PATCH,
        server.url(&format!("/v1/api-keys/{}/revoke", first.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), 200);
    let refused = admin(
        &client,
        reqwest::Method::POST,
        server.url("/v1/api-keys"),
        ADMIN_TOKEN,
        account,
    )
    .json(&json!({"title": "three"}))
    .send()
    .await
    .unwrap();
    assert_eq!(
        problem(refused, 409).await["detail"],
        "Too many API keys for this account"
    );
    create_key(&client, &server, ADMIN_TOKEN, Uuid::new_v4(), "elsewhere").await;
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());

    let mut server = Server::start_with(
        dir.path(),
        logs.path(),
        "bad-limit",
        &[("ADMIN_TOKEN", ADMIN_TOKEN), ("MAX_KEYS_PER_ACCOUNT", "0")],
    );
    let status = server.exit().await;
    assert!(!status.success(), "{status}:\n{}", server.output());
    assert!(
        server.stderr().contains("MAX_KEYS_PER_ACCOUNT"),
        "{}",
        server.output()
    );
}

/// Revocation by the key holder (CONTRACT §18) takes the credential as it is
/// often pasted: with whitespace around it, or with the `Bearer ` prefix of
/// the header it was copied from. Each such key is revoked; every answer is
/// the same `200`.
#[tokio::test]
async fn holder_revocation_trims_whitespace_and_a_bearer_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();
    let mut server = Server::start(dir.path(), logs.path(), "holder", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;
    for wrap in [
        |c: &str| format!("  {c}\n"),
        |c: &str| format!("\t{c} \r\n"),
        |c: &str| format!("Bearer {c}"),
        |c: &str| format!(" bearer  {c}\t"),
    ] {
        let key = create_key(&client, &server, ADMIN_TOKEN, account, "pasted").await;
        assert_whoami(&client, &server, &key, account).await;
        let presented = wrap(&key.credential);
        let response = client
            .post(server.url("/v1/api-keys/revocations"))
            .json(&json!({ "credential": presented }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.text().await.unwrap(),
            r#"{"message":"Revocation processed"}"#
        );
        let refused = whoami(&client, &server, &key.credential).await;
        assert_eq!(
            problem(refused, 401).await["detail"],
            "Invalid API key",
            "{presented:?} did not revoke the key"
        );
    }
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
}

/// The admin token is compared as a whole, by digest: the token itself
/// passes, and every other value, longer, shorter or differing in one byte,
/// is refused alike.
#[tokio::test]
async fn the_admin_token_matches_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let account = Uuid::new_v4();
    let mut server = Server::start(dir.path(), logs.path(), "token", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;
    let list = server.url("/v1/api-keys");
    let mut last_changed = ADMIN_TOKEN.to_owned();
    last_changed.pop();
    last_changed.push('X');
    for wrong in [
        String::new(),
        ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1].to_owned(),
        format!("{ADMIN_TOKEN}x"),
        format!("{ADMIN_TOKEN}{ADMIN_TOKEN}"),
        last_changed,
        ADMIN_TOKEN.to_uppercase(),
    ] {
        let response = admin(&client, reqwest::Method::GET, list.clone(), &wrong, account)
            .send()
            .await
            .unwrap();
        let body = problem(response, 401).await;
        assert_eq!(
            body["detail"], "Management requests need Authorization: Bearer <ADMIN_TOKEN>",
            "{wrong:?}"
        );
    }
    let response = admin(&client, reqwest::Method::GET, list, ADMIN_TOKEN, account)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
}

/// The SQLite database the example server creates, and its `-wal` and
/// `-shm` files, are readable and writable by their owner only, as the
/// pepper file is (CONTRACT §18).
#[tokio::test]
async fn creates_its_sqlite_files_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let mut server = Server::start(dir.path(), logs.path(), "modes", Some(ADMIN_TOKEN));
    server.wait_ready(&client).await;
    // A write, so that the write-ahead log is in use.
    create_key(&client, &server, ADMIN_TOKEN, Uuid::new_v4(), "mode").await;
    for name in [
        "api-keys.db",
        "api-keys.db-wal",
        "api-keys.db-shm",
        "api-keys.pepper",
    ] {
        let mode = std::fs::metadata(dir.path().join(name))
            .unwrap_or_else(|err| panic!("{name}: {err}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name} has mode {mode:o}");
    }
    let status = server.stop("TERM").await;
    assert_eq!(status.code(), Some(0), "{status}:\n{}", server.output());
}
