//! The key-management router over real HTTP, on every backend.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use common::{Gate, Harness, LookupGate, Probe, TestDb, concurrently, pepper};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use tower_api_keys::{AccountId, ApiKeyValidator, NewApiKey};
use uuid::Uuid;

struct Api {
    h: Harness,
    account: Uuid,
}

impl Api {
    /// How many keys the account has.
    async fn count(&self) -> usize {
        let listed: Vec<Value> = self
            .request(reqwest::Method::GET, "")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        listed.len()
    }

    async fn start(db: &TestDb) -> Self {
        Self {
            h: Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await,
            account: Uuid::new_v4(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.h
            .client
            .request(method, self.h.url(&format!("/v1/api-keys{path}")))
            .header("x-account-id", self.account.to_string())
    }

    /// The head of a JSON `POST /v1/api-keys` without its body's framing.
    fn post_head(&self) -> String {
        format!(
            "POST /v1/api-keys HTTP/1.1\r\nhost: localhost\r\nx-account-id: {}\r\n\
             content-type: application/json\r\n",
            self.account
        )
    }

    async fn create(&self, body: Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, "")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn create_ok(&self, title: &str) -> Value {
        let response = self.create(json!({"title": title})).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        response.json().await.unwrap()
    }
}

async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], "about:blank");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}

fn fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            e["field"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn rfc3339_utc(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap();
    assert!(text.ends_with('Z'), "{text} is not UTC");
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

async fn create_returns_the_secret_once(db: &TestDb) {
    let api = Api::start(db).await;
    let response = api
        .create(json!({"title": "  deploy bot  ", "description": "from CI", "expires_in_days": 30}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    let key_id = created["key_id"].as_str().unwrap();
    assert_eq!(location, format!("/v1/api-keys/{key_id}"));
    assert_eq!(created["title"], "deploy bot");
    assert_eq!(created["description"], "from CI");
    assert_eq!(created["status"], "active");
    let public_key = created["public_key"].as_str().unwrap();
    let secret_key = created["secret_key"].as_str().unwrap();
    assert!(tower_api_keys::Credential::parse(&format!("{public_key}:{secret_key}")).is_ok());
    let created_at = rfc3339_utc(&created["created_at"]);
    let expires_at = rfc3339_utc(&created["expires_at"]);
    assert_eq!((expires_at - created_at).num_days(), 30);
    let mut keys: Vec<_> = created.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
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
        ]
    );
    // Without a key prefix, the token is the whole credential.
    assert_eq!(created["token"], format!("{public_key}:{secret_key}"));
    assert_eq!(created["scopes"], Value::Null);
    assert_eq!(created["metadata"], Value::Null);
    assert_eq!(created["rotated_from"], Value::Null);

    // The key works.
    let whoami = api.h.whoami(&format!("{public_key}:{secret_key}")).await;
    assert_eq!(whoami.status(), StatusCode::OK);

    // Never again: neither the secret nor its hash appears anywhere later.
    let shown = api
        .request(reqwest::Method::GET, &format!("/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(shown.status(), StatusCode::OK);
    let shown_text = shown.text().await.unwrap();
    let listed = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [&shown_text, &listed] {
        assert!(!text.contains(secret_key));
        assert!(!text.contains("secret_key"));
        assert!(!text.contains("hash"));
    }
    let shown: Value = serde_json::from_str(&shown_text).unwrap();
    let mut keys: Vec<_> = shown.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
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
            "status",
            "title"
        ]
    );
    assert_eq!(shown["last_used_at"], Value::Null);
    assert_eq!(shown["created_at"], created["created_at"]);
}

async fn list_is_newest_first_and_scoped_to_the_account(db: &TestDb) {
    let api = Api::start(db).await;
    let mut ids = Vec::new();
    for title in ["first", "second", "third"] {
        ids.push(api.create_ok(title).await["key_id"].clone());
    }
    let other = Api {
        h: Harness::start(api.h.validator.clone()).await,
        account: Uuid::new_v4(),
    };
    other.create_ok("someone else's").await;

    let listed: Vec<Value> = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed_ids: Vec<_> = listed.iter().map(|k| k["key_id"].clone()).collect();
    ids.reverse();
    assert_eq!(listed_ids, ids);
    assert_eq!(listed[0]["title"], "third");
    let empty: Vec<Value> = Api {
        h: Harness::start(api.h.validator.clone()).await,
        account: Uuid::new_v4(),
    }
    .request(reqwest::Method::GET, "")
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert!(empty.is_empty());
}

async fn other_accounts_keys_are_not_found(db: &TestDb) {
    let api = Api::start(db).await;
    let key_id = api.create_ok("mine").await["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let intruder = Api {
        h: Harness::start(api.h.validator.clone()).await,
        account: Uuid::new_v4(),
    };
    for (method, path) in [
        (reqwest::Method::GET, format!("/{key_id}")),
        (reqwest::Method::PATCH, format!("/{key_id}/revoke")),
        (reqwest::Method::DELETE, format!("/{key_id}")),
    ] {
        let body = problem(
            intruder
                .request(method.clone(), &path)
                .send()
                .await
                .unwrap(),
            404,
        )
        .await;
        assert_eq!(body["detail"], "API key not found");
        // And no such key at all.
        let missing = path.replace(&key_id, &Uuid::new_v4().to_string());
        let body = problem(api.request(method, &missing).send().await.unwrap(), 404).await;
        assert_eq!(body["detail"], "API key not found");
    }
    // Untouched.
    let mine: Value = api
        .request(reqwest::Method::GET, &format!("/{key_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["status"], "active");
    // A key id that is not a UUID.
    for path in ["/not-a-uuid", "/not-a-uuid/revoke"] {
        let method = if path.ends_with("revoke") {
            reqwest::Method::PATCH
        } else {
            reqwest::Method::GET
        };
        problem(api.request(method, path).send().await.unwrap(), 400).await;
    }
}

async fn revoke_is_idempotent_and_takes_effect_at_once(db: &TestDb) {
    let api = Api::start(db).await;
    let created = api.create_ok("k").await;
    let key_id = created["key_id"].as_str().unwrap();
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    // Cached a moment before.
    assert_eq!(api.h.whoami(&credential).await.status(), StatusCode::OK);
    assert_eq!(api.h.whoami(&credential).await.status(), StatusCode::OK);

    for body in [None, Some(json!({}))] {
        let mut request = api.request(reqwest::Method::PATCH, &format!("/{key_id}/revoke"));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body, json!({"message": "API key revoked successfully"}));
        assert_eq!(
            api.h.whoami(&credential).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let shown: Value = api
        .request(reqwest::Method::GET, &format!("/{key_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "revoked");
    // An unexpected field in the revoke body is refused.
    let body = problem(
        api.request(reqwest::Method::PATCH, &format!("/{key_id}/revoke"))
            .json(&json!({"reason": "x"}))
            .send()
            .await
            .unwrap(),
        422,
    )
    .await;
    assert_eq!(fields(&body), ["reason"]);
}

async fn delete_takes_effect_at_once(db: &TestDb) {
    let api = Api::start(db).await;
    let created = api.create_ok("k").await;
    let key_id = created["key_id"].as_str().unwrap();
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    assert_eq!(api.h.whoami(&credential).await.status(), StatusCode::OK);
    let response = api
        .request(reqwest::Method::DELETE, &format!("/{key_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "API key deleted successfully"})
    );
    assert_eq!(
        api.h.whoami(&credential).await.status(),
        StatusCode::UNAUTHORIZED
    );
    problem(
        api.request(reqwest::Method::GET, &format!("/{key_id}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    problem(
        api.request(reqwest::Method::DELETE, &format!("/{key_id}"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

async fn expired_keys_read_expired(db: &TestDb) {
    let api = Api::start(db).await;
    let manager = &api.h.manager;
    let account = AccountId::new(api.account);
    let created = manager
        .create(account, NewApiKey::new("k").with_expires_in_days(1))
        .await
        .unwrap();
    // Age the row by a year, directly in the store.
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
    use tower_api_keys::entity::{Column, Entity};
    Entity::update_many()
        .col_expr(
            Column::ExpiresAt,
            Expr::value(Utc::now() - chrono::TimeDelta::days(365)),
        )
        .filter(Column::KeyId.eq(created.key.key_id.into_inner()))
        .exec(db.repo.connection())
        .await
        .unwrap();
    let shown: Value = api
        .request(reqwest::Method::GET, &format!("/{}", created.key.key_id))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["status"], "expired");
    assert_eq!(
        api.h.whoami(&created.credential()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn invalid_fields_are_422_naming_each_field_and_create_nothing(db: &TestDb) {
    let api = Api::start(db).await;
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"title": ""}), vec!["title"]),
        (json!({"title": "   \t "}), vec!["title"]),
        (json!({}), vec!["title"]),
        (json!({"title": "x".repeat(256)}), vec!["title"]),
        (json!({"title": "é".repeat(256)}), vec!["title"]),
        (json!({"title": 5}), vec!["title"]),
        (
            json!({"title": "t", "expires_in_days": 0}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expires_in_days": 366}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expires_in_days": -1}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expires_in_days": 1.5}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expires_in_days": "30"}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expires_in_days": 18446744073709551615u64}),
            vec!["expires_in_days"],
        ),
        (
            json!({"title": "t", "expire_in_days": 30}),
            vec!["expire_in_days"],
        ),
        (
            json!({"title": "t", "description": "d".repeat(4097)}),
            vec!["description"],
        ),
        (json!({"title": "t", "description": 7}), vec!["description"]),
        (
            json!({"title": "nul\u{0}", "description": "d"}),
            vec!["title"],
        ),
        (
            json!({"title": "t", "description": "nul\u{0}"}),
            vec!["description"],
        ),
        (json!([]), vec!["body"]),
        (json!("title"), vec!["body"]),
    ];
    for (body, expected) in cases {
        let response = api.create(body.clone()).await;
        let problem = problem(response, 422).await;
        let mut got = fields(&problem);
        got.sort();
        assert_eq!(got, expected, "{body}");
    }
    assert_eq!(api.count().await, 0);
}

async fn limits_hold_exactly_at_the_bounds(db: &TestDb) {
    let api = Api::start(db).await;
    for body in [
        json!({"title": "é".repeat(255), "description": "😀".repeat(4096), "expires_in_days": 365}),
        json!({"title": "t", "expires_in_days": 1, "description": null}),
        json!({"title": "t", "expires_in_days": null}),
    ] {
        assert_eq!(api.create(body).await.status(), StatusCode::CREATED);
    }
    assert_eq!(api.count().await, 3);
}

async fn malformed_json_is_400_and_creates_nothing(db: &TestDb) {
    let api = Api::start(db).await;
    for body in ["{\"title\": ", "", "{\"title\": \"t\"} trailing"] {
        let response = api
            .request(reqwest::Method::POST, "")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        problem(response, 400).await;
    }
    assert_eq!(api.count().await, 0);
}

async fn a_body_that_is_not_declared_json_is_415(db: &TestDb) {
    let api = Api::start(db).await;
    let post = || api.request(reqwest::Method::POST, "");
    problem(
        post()
            .header("content-type", "text/plain")
            .body("{\"title\":\"t\"}")
            .send()
            .await
            .unwrap(),
        415,
    )
    .await;
    problem(post().body("{\"title\":\"t\"}").send().await.unwrap(), 415).await;
    assert_eq!(api.count().await, 0);
}

async fn an_oversized_body_is_413_declared_or_chunked(db: &TestDb) {
    let api = Api::start(db).await;
    let post = || api.request(reqwest::Method::POST, "");
    let big = format!(
        "{{\"title\":\"t\",\"description\":\"{}\"}}",
        "d".repeat(70_000)
    );
    problem(
        post()
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    // Chunked: no Content-Length, the limit is found while reading. The
    // connection afterwards: `a_refused_body_is_read_out_and_the_connection_stays_open`.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .as_bytes()
        .chunks(1000)
        .map(|chunk| Ok(chunk.to_vec()))
        .collect();
    problem(
        post()
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap(),
        413,
    )
    .await;
    assert_eq!(api.count().await, 0);
}

/// How a request body is framed on a raw connection.
#[derive(Clone, Copy)]
enum Framing {
    Length,
    Chunked,
}

/// One HTTP/1.1 connection on a raw socket, for what an HTTP client hides:
/// whether the server read a body out and kept the connection open.
struct RawConnection {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

impl RawConnection {
    async fn open(base: &str) -> Self {
        let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
            .await
            .unwrap();
        Self {
            stream,
            read: Vec::new(),
        }
    }

    /// Writes `head` (request line and headers, each ending in CRLF) and
    /// `body`, framed by Content-Length or in 1,000-byte chunks.
    async fn write(&mut self, head: &str, body: &[u8], framing: Framing) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut request = head.as_bytes().to_vec();
        match framing {
            Framing::Length => {
                request.extend_from_slice(
                    format!("content-length: {}\r\n\r\n", body.len()).as_bytes(),
                );
                request.extend_from_slice(body);
            }
            Framing::Chunked => {
                request.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                for chunk in body.chunks(1000) {
                    request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    request.extend_from_slice(chunk);
                    request.extend_from_slice(b"\r\n");
                }
                request.extend_from_slice(b"0\r\n\r\n");
            }
        }
        self.stream.write_all(&request).await
    }

    /// Reads one answer: its status, its head in lower case, and its body by
    /// Content-Length. `None` when the server closed the connection first.
    async fn answer(&mut self) -> Option<(u16, String, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match self.stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.read.extend_from_slice(&buffer[..read]),
            }
        };
        let head = String::from_utf8_lossy(&self.read[..head_end]).to_ascii_lowercase();
        let status = head
            .strip_prefix("http/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        while self.read.len() < head_end + length {
            match self.stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.read.extend_from_slice(&buffer[..read]),
            }
        }
        let body = self.read[head_end..head_end + length].to_vec();
        self.read.drain(..head_end + length);
        Some((status, head, body))
    }
}

/// A refused body is read out before the answer, up to a bound: a client
/// that writes its whole request first reads the answer, and its connection
/// serves the next request. A body declared past the bound is refused before
/// it is sent, and one streamed past it is cut off.
#[tokio::test]
async fn a_refused_body_is_read_out_and_the_connection_stays_open() {
    let validator = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    let api = Api {
        h: Harness::start(validator).await,
        account: Uuid::new_v4(),
    };
    let big = format!("{{\"title\":\"{}\"}}", "t".repeat(300_000));
    let list = format!(
        "GET /v1/api-keys HTTP/1.1\r\nhost: localhost\r\nx-account-id: {}\r\n",
        api.account
    );
    let text_head = api.post_head().replace("application/json", "text/plain");
    for (what, head, framing, status) in [
        ("declared too long", api.post_head(), Framing::Length, 413),
        ("streamed too long", api.post_head(), Framing::Chunked, 413),
        ("not JSON", text_head.clone(), Framing::Length, 415),
        ("not JSON, streamed", text_head, Framing::Chunked, 415),
    ] {
        let mut raw = RawConnection::open(&api.h.base).await;
        raw.write(&head, big.as_bytes(), framing).await.unwrap();
        let (answered, head, _) = raw.answer().await.expect(what);
        assert_eq!(answered, status, "{what}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{what}: {head}"
        );
        raw.write(&list, b"", Framing::Length).await.unwrap();
        let (listed, _, body) = raw.answer().await.expect(what);
        assert_eq!((listed, body.as_slice()), (200, &b"[]"[..]), "{what}");
    }

    // Declared past the bound, or waiting for `100 Continue`: the answer
    // comes before the body is sent.
    for framing in [
        "content-length: 2000000\r\n",
        "expect: 100-continue\r\ncontent-length: 70000\r\n",
    ] {
        let mut raw = RawConnection::open(&api.h.base).await;
        {
            use tokio::io::AsyncWriteExt;
            let head = format!("{}{framing}\r\n", api.post_head());
            raw.stream.write_all(head.as_bytes()).await.unwrap();
        }
        let (status, _, _) = tokio::time::timeout(Duration::from_secs(30), raw.answer())
            .await
            .expect("answered without the body")
            .expect("an answer");
        assert_eq!(status, 413, "{framing}");
    }

    // Streamed without end: answered, and the connection closed.
    let raw = RawConnection::open(&api.h.base).await;
    let (mut reader, mut writer) = raw.stream.into_split();
    let head = format!("{}transfer-encoding: chunked\r\n\r\n", api.post_head());
    let endless = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        writer.write_all(head.as_bytes()).await?;
        let chunk = format!("1000\r\n{}\r\n", "x".repeat(0x1000));
        loop {
            writer.write_all(chunk.as_bytes()).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        use tokio::io::AsyncReadExt;
        let mut buffer = [0u8; 4096];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => answer.extend_from_slice(&buffer[..read]),
            }
        }
    })
    .await
    .expect("the connection is closed");
    assert!(
        answer.starts_with(b"HTTP/1.1 413 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(30), endless)
            .await
            .expect("the writer stops")
            .unwrap()
            .is_err()
    );
    assert_eq!(api.count().await, 0);
}

async fn titles_are_stored_verbatim(db: &TestDb) {
    let api = Api::start(db).await;
    let titles = [
        "'; DROP TABLE api_keys; --",
        "Robert\"); DELETE FROM api_keys WHERE ('1'='1",
        "مفتاح الإنتاج",
        "🔑 prod 🚀 👩🏽‍💻",
        "  tab\tand newline\n  ",
    ];
    for title in titles {
        let created = api
            .create(json!({"title": title, "description": title}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED, "{title:?}");
        let created: Value = created.json().await.unwrap();
        let shown: Value = api
            .request(
                reqwest::Method::GET,
                &format!("/{}", created["key_id"].as_str().unwrap()),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(shown["title"], title.trim(), "{title:?}");
        assert_eq!(shown["description"], title);
    }
    let listed: Vec<Value> = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), titles.len());
}

async fn management_needs_host_authentication_not_an_api_key(db: &TestDb) {
    let api = Api::start(db).await;
    let created = api.create_ok("k").await;
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    // No account: 401 on every route.
    let client = Client::new();
    for (method, path) in [
        (reqwest::Method::GET, String::new()),
        (reqwest::Method::POST, String::new()),
        (
            reqwest::Method::GET,
            format!("/{}", created["key_id"].as_str().unwrap()),
        ),
        (
            reqwest::Method::DELETE,
            format!("/{}", created["key_id"].as_str().unwrap()),
        ),
    ] {
        let response = client
            .request(method, api.h.url(&format!("/v1/api-keys{path}")))
            .header("x-api-key", &credential)
            .json(&json!({"title": "minted"}))
            .send()
            .await
            .unwrap();
        problem(response, 401).await;
    }

    // A route where the API-key layer itself authenticates: refused unless opted in.
    use axum::Router;
    use tower_api_keys::{ApiKeyAuthLayer, router::ManagementRouter};
    let validator = api.h.validator.clone();
    let manager = api.h.manager.clone();
    let by_key = |allow: bool| {
        Router::new().nest(
            "/v1/api-keys",
            ManagementRouter::new(manager.clone())
                .allow_api_key_auth(allow)
                .build()
                .layer(ApiKeyAuthLayer::new(validator.clone())),
        )
    };
    let refused = common::serve(by_key(false)).await;
    let response = client
        .post(format!("http://{refused}/v1/api-keys"))
        .header("x-api-key", &credential)
        .json(&json!({"title": "minted"}))
        .send()
        .await
        .unwrap();
    problem(response, 403).await;
    let allowed = common::serve(by_key(true)).await;
    let response = client
        .post(format!("http://{allowed}/v1/api-keys"))
        .header("x-api-key", &credential)
        .json(&json!({"title": "minted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let listed: Vec<Value> = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        listed.len(),
        2,
        "the opted-in router created one key for the key's own account"
    );
}

/// A host that lets API keys manage keys (`allow_api_key_auth(true)`): a key
/// needs `api_keys:write` or no scope restriction, and can never create,
/// rotate into or `PATCH` a key with a scope it does not hold (CONTRACT §18).
/// Every refusal is a `403` problem document and changes nothing.
async fn an_api_key_manages_only_keys_within_its_own_scopes(db: &TestDb) {
    use axum::Router;
    use tower_api_keys::{ApiKeyAuthLayer, Scopes, router::ManagementRouter};
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = tower_api_keys::KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let make = |title: &'static str, scopes: Option<&'static [&'static str]>| {
        let manager = manager.clone();
        async move {
            let mut request = NewApiKey::new(title);
            if let Some(scopes) = scopes {
                request = request.with_scopes(Scopes::new(scopes).unwrap());
            }
            manager.create(account, request).await.unwrap()
        }
    };
    let reader = make("reader", Some(&["reports:read"])).await;
    let writer = make("writer", Some(&["api_keys:write", "reports:read"])).await;
    let root = make("root", None).await;
    let admin_key = make("admin", Some(&["admin"])).await;
    let sibling = make("sibling", Some(&["reports:read"])).await;

    let app = Router::new().nest(
        "/v1/api-keys",
        ManagementRouter::new(manager.clone())
            .allow_api_key_auth(true)
            .build()
            .layer(ApiKeyAuthLayer::new(validator.clone())),
    );
    let base = format!("http://{}/v1/api-keys", common::serve(app).await);
    let client = Client::new();
    let send = |key: &tower_api_keys::CreatedKey,
                method: reqwest::Method,
                path: String,
                body: Option<Value>| {
        let mut request = client
            .request(method, format!("{base}{path}"))
            .header("x-api-key", key.credential());
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { request.send().await.unwrap() }
    };
    let snapshot = || async { manager.list(account).await.unwrap() };
    let before = snapshot().await;

    // Without api_keys:write a scoped key may not manage at all.
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            String::new(),
            Some(json!({"title": "minted"})),
        ),
        (reqwest::Method::GET, String::new(), None),
        (
            reqwest::Method::PATCH,
            format!("/{}", reader.key.key_id),
            Some(json!({"scopes": null})),
        ),
        (
            reqwest::Method::POST,
            format!("/{}/rotate", sibling.key.key_id),
            None,
        ),
        (
            reqwest::Method::PATCH,
            format!("/{}/revoke", sibling.key.key_id),
            None,
        ),
    ] {
        let response = send(&reader, method.clone(), path.clone(), body).await;
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"Bearer error="insufficient_scope", scope="api_keys:write""#,
            "{method} {path}"
        );
        assert_eq!(problem(response, 403).await["detail"], "Insufficient scope");
    }

    // With it, never beyond its own scopes.
    let beyond =
        "An API key cannot create, rotate into or change a key with scopes it does not hold";
    for (method, path, body) in [
        // An unrestricted key, or one with a scope the writer lacks.
        (
            reqwest::Method::POST,
            String::new(),
            json!({"title": "minted"}),
        ),
        (
            reqwest::Method::POST,
            String::new(),
            json!({"title": "minted", "scopes": null}),
        ),
        (
            reqwest::Method::POST,
            String::new(),
            json!({"title": "minted", "scopes": ["reports:read", "reports:write"]}),
        ),
        // Its own scopes widened, or made unrestricted.
        (
            reqwest::Method::PATCH,
            format!("/{}", writer.key.key_id),
            json!({"scopes": null}),
        ),
        (
            reqwest::Method::PATCH,
            format!("/{}", writer.key.key_id),
            json!({"scopes": ["api_keys:write", "admin"]}),
        ),
        // A sibling given a scope the writer lacks.
        (
            reqwest::Method::PATCH,
            format!("/{}", sibling.key.key_id),
            json!({"scopes": ["admin"]}),
        ),
        // A sibling that holds more than the writer, even for its title.
        (
            reqwest::Method::PATCH,
            format!("/{}", root.key.key_id),
            json!({"title": "renamed"}),
        ),
        (
            reqwest::Method::PATCH,
            format!("/{}", admin_key.key.key_id),
            json!({"title": "renamed"}),
        ),
        // Rotating into a sibling's wider rights.
        (
            reqwest::Method::POST,
            format!("/{}/rotate", root.key.key_id),
            json!({}),
        ),
        (
            reqwest::Method::POST,
            format!("/{}/rotate", admin_key.key.key_id),
            json!({"grace_period_seconds": 60}),
        ),
    ] {
        let response = send(&writer, method.clone(), path.clone(), Some(body.clone())).await;
        assert_eq!(
            problem(response, 403).await["detail"],
            beyond,
            "{method} {path} {body}"
        );
    }
    assert_eq!(snapshot().await, before, "a refusal changed nothing");
    for key in [&root, &admin_key, &sibling, &writer] {
        assert_eq!(
            validator
                .validate(&key.credential())
                .await
                .unwrap()
                .scopes(),
            manager
                .get(account, key.key.key_id)
                .await
                .unwrap()
                .scopes
                .as_ref()
        );
    }

    // Within its scopes it manages as the host's login would.
    let response = send(
        &writer,
        reqwest::Method::POST,
        String::new(),
        Some(json!({"title": "narrower", "scopes": ["reports:read"]})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = send(
        &writer,
        reqwest::Method::PATCH,
        format!("/{}", sibling.key.key_id),
        Some(json!({"title": "renamed", "scopes": []})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(
        &writer,
        reqwest::Method::POST,
        format!("/{}/rotate", sibling.key.key_id),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let rotated: Value = response.json().await.unwrap();
    assert_eq!(rotated["scopes"], json!([]));
    let response = send(
        &writer,
        reqwest::Method::PATCH,
        format!("/{}/revoke", admin_key.key.key_id),
        None,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "revoking is not limited");

    // An unrestricted key may do anything, an unrestricted key included.
    let response = send(
        &root,
        reqwest::Method::POST,
        String::new(),
        Some(json!({"title": "unrestricted"})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = send(
        &root,
        reqwest::Method::PATCH,
        format!("/{}", writer.key.key_id),
        Some(json!({"scopes": null})),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Notes in `cancelled` when a request's future is dropped before it
/// answered (hyper drops it when the client disconnects).
async fn note_cancelled(
    axum::extract::State(cancelled): axum::extract::State<Arc<AtomicBool>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    struct Watch(Arc<AtomicBool>, bool);
    impl Drop for Watch {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }
    let mut watch = Watch(cancelled, false);
    let response = next.run(request).await;
    watch.1 = true;
    response
}

/// A revoke, delete, rotation, `PATCH` or holder revocation whose client
/// disconnects after the store committed it, while the request is still
/// being handled, takes effect on this process all the same (CONTRACT §18):
/// the very next request with the key sees the change.
async fn a_change_cancelled_after_its_commit_still_takes_effect_here(db: &TestDb) {
    use axum::{Json, Router, middleware, routing::get};
    use tokio::io::AsyncWriteExt;
    use tower_api_keys::{
        ApiKeyAuthLayer, AuthenticatedKey, KeyManager,
        router::{ManagementRouter, RevocationRouter},
    };
    let client = Client::new();
    for operation in ["revoke", "delete", "rotate", "update", "holder"] {
        let gate = Gate::new(match operation {
            "holder" => "revoke",
            other => other,
        });
        let validator = ApiKeyValidator::new(
            Probe::new(db.repo.clone()).with_after_write(gate.hook()),
            pepper(),
        );
        let manager = KeyManager::new(validator.clone());
        let cancelled = Arc::new(AtomicBool::new(false));
        let app = Router::new()
            .route(
                "/v1/whoami",
                get(|key: AuthenticatedKey| async move { Json(json!({"scopes": key.scopes()})) })
                    .route_layer(ApiKeyAuthLayer::new(validator.clone())),
            )
            .nest(
                "/v1/api-keys/revocations",
                RevocationRouter::new(manager.clone()).build(),
            )
            .nest(
                "/v1/api-keys",
                ManagementRouter::new(manager.clone())
                    .build()
                    .layer(middleware::from_fn(common::host_auth)),
            )
            .layer(middleware::from_fn_with_state(
                Arc::clone(&cancelled),
                note_cancelled,
            ));
        let addr = common::serve(app).await;
        let account = AccountId::new(Uuid::new_v4());
        let key = manager
            .create(account, NewApiKey::new("cancelled"))
            .await
            .unwrap();
        let whoami = || {
            client
                .get(format!("http://{addr}/v1/whoami"))
                .header("x-api-key", key.credential())
                .send()
        };
        // Cached as valid.
        assert_eq!(whoami().await.unwrap().status(), StatusCode::OK);

        let id = key.key.key_id;
        let (method, path, body) = match operation {
            "revoke" => ("PATCH", format!("/v1/api-keys/{id}/revoke"), String::new()),
            "delete" => ("DELETE", format!("/v1/api-keys/{id}"), String::new()),
            "rotate" => ("POST", format!("/v1/api-keys/{id}/rotate"), "{}".to_owned()),
            "update" => (
                "PATCH",
                format!("/v1/api-keys/{id}"),
                r#"{"scopes":["changed"]}"#.to_owned(),
            ),
            _ => (
                "POST",
                "/v1/api-keys/revocations".to_owned(),
                json!({"credential": key.credential()}).to_string(),
            ),
        };
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "{method} {path} HTTP/1.1\r\nhost: localhost\r\nx-account-id: {account}\r\n\
                     content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // The store has committed; the client goes away before the answer.
        gate.arrived().await;
        drop(stream);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !cancelled.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "{operation}: the server never dropped the request"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        gate.release();
        // Wait for the store call to return, if anything still runs it.
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while !gate.passed() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;

        let response = whoami().await.unwrap();
        if operation == "update" {
            assert_eq!(response.status(), StatusCode::OK);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["scopes"], json!(["changed"]), "{operation}");
        } else {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{operation}");
        }
    }
}

/// A host's app whose manager allows `max` keys per account, and a client
/// that manages `account`'s keys through it.
/// Builds management requests for an account: method and path under
/// `/v1/api-keys`.
type Requester =
    Arc<dyn Fn(Uuid, reqwest::Method, String) -> reqwest::RequestBuilder + Send + Sync>;

/// A host's app whose manager allows `max` keys per account, and a client
/// that manages an account's keys through it.
async fn limited_app(db: &TestDb, max: u64) -> (tower_api_keys::KeyManager, Requester) {
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let manager = tower_api_keys::KeyManager::new(validator.clone()).with_max_keys_per_account(max);
    let addr = common::serve(common::app(
        tower_api_keys::ApiKeyAuthLayer::new(validator),
        manager.clone(),
    ))
    .await;
    let client = Client::new();
    let request: Requester = Arc::new(move |account, method, path| {
        client
            .request(method, format!("http://{addr}/v1/api-keys{path}"))
            .header("x-account-id", account.to_string())
    });
    (manager, request)
}

const TOO_MANY: &str = "Too many API keys for this account";

/// `max_keys_per_account` (CONTRACT §18): every key not deleted counts,
/// revoked and expired ones too; one more is a `409` problem document; an
/// import counts too; a rotation is allowed at the limit; a delete makes room.
async fn an_account_has_at_most_max_keys_per_account(db: &TestDb) {
    let (manager, request) = limited_app(db, 3).await;
    let account = Uuid::new_v4();
    let create = |account: Uuid| {
        request(account, reqwest::Method::POST, String::new())
            .json(&json!({"title": "k"}))
            .send()
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let response = create(account).await.unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        ids.push(body["key_id"].as_str().unwrap().to_owned());
    }
    let refused = create(account).await.unwrap();
    assert_eq!(problem(refused, 409).await["detail"], TOO_MANY);
    // Another account has a limit of its own.
    let other = Uuid::new_v4();
    assert_eq!(create(other).await.unwrap().status(), StatusCode::CREATED);

    // Revoked and expired keys still count.
    let revoked = request(
        account,
        reqwest::Method::PATCH,
        format!("/{}/revoke", ids[0]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
        use tower_api_keys::entity::{Column, Entity};
        Entity::update_many()
            .col_expr(
                Column::ExpiresAt,
                Expr::value(Utc::now() - chrono::TimeDelta::hours(1)),
            )
            .filter(Column::KeyId.eq(ids[1].parse::<Uuid>().unwrap()))
            .exec(db.repo.connection())
            .await
            .unwrap();
    }
    let listed: Vec<Value> = request(account, reqwest::Method::GET, String::new())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = listed
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert!(
        statuses.contains(&"revoked") && statuses.contains(&"expired"),
        "{statuses:?}"
    );
    let refused = create(account).await.unwrap();
    assert_eq!(problem(refused, 409).await["detail"], TOO_MANY);

    // A rotation at the limit is allowed.
    let rotated = request(
        account,
        reqwest::Method::POST,
        format!("/{}/rotate", ids[2]),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(rotated.status(), StatusCode::CREATED);

    // An import counts the keys it adds to each account's stored ones.
    let row =
        |account: Uuid| common::row(&tower_api_keys::KeyPair::generate().unwrap(), account, None);
    let err = manager.import(vec![row(account)]).await.unwrap_err();
    assert!(
        matches!(err, tower_api_keys::ManagerError::TooManyKeys { limit: 3, account_id } if account_id.into_inner() == account),
        "{err:?}"
    );
    let err = manager
        .import(vec![row(other), row(other), row(other)])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tower_api_keys::ManagerError::TooManyKeys { .. }),
        "{err:?}"
    );
    assert_eq!(
        manager.import(vec![row(other), row(other)]).await.unwrap(),
        2
    );
    assert_eq!(
        manager.list(AccountId::new(account)).await.unwrap().len(),
        4
    );
    assert_eq!(manager.list(AccountId::new(other)).await.unwrap().len(), 3);

    // Deleting makes room, one key per key deleted.
    for id in &ids[..2] {
        let deleted = request(account, reqwest::Method::DELETE, format!("/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::OK);
    }
    assert_eq!(create(account).await.unwrap().status(), StatusCode::CREATED);
    let refused = create(account).await.unwrap();
    assert_eq!(problem(refused, 409).await["detail"], TOO_MANY);
}

/// Concurrent creates never take an account past its limit: exactly the
/// limit succeed, every other one is the `409` (never a `503`).
async fn concurrent_creates_stop_exactly_at_the_limit(db: &TestDb) {
    let (manager, request) = limited_app(db, 5).await;
    let account = Uuid::new_v4();
    let statuses = concurrently(24, |_| {
        let request = Arc::clone(&request);
        async move {
            request(account, reqwest::Method::POST, String::new())
                .json(&json!({"title": "racing"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    })
    .await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (5, 19), "{statuses:?}");
    assert_eq!(
        manager.list(AccountId::new(account)).await.unwrap().len(),
        5
    );
}

async fn fifty_parallel_creates_all_succeed_and_are_listed(db: &TestDb) {
    let api = Arc::new(Api::start(db).await);
    let results = concurrently(50, |i| {
        let api = Arc::clone(&api);
        async move {
            api.create(json!({"title": format!("parallel {i}")}))
                .await
                .status()
        }
    })
    .await;
    assert!(
        results.iter().all(|s| *s == StatusCode::CREATED),
        "{results:?}"
    );
    let listed: Vec<Value> = api
        .request(reqwest::Method::GET, "")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 50);
    let created: Vec<_> = listed
        .iter()
        .map(|k| rfc3339_utc(&k["created_at"]))
        .collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "newest first");
}

/// Many validations of a cached key race with its revocation: once the revoke
/// call has returned, not one more succeeds.
async fn revoke_racing_validations_leaves_no_success_after_it(db: &TestDb) {
    let api = Arc::new(Api::start(db).await);
    let account = AccountId::new(api.account);
    let created = api
        .h
        .manager
        .create(account, NewApiKey::new("raced"))
        .await
        .unwrap();
    let credential = Arc::new(created.credential());
    assert!(api.h.validator.validate(&credential).await.is_ok());

    let revoked = Arc::new(AtomicBool::new(false));
    let late_successes = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (api, credential, revoked, late, total) = (
                api.clone(),
                credential.clone(),
                revoked.clone(),
                late_successes.clone(),
                total.clone(),
            );
            tokio::spawn(async move {
                let deadline = tokio::time::Instant::now() + Duration::from_millis(600);
                while tokio::time::Instant::now() < deadline {
                    // Read the flag *before* starting: a request that starts after the
                    // revoke returned must fail.
                    let after = revoked.load(Ordering::SeqCst);
                    let status = api.h.whoami(&credential).await.status();
                    total.fetch_add(1, Ordering::Relaxed);
                    if after && status == StatusCode::OK {
                        late.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    api.h
        .manager
        .revoke(account, created.key.key_id)
        .await
        .unwrap();
    revoked.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert!(total.load(Ordering::Relaxed) > 20, "the race actually ran");
    assert_eq!(late_successes.load(Ordering::SeqCst), 0);
}

/// Validates `credential` in a task of its own: whether it passed.
fn validate_in_background(
    validator: &ApiKeyValidator,
    credential: &str,
) -> tokio::task::JoinHandle<bool> {
    let (validator, credential) = (validator.clone(), credential.to_owned());
    tokio::spawn(async move { validator.validate(&credential).await.is_ok() })
}

/// A lookup that read the store before a revoke must not put the active entry
/// back into the cache after the revoke evicted it.
async fn a_lookup_from_before_the_revoke_cannot_refill_the_cache(db: &TestDb) {
    // Lookups can be held after they read the row, before they cache it.
    let gate = LookupGate::every();
    let probe = Probe::new(db.repo.clone()).with_after_lookup(gate.hook());
    let validator = ApiKeyValidator::new(probe.clone(), pepper());
    let manager = tower_api_keys::KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let created = manager.create(account, NewApiKey::new("k")).await.unwrap();
    let credential = created.credential();

    // A lookup starts, reads the row (active), and is held before it caches.
    gate.hold(true);
    let in_flight = validate_in_background(&validator, &credential);
    gate.reached().await;
    manager.revoke(account, created.key.key_id).await.unwrap();
    gate.hold(false);
    gate.release();
    // The in-flight lookup began before the revoke; whatever it answers, it must
    // not leave an active entry behind.
    in_flight.await.unwrap();
    assert!(validator.validate(&credential).await.is_err());
}

/// A lookup that read the row before a revoke must not answer a request sent
/// after the revoke returned: that request never joins the older lookup.
async fn a_request_after_the_revoke_never_joins_an_older_lookup(db: &TestDb) {
    // Only the first lookup is held.
    let gate = LookupGate::first();
    let probe = Probe::new(db.repo.clone()).with_after_lookup(gate.hook());
    let validator = ApiKeyValidator::new(probe.clone(), pepper());
    let manager = tower_api_keys::KeyManager::new(validator.clone());
    let account = AccountId::new(Uuid::new_v4());
    let created = manager.create(account, NewApiKey::new("k")).await.unwrap();
    let credential = created.credential();

    // Request A misses the cache, reads the row while it is active, and is held.
    gate.hold(true);
    let a = validate_in_background(&validator, &credential);
    gate.reached().await;
    manager.revoke(account, created.key.key_id).await.unwrap();

    // Request B is sent after the revoke returned, while A is still held.
    let mut b = validate_in_background(&validator, &credential);
    // B must not wait for A: it does a lookup of its own. (Were it to join A's
    // flight it would wait here, then get A's stale answer once A is released.)
    let early = tokio::time::timeout(Duration::from_secs(5), &mut b).await;
    gate.release();
    let b_passed = match early {
        Ok(joined) => joined.unwrap(),
        Err(_) => b.await.unwrap(),
    };
    assert!(
        !b_passed,
        "a request sent after revoke returned was let through"
    );
    assert_eq!(probe.lookups_of(&created.key.public_key), 2);
    // A began before the revoke; whatever it answers, nothing stale is cached.
    a.await.unwrap();
    assert!(validator.validate(&credential).await.is_err());
}

async fn store_failure_in_management_is_503(db: &TestDb) {
    let probe = Probe::new(db.repo.clone());
    let api = Api {
        h: Harness::start(ApiKeyValidator::new(probe.clone(), pepper())).await,
        account: Uuid::new_v4(),
    };
    probe.set_failing(true);
    let response = api.create(json!({"title": "t"})).await;
    let headers = response.headers().clone();
    problem(response, 503).await;
    assert!(headers.contains_key("retry-after"));
    problem(
        api.request(reqwest::Method::GET, "").send().await.unwrap(),
        503,
    )
    .await;
}

backend_tests!(
    create_returns_the_secret_once,
    list_is_newest_first_and_scoped_to_the_account,
    other_accounts_keys_are_not_found,
    revoke_is_idempotent_and_takes_effect_at_once,
    delete_takes_effect_at_once,
    expired_keys_read_expired,
    invalid_fields_are_422_naming_each_field_and_create_nothing,
    limits_hold_exactly_at_the_bounds,
    malformed_json_is_400_and_creates_nothing,
    a_body_that_is_not_declared_json_is_415,
    an_oversized_body_is_413_declared_or_chunked,
    titles_are_stored_verbatim,
    management_needs_host_authentication_not_an_api_key,
    an_api_key_manages_only_keys_within_its_own_scopes,
    a_change_cancelled_after_its_commit_still_takes_effect_here,
    an_account_has_at_most_max_keys_per_account,
    concurrent_creates_stop_exactly_at_the_limit,
    fifty_parallel_creates_all_succeed_and_are_listed,
    revoke_racing_validations_leaves_no_success_after_it,
    a_lookup_from_before_the_revoke_cannot_refill_the_cache,
    a_request_after_the_revoke_never_joins_an_older_lookup,
    store_failure_in_management_is_503,
);

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_documents() {
    let validator = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    let h = Harness::start(validator).await;
    let response = h
        .client
        .put(h.url("/v1/api-keys"))
        .header("x-account-id", Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    problem(response, 405).await;
}

/// CONTRACT §4: every status ≥ 400 is a problem document, including the
/// router's own path rejections (a `key_id` segment that is not UTF-8 once
/// percent-decoded, or not a UUID) — and authentication is checked first.
#[tokio::test]
async fn path_rejections_are_problem_documents() {
    let validator = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    let h = Harness::start(validator).await;
    let account = Uuid::new_v4().to_string();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/api-keys/%FF"),
        (reqwest::Method::PATCH, "/v1/api-keys/%FF/revoke"),
        (reqwest::Method::DELETE, "/v1/api-keys/%FF"),
        (reqwest::Method::GET, "/v1/api-keys/%C3%28"),
        (reqwest::Method::GET, "/v1/api-keys/not-a-uuid"),
        (reqwest::Method::DELETE, "/v1/api-keys/123"),
    ] {
        let response = h
            .client
            .request(method.clone(), h.url(path))
            .header("x-account-id", &account)
            .send()
            .await
            .unwrap();
        let body = problem(response, 400).await;
        assert_eq!(body["detail"], "key_id must be a UUID", "{method} {path}");
        // Without the host's authentication: 401 first.
        let response = h
            .client
            .request(method.clone(), h.url(path))
            .send()
            .await
            .unwrap();
        problem(response, 401).await;
    }
}
