//! The token form `P_…` (CONTRACT §14.1) through real parts: the layer in an
//! axum server over each database, revocation by the holder, and the example
//! server as a process with `API_KEY_PREFIX`.

mod common;

use common::{Harness, Probe, TestDb, pepper};
use reqwest::StatusCode;
use serde_json::Value;
use tower_api_keys::{ApiKeyValidator, KeyPrefix, Token};

const PREFIX: &str = "acme";
const MALFORMED: &str = "Invalid API key format. Expected format: pk_xxx:sk_xxx";

fn prefix() -> KeyPrefix {
    KeyPrefix::new(PREFIX).unwrap()
}

/// `token` with its last checksum character changed.
fn with_bad_checksum(token: &str) -> String {
    let (head, last) = token.split_at(token.len() - 1);
    let other = if last == "0" { "1" } else { "0" };
    format!("{head}{other}")
}

async fn detail(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    body["detail"].as_str().unwrap().to_owned()
}

async fn a_token_authenticates_as_its_key_in_either_header(db: &TestDb) {
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_key_prefix(prefix())
        .build();
    let (h, account, created) = Harness::with_key(validator, "ci").await;
    let token = created.token.expose().to_owned();
    assert!(
        token.starts_with("acme_"),
        "the manager hands out the token"
    );
    assert_eq!(token.len(), prefix().token_len());

    for response in [
        h.whoami(&token).await,
        h.whoami_with("authorization", format!("Bearer {token}"))
            .await,
        // The pk_…:sk_… spelling of the same key still works.
        h.whoami(&created.credential()).await,
    ] {
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["account_id"], account.to_string());
        assert_eq!(body["key_id"], created.key.key_id.to_string());
    }
}

async fn a_bad_checksum_or_a_foreign_prefix_is_malformed_without_a_lookup(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let validator = ApiKeyValidator::builder(probe.clone(), pepper())
        .with_key_prefix(prefix())
        .build();
    let (h, _, created) = Harness::with_key(validator, "ci").await;
    let token = created.token.expose().to_owned();
    let foreign = Token::new(
        Some(&KeyPrefix::new("other").unwrap()),
        &tower_api_keys::key::PublicKey::parse(&created.key.public_key).unwrap(),
        &created.secret_key,
    );
    let lookups = probe.lookups();
    for value in [
        with_bad_checksum(&token),
        foreign.expose().to_owned(),
        token.replacen("acme_", "acmf_", 1),
    ] {
        assert_eq!(
            detail(h.whoami(&value).await, StatusCode::UNAUTHORIZED).await,
            MALFORMED
        );
    }
    let bad = with_bad_checksum(&token);
    assert_eq!(
        detail(
            h.whoami_with("authorization", format!("Bearer {bad}"))
                .await,
            StatusCode::UNAUTHORIZED
        )
        .await,
        MALFORMED
    );
    assert_eq!(
        probe.lookups(),
        lookups,
        "no store lookup for a malformed token"
    );
}

async fn a_bearer_value_with_neither_prefix_is_no_api_key(db: &TestDb) {
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_key_prefix(prefix())
        .build();
    let (h, _, created) = Harness::with_key(validator, "ci").await;
    let foreign = Token::new(
        Some(&KeyPrefix::new("other").unwrap()),
        &tower_api_keys::key::PublicKey::parse(&created.key.public_key).unwrap(),
        &created.secret_key,
    );
    for value in [
        format!("Bearer {}", foreign.expose()),
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig".to_owned(),
        // `P_` is case-sensitive, as `pk_` is.
        format!("Bearer {}", created.token.expose().to_uppercase()),
    ] {
        assert_eq!(
            detail(
                h.whoami_with("authorization", value).await,
                StatusCode::UNAUTHORIZED
            )
            .await,
            "Missing API key"
        );
    }
}

async fn without_a_prefix_a_token_is_malformed_and_token_is_the_credential(db: &TestDb) {
    let (h, _, created) =
        Harness::with_key(ApiKeyValidator::new(db.repo.clone(), pepper()), "ci").await;
    assert_eq!(created.token.expose(), created.credential());
    let token = prefix().token(
        &tower_api_keys::key::PublicKey::parse(&created.key.public_key).unwrap(),
        &created.secret_key,
    );
    assert_eq!(
        detail(h.whoami(token.expose()).await, StatusCode::UNAUTHORIZED).await,
        MALFORMED
    );
}

async fn the_holder_revokes_a_key_with_its_token(db: &TestDb) {
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_key_prefix(prefix())
        .build();
    let (h, _, created) = Harness::with_key(validator, "ci").await;
    let token = created.token.expose().to_owned();
    // A wrong checksum revokes nothing.
    h.manager
        .revoke_by_credential(&with_bad_checksum(&token))
        .await
        .unwrap();
    assert_eq!(h.whoami(&token).await.status(), StatusCode::OK);
    h.manager
        .revoke_by_credential(&format!("Bearer {token}\n"))
        .await
        .unwrap();
    for value in [token.as_str(), &created.credential()] {
        assert_eq!(
            detail(h.whoami(value).await, StatusCode::UNAUTHORIZED).await,
            "Invalid API key"
        );
    }
}

backend_tests!(
    a_token_authenticates_as_its_key_in_either_header,
    a_bad_checksum_or_a_foreign_prefix_is_malformed_without_a_lookup,
    a_bearer_value_with_neither_prefix_is_no_api_key,
    without_a_prefix_a_token_is_malformed_and_token_is_the_credential,
    the_holder_revokes_a_key_with_its_token,
);

/// The example server as a process: `API_KEY_PREFIX` gives create a token
/// that whoami accepts and the holder's revocation route takes; a bad prefix
/// stops it at start.
#[cfg(all(unix, feature = "axum", feature = "sqlite"))]
mod server {
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::common::server::{ADMIN_TOKEN, Server, admin, client, create_key, problem, whoami};

    #[tokio::test]
    async fn create_hands_out_a_token_that_whoami_and_revocation_accept() {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let client = client();
        let account = Uuid::new_v4();
        let mut server = Server::start_with(
            dir.path(),
            logs.path(),
            "token",
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("API_KEY_PREFIX", "acme")],
        );
        server.wait_ready(&client).await;

        let created = create_key(&client, &server, ADMIN_TOKEN, account, "scannable").await;
        let token = created.token.clone();
        let (public_key, secret_key) = created.credential.split_once(':').unwrap();
        assert_eq!(token.len(), "acme_".len() + 64 + 6);
        assert_eq!(&token[..5], "acme_");
        assert_eq!(&token[5..37], &public_key[3..]);
        assert_eq!(&token[37..69], &secret_key[3..]);

        let response = whoami(&client, &server, &token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["account_id"], account.to_string());
        assert_eq!(body["key_id"], created.key_id);
        let bearer = client
            .get(server.url("/v1/whoami"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(bearer.status(), 200);

        // Rotation hands out the successor's token.
        let response = admin(
            &client,
            reqwest::Method::POST,
            server.url(&format!("/v1/api-keys/{}/rotate", created.key_id)),
            ADMIN_TOKEN,
            account,
        )
        .json(&json!({"grace_period_seconds": 600}))
        .send()
        .await
        .unwrap();
        assert_eq!(response.status(), 201);
        let rotated: Value = response.json().await.unwrap();
        let successor = rotated["token"].as_str().unwrap();
        assert!(successor.starts_with("acme_") && successor != token);
        assert_eq!(whoami(&client, &server, successor).await.status(), 200);

        // The holder revokes with the token, without the admin login.
        let response = client
            .post(server.url("/v1/api-keys/revocations"))
            .json(&json!({"credential": token}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let refused = problem(whoami(&client, &server, &token).await, 401).await;
        assert_eq!(refused["detail"], "Invalid API key");

        server.stop("TERM").await;
        let output = server.output();
        assert!(!output.contains(&token[5..69]), "a token in the logs");
        assert!(!output.contains(&secret_key[3..]), "a secret in the logs");
    }

    #[tokio::test]
    async fn a_bad_prefix_stops_the_server_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let mut server = Server::start_with(
            dir.path(),
            logs.path(),
            "bad-prefix",
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("API_KEY_PREFIX", "Acme_")],
        );
        let status = server.exit().await;
        assert_eq!(status.code(), Some(1));
        assert!(
            server
                .stderr()
                .contains("API_KEY_PREFIX: invalid key prefix"),
            "{}",
            server.stderr()
        );
    }
}
