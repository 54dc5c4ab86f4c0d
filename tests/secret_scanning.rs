//! GitHub's secret-scanning partner endpoint on the example server, as a real
//! process: reports signed exactly as GitHub signs them (ECDSA P-256/SHA-256
//! over the raw body, DER, base64) by a key made here, every label, every
//! refusal (which revokes nothing), and a leak revocation reaching a second
//! replica of the same SQLite file through the change feed.
#![cfg(all(unix, feature = "secret-scanning", feature = "sqlite"))]

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use base64::{Engine as _, engine::general_purpose::STANDARD};
use common::server::{ADMIN_TOKEN, Created, Server, admin, client, create_key, problem, whoami};
use p256::{
    ecdsa::{Signature, SigningKey, signature::Signer as _},
    pkcs8::{EncodePublicKey as _, LineEnding},
};
use serde_json::{Value, json};
use uuid::Uuid;

const ROUTE: &str = "/v1/secret-scanning/github";
const KEY_ID: &str = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a";
const MAX_REPORT_BYTES: usize = 1 << 20;

/// A P-256 key as GitHub holds one; its public half goes into the keys file.
fn signing_key() -> SigningKey {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    SigningKey::from_slice(&bytes).unwrap()
}

/// Writes a file shaped like GitHub's `GET /meta/public_keys/secret_scanning`.
fn write_keys_file(dir: &Path, keys: &[(&str, &SigningKey)]) -> String {
    let keys: Vec<Value> = keys
        .iter()
        .enumerate()
        .map(|(index, (id, key))| {
            let pem = key
                .verifying_key()
                .to_public_key_pem(LineEnding::LF)
                .unwrap();
            json!({"key_identifier": id, "key": pem, "is_current": index == 0})
        })
        .collect();
    let path = dir.join("github-keys.json");
    std::fs::write(&path, json!({ "public_keys": keys }).to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// GitHub's signature header value for `body`.
fn signature(key: &SigningKey, body: &[u8]) -> String {
    let signature: Signature = key.sign(body);
    STANDARD.encode(signature.to_der())
}

fn start(dir: &Path, logs: &Path, run: &str, keys_file: &str) -> Server {
    Server::start_with(
        dir,
        logs,
        run,
        &[
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("GITHUB_SCANNING_KEYS_FILE", keys_file),
        ],
    )
}

/// A report posted as GitHub posts it, signed by `signer` (`None`: unsigned).
async fn post_report(
    client: &reqwest::Client,
    server: &Server,
    signer: Option<(&str, &SigningKey)>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = client
        .post(server.url(ROUTE))
        .header("content-type", "application/json");
    if let Some((id, key)) = signer {
        request = request
            .header("Github-Public-Key-Identifier", id)
            .header("Github-Public-Key-Signature", signature(key, &body));
    }
    request.body(body).send().await.unwrap()
}

fn item(token: &str) -> Value {
    json!({
        "token": token,
        "type": "example_api_key",
        "url": "https://github.com/octo-org/leaky/blob/abc123/config.env#L3",
        "source": "content",
    })
}

async fn still_works(client: &reqwest::Client, server: &Server, key: &Created) -> bool {
    whoami(client, server, &key.credential).await.status() == 200
}

#[tokio::test]
async fn a_signed_report_revokes_every_leaked_key_and_labels_each_token_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let github = signing_key();
    let keys_file = write_keys_file(dir.path(), &[(KEY_ID, &github)]);
    let mut server = start(dir.path(), logs.path(), "first", &keys_file);
    server.wait_ready(&client).await;
    // A second replica of the same database, started once the first made the
    // pepper file.
    let mut replica = start(dir.path(), logs.path(), "replica", &keys_file);
    replica.wait_ready(&client).await;

    let account = Uuid::new_v4();
    let leaked = create_key(&client, &server, ADMIN_TOKEN, account, "leaked").await;
    let kept = create_key(&client, &server, ADMIN_TOKEN, account, "kept").await;
    let revoked = create_key(&client, &server, ADMIN_TOKEN, account, "revoked").await;
    let response = admin(
        &client,
        reqwest::Method::PATCH,
        server.url(&format!("/v1/api-keys/{}/revoke", revoked.key_id)),
        ADMIN_TOKEN,
        account,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert!(still_works(&client, &replica, &leaked).await); // cached there as active

    let public_key = |key: &Created| key.credential.split(':').next().unwrap().to_owned();
    let wrong_secret = format!("{}:sk_{}", public_key(&kept), "Z".repeat(32));
    let unknown = format!("pk_{}:sk_{}", "A".repeat(32), "B".repeat(32));
    let tokens = [
        (wrong_secret.as_str(), "false_positive"),
        (leaked.credential.as_str(), "true_positive"),
        (unknown.as_str(), "false_positive"),
        ("pk_short:sk_short", "false_positive"),
        (revoked.credential.as_str(), "true_positive"),
        ("ghp_not_ours", "false_positive"),
    ];
    let report: Vec<Value> = tokens.iter().map(|(token, _)| item(token)).collect();
    let body = serde_json::to_vec(&report).unwrap();
    let response = post_report(&client, &server, Some((KEY_ID, &github)), body.clone()).await;
    assert_eq!(response.status(), 200);
    let labels: Value = response.json().await.unwrap();
    let expected: Vec<Value> = tokens
        .iter()
        .map(|(token, label)| {
            json!({"token_raw": token, "token_type": "example_api_key", "label": label})
        })
        .collect();
    assert_eq!(labels, Value::Array(expected.clone()));

    // Refused on this process at once, on the other replica through the feed.
    assert_eq!(
        whoami(&client, &server, &leaked.credential).await.status(),
        401
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while still_works(&client, &replica, &leaked).await {
        assert!(
            Instant::now() < deadline,
            "the second replica still accepts the leaked key after 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A key whose secret did not verify is left alone.
    assert!(still_works(&client, &server, &kept).await);

    // The same report again is harmless and answered the same.
    let response = post_report(&client, &server, Some((KEY_ID, &github)), body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        Value::Array(expected)
    );

    // Logged with the key and the report's URL, never the token.
    server.stop("TERM").await;
    let output = server.output();
    assert!(output.contains(&leaked.key_id), "{output}");
    assert!(output.contains("github.com/octo-org/leaky"), "{output}");
    for (token, _) in tokens {
        assert!(!output.contains(token), "a reported token is logged");
    }
    assert!(!output.contains(&leaked.secret_key));
}

/// With a key prefix, GitHub reports the token form: a token whose secret
/// verifies is revoked, one with a broken checksum is a false positive.
#[tokio::test]
async fn a_reported_token_form_revokes_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let github = signing_key();
    let keys_file = write_keys_file(dir.path(), &[(KEY_ID, &github)]);
    let mut server = Server::start_with(
        dir.path(),
        logs.path(),
        "token",
        &[
            ("ADMIN_TOKEN", ADMIN_TOKEN),
            ("GITHUB_SCANNING_KEYS_FILE", keys_file.as_str()),
            ("API_KEY_PREFIX", "acme"),
        ],
    );
    server.wait_ready(&client).await;

    let account = Uuid::new_v4();
    let created = create_key(&client, &server, ADMIN_TOKEN, account, "leaked as a token").await;
    let (token, credential) = (created.token, created.credential);
    assert!(token.starts_with("acme_"), "{token}");
    assert_eq!(whoami(&client, &server, &credential).await.status(), 200);

    // The same token with its last checksum character changed.
    let mut broken = token.clone();
    let last = broken.pop().unwrap();
    broken.push(if last == '0' { '1' } else { '0' });
    let report = json!([item(&broken), item(&token)]);
    let body = serde_json::to_vec(&report).unwrap();
    let response = post_report(&client, &server, Some((KEY_ID, &github)), body).await;
    assert_eq!(response.status(), 200);
    let labels: Value = response.json().await.unwrap();
    assert_eq!(labels[0]["label"], "false_positive", "{labels}");
    assert_eq!(labels[1]["label"], "true_positive", "{labels}");
    assert_eq!(labels[1]["token_raw"], token.as_str());
    assert_eq!(whoami(&client, &server, &credential).await.status(), 401);
    assert_eq!(whoami(&client, &server, &token).await.status(), 401);
    server.stop("TERM").await;
}

#[tokio::test]
async fn refused_reports_revoke_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let client = client();
    let (github, older, stranger) = (signing_key(), signing_key(), signing_key());
    let keys_file = write_keys_file(dir.path(), &[(KEY_ID, &github), ("older", &older)]);
    let mut server = start(dir.path(), logs.path(), "refusals", &keys_file);
    server.wait_ready(&client).await;
    let key = create_key(&client, &server, ADMIN_TOKEN, Uuid::new_v4(), "k").await;
    let report = serde_json::to_vec(&json!([item(&key.credential)])).unwrap();

    // Unsigned, signed by a key GitHub does not list, under an unknown key
    // id, with a signature of other bytes, or garbled: 401.
    for (signer, body) in [
        (None, report.clone()),
        (Some((KEY_ID, &stranger)), report.clone()),
        (Some(("unknown-key-id", &github)), report.clone()),
    ] {
        problem(post_report(&client, &server, signer, body).await, 401).await;
    }
    let other_bytes = client
        .post(server.url(ROUTE))
        .header("Github-Public-Key-Identifier", KEY_ID)
        .header("Github-Public-Key-Signature", signature(&github, b"[]"))
        .body(report.clone())
        .send()
        .await
        .unwrap();
    problem(other_bytes, 401).await;
    let garbled = client
        .post(server.url(ROUTE))
        .header("Github-Public-Key-Identifier", KEY_ID)
        .header("Github-Public-Key-Signature", "bm90IGEgc2lnbmF0dXJl")
        .body(report.clone())
        .send()
        .await
        .unwrap();
    problem(garbled, 401).await;

    // Signed, but not a report: 400.
    for body in [
        b"not json".to_vec(),
        br#"{"token": "x"}"#.to_vec(),
        serde_json::to_vec(&json!([item(&key.credential), {"token": 42, "type": "t"}])).unwrap(),
        serde_json::to_vec(&json!([item(&key.credential), "a string"])).unwrap(),
        serde_json::to_vec(&json!([{"token": key.credential}])).unwrap(),
    ] {
        let response = post_report(&client, &server, Some((KEY_ID, &github)), body).await;
        problem(response, 400).await;
    }

    // Too many tokens: 413.
    let many: Vec<Value> = std::iter::once(item(&key.credential))
        .chain((0..1_000).map(|_| item("pk_x:sk_y")))
        .collect();
    let response = post_report(
        &client,
        &server,
        Some((KEY_ID, &github)),
        serde_json::to_vec(&many).unwrap(),
    )
    .await;
    problem(response, 413).await;

    // Over 1 MiB, streamed (no Content-Length): 413.
    let mut big = serde_json::to_vec(&json!([item(&key.credential)])).unwrap();
    big.pop();
    big.extend(
        format!(
            r#",{{"token":"{}","type":"t"}}]"#,
            "x".repeat(MAX_REPORT_BYTES)
        )
        .bytes(),
    );
    let signed = signature(&github, &big);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .chunks(64 * 1024)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    let response = client
        .post(server.url(ROUTE))
        .header("Github-Public-Key-Identifier", KEY_ID)
        .header("Github-Public-Key-Signature", signed)
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    problem(response, 413).await;

    assert!(
        still_works(&client, &server, &key).await,
        "a refused report revoked a key"
    );

    // Every listed key verifies, not only the current one.
    let response = post_report(&client, &server, Some(("older", &older)), report).await;
    assert_eq!(response.status(), 200);
    assert!(!still_works(&client, &server, &key).await);
}

#[tokio::test]
async fn an_unusable_keys_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let not_keys = dir.path().join("not-keys.json");
    std::fs::write(
        &not_keys,
        r#"{"public_keys": [{"key_identifier": "k", "key": "nope"}]}"#,
    )
    .unwrap();
    for (run, file, wanted) in [
        ("missing", missing, "cannot read"),
        ("invalid", not_keys, "is not a PEM"),
    ] {
        let mut server = start(dir.path(), logs.path(), run, file.to_str().unwrap());
        let status = server.exit().await;
        assert_eq!(status.code(), Some(1));
        let output = server.output();
        assert!(output.contains("GITHUB_SCANNING_KEYS_FILE"), "{output}");
        assert!(output.contains(wanted), "{output}");
    }
}
