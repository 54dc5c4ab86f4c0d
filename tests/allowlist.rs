//! Per-key address allowlists through real parts: the layer and the
//! management router in an axum server with connect info, listening on `[::]`
//! (so IPv4 clients arrive IPv4-mapped), over each database; clients bound to
//! 127.0.0.2, 127.0.0.3 and `::1`; a second replica following a change; the
//! example server as a process, alone and behind a real nginx.

mod common;

use std::{net::IpAddr, time::Duration};

use common::{TestDb, app, pepper};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tower_api_keys::{
    AccountId, AllowedNetworks, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, NewApiKey, RateLimit,
};

const DENIED: &str = "API key not allowed from this address";

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A client whose connections leave from `source`.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(ip(source))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A served app (whoami behind the layer, the management routes) over
/// `validator`, reached from three source addresses.
struct Site {
    port: u16,
    manager: KeyManager,
    account: AccountId,
    from_2: reqwest::Client,
    from_3: reqwest::Client,
    from_v6: reqwest::Client,
}

impl Site {
    async fn start(validator: ApiKeyValidator, account: AccountId) -> Self {
        let manager = KeyManager::new(validator.clone());
        let router = app(ApiKeyAuthLayer::new(validator), manager.clone());
        // On `[::]`: IPv4 clients arrive IPv4-mapped.
        let port = common::serve_with_connect_info(router, "[::]").await.port();
        Self {
            port,
            manager,
            account,
            from_2: client_from("127.0.0.2"),
            from_3: client_from("127.0.0.3"),
            from_v6: client_from("::1"),
        }
    }

    fn url(&self, client: &reqwest::Client, path: &str) -> String {
        if std::ptr::eq(client, &self.from_v6) {
            format!("http://[::1]:{}{path}", self.port)
        } else {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    async fn whoami(&self, client: &reqwest::Client, credential: &str) -> StatusCode {
        let response = client
            .get(self.url(client, "/v1/whoami"))
            .header("x-api-key", credential)
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body,
                json!({"type": "about:blank", "title": "Forbidden", "status": 403, "detail": DENIED})
            );
        }
        status
    }

    /// A management request for the site's account.
    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.from_2
            .request(
                method,
                self.url(&self.from_2, &format!("/v1/api-keys{path}")),
            )
            .header("x-account-id", self.account.to_string())
    }

    /// A management request's answer, as JSON.
    async fn answer(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.admin(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap()
    }

    /// The three source addresses' statuses for `credential`.
    async fn statuses(&self, credential: &str) -> [StatusCode; 3] {
        [
            self.whoami(&self.from_2, credential).await,
            self.whoami(&self.from_3, credential).await,
            self.whoami(&self.from_v6, credential).await,
        ]
    }
}

const OK: StatusCode = StatusCode::OK;
const NO: StatusCode = StatusCode::FORBIDDEN;

async fn an_allowlist_is_stored_normalised_and_enforced(db: &TestDb) {
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let site = Site::start(validator, AccountId::new(uuid::Uuid::new_v4())).await;

    let response = site
        .admin(reqwest::Method::POST, "")
        .json(&json!({"title": "ci", "allowed_cidrs": ["127.0.0.2", "10.1.2.3/8", "127.0.0.2/32"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    assert_eq!(
        created["allowed_cidrs"],
        json!(["127.0.0.2/32", "10.0.0.0/8"])
    );
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    let credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    // Show and list read it back from the store.
    let shown: Value = site
        .answer(reqwest::Method::GET, &format!("/{key_id}"), None)
        .await;
    assert_eq!(shown["allowed_cidrs"], created["allowed_cidrs"]);
    let listed: Value = site.answer(reqwest::Method::GET, "", None).await;
    assert_eq!(listed[0]["allowed_cidrs"], created["allowed_cidrs"]);

    // 127.0.0.3 and ::1 are outside; IPv4 clients arrive IPv4-mapped on [::].
    assert_eq!(site.statuses(&credential).await, [OK, NO, NO]);

    // A change takes effect at once.
    let patched: Value = site
        .answer(
            reqwest::Method::PATCH,
            &format!("/{key_id}"),
            Some(json!({"allowed_cidrs": ["::1", "127.0.0.3/31"]})),
        )
        .await;
    assert_eq!(patched["allowed_cidrs"], json!(["::1/128", "127.0.0.2/31"]));
    assert_eq!(site.statuses(&credential).await, [OK, OK, OK]);
    let narrowed = site
        .answer(
            reqwest::Method::PATCH,
            &format!("/{key_id}"),
            Some(json!({"allowed_cidrs": ["::1"]})),
        )
        .await;
    assert_eq!(narrowed["allowed_cidrs"], json!(["::1/128"]));
    assert_eq!(site.statuses(&credential).await, [NO, NO, OK]);

    // Bad input: 422 naming the field, and nothing changes.
    let too_many: Vec<String> = (0..65).map(|i| format!("10.{i}.0.0/16")).collect();
    for bad in [
        json!([]),
        json!("::1"),
        json!({"cidr": "::1"}),
        json!([1]),
        json!(["10.0.0.0/33"]),
        json!(["fe80::1%eth0"]),
        json!(["127.0.0.1", "not an address"]),
        json!(too_many),
    ] {
        for (method, path, mut body) in [
            (
                reqwest::Method::POST,
                String::new(),
                json!({"title": "bad"}),
            ),
            (reqwest::Method::PATCH, format!("/{key_id}"), json!({})),
        ] {
            body["allowed_cidrs"] = bad.clone();
            let response = site.admin(method, &path).json(&body).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["errors"][0]["field"], "allowed_cidrs", "{problem}");
        }
    }
    let keys = site.manager.list(site.account).await.unwrap();
    assert_eq!(keys.len(), 1, "no bad create was stored");
    assert_eq!(
        serde_json::to_value(&keys[0].allowed_cidrs).unwrap(),
        json!(["::1/128"])
    );

    // A rotation's successor keeps the allowlist.
    let rotated: Value = site
        .answer(reqwest::Method::POST, &format!("/{key_id}/rotate"), None)
        .await;
    assert_eq!(rotated["allowed_cidrs"], json!(["::1/128"]));
    let successor = format!(
        "{}:{}",
        rotated["public_key"].as_str().unwrap(),
        rotated["secret_key"].as_str().unwrap()
    );
    assert_eq!(site.statuses(&successor).await, [NO, NO, OK]);

    // `null` allows any address again.
    let successor_id = rotated["key_id"].as_str().unwrap();
    let cleared: Value = site
        .answer(
            reqwest::Method::PATCH,
            &format!("/{successor_id}"),
            Some(json!({"allowed_cidrs": null})),
        )
        .await;
    assert_eq!(cleared["allowed_cidrs"], Value::Null);
    assert_eq!(site.statuses(&successor).await, [OK, OK, OK]);
}

async fn a_replica_refuses_a_key_once_its_allowlist_excludes_the_client(db: &TestDb) {
    let account = AccountId::new(uuid::Uuid::new_v4());
    let writer = Site::start(ApiKeyValidator::new(db.repo.clone(), pepper()), account).await;
    let replica = Site::start(
        common::feed::replica(db.connect_again().await, Duration::from_millis(100)).await,
        account,
    )
    .await;
    let created = writer
        .manager
        .create(account, NewApiKey::new("shared"))
        .await
        .unwrap();
    let credential = created.credential();
    // Cached on the replica as usable from anywhere.
    assert_eq!(replica.statuses(&credential).await, [OK, OK, OK]);
    writer
        .manager
        .update(
            account,
            created.key.key_id,
            tower_api_keys::store::KeyChanges {
                allowed_cidrs: Some(Some(AllowedNetworks::new(["127.0.0.2"]).unwrap())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while replica.whoami(&replica.from_3, &credential).await != NO {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the replica still lets 127.0.0.3 in"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(replica.statuses(&credential).await, [OK, NO, NO]);
}

async fn a_refused_address_spends_no_budget_and_counts_no_usage(db: &TestDb) {
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let account = AccountId::new(uuid::Uuid::new_v4());
    let site = Site::start(validator.clone(), account).await;
    let created = site
        .manager
        .create(
            account,
            NewApiKey::new("limited")
                .with_rate_limit(RateLimit::new(2, 3600).unwrap())
                .with_allowed_cidrs(AllowedNetworks::new(["127.0.0.2/32"]).unwrap()),
        )
        .await
        .unwrap();
    let credential = created.credential();
    for _ in 0..5 {
        assert_eq!(site.whoami(&site.from_3, &credential).await, NO);
        assert_eq!(site.whoami(&site.from_v6, &credential).await, NO);
    }
    assert_eq!(site.whoami(&site.from_2, &credential).await, OK);
    assert_eq!(site.whoami(&site.from_2, &credential).await, OK);
    assert_eq!(
        site.whoami(&site.from_2, &credential).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    validator.flush().await.unwrap();
    let usage = site
        .manager
        .usage(account, created.key.key_id, 1)
        .await
        .unwrap();
    assert_eq!(
        usage.days[0].requests, 2,
        "only the admitted requests count"
    );
}

backend_tests!(
    an_allowlist_is_stored_normalised_and_enforced,
    a_replica_refuses_a_key_once_its_allowlist_excludes_the_client,
    a_refused_address_spends_no_budget_and_counts_no_usage,
);

/// Without connect info (or any peer address) the address is unknown: a key
/// with an allowlist is refused, one without is not.
#[tokio::test]
async fn an_unknown_address_is_refused_for_an_allowlisted_key_only() {
    let db = common::sqlite().await;
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    let (h, account, open) = common::Harness::with_key(validator, "open").await;
    let fenced = h
        .manager
        .create(
            account,
            NewApiKey::new("fenced")
                .with_allowed_cidrs(AllowedNetworks::new(["0.0.0.0/0", "::/0"]).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(h.whoami(&open.credential()).await.status(), OK);
    let response = h.whoami(&fenced.credential()).await;
    assert_eq!(response.status(), NO);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["detail"], DENIED);
    db.cleanup().await;
}

/// The example server as a process: it serves with connect info, and reads
/// `X-Forwarded-For` only from `TRUSTED_PROXIES`, here a real nginx.
#[cfg(all(unix, feature = "axum", feature = "sqlite"))]
mod server {
    use std::{
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::Duration,
    };

    use reqwest::StatusCode;
    use serde_json::{Value, json};
    use uuid::Uuid;

    use super::{DENIED, client_from};
    use crate::common::server::{ADMIN_TOKEN, Server, client, create_key_with, free_port};

    /// `GET /v1/whoami` from `client` at `base`, with extra headers.
    async fn whoami(
        client: &reqwest::Client,
        base: &str,
        credential: &str,
        forwarded: &[&str],
    ) -> StatusCode {
        let mut request = client
            .get(format!("{base}/v1/whoami"))
            .header("x-api-key", credential);
        for line in forwarded {
            request = request.header("x-forwarded-for", *line);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["title"], "Forbidden");
            assert_eq!(body["detail"], DENIED);
        }
        status
    }

    async fn allowlisted(server: &Server, cidrs: Value) -> String {
        let key = create_key_with(
            &client(),
            server,
            ADMIN_TOKEN,
            Uuid::new_v4(),
            json!({"title": "fenced", "allowed_cidrs": cidrs}),
        )
        .await;
        key.credential
    }

    /// The `forbidden` outcome count on `/metrics`.
    async fn forbidden_count(server: &Server) -> u64 {
        let text = client()
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| line.contains("outcome=\"forbidden\"") && !line.starts_with('#'))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|count| count as u64)
            .sum()
    }

    #[tokio::test]
    async fn source_addresses_decide_and_a_direct_forwarded_header_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let bind = format!("[::]:{port}");
        let mut server = Server::start_with(
            dir.path(),
            logs.path(),
            "allowlist",
            &[("ADMIN_TOKEN", ADMIN_TOKEN), ("BIND", &bind)],
        );
        server.wait_ready(&client()).await;
        let credential = allowlisted(&server, json!(["127.0.0.2"])).await;
        let v4 = format!("http://127.0.0.1:{port}");
        let v6 = format!("http://[::1]:{port}");
        let (from_2, from_3, from_v6) = (
            client_from("127.0.0.2"),
            client_from("127.0.0.3"),
            client_from("::1"),
        );
        let before = forbidden_count(&server).await;
        assert_eq!(whoami(&from_2, &v4, &credential, &[]).await, StatusCode::OK);
        assert_eq!(
            whoami(&from_3, &v4, &credential, &[]).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            whoami(&from_v6, &v6, &credential, &[]).await,
            StatusCode::FORBIDDEN
        );
        // No trusted proxies: the header is never read, whatever it claims.
        assert_eq!(
            whoami(&from_3, &v4, &credential, &["127.0.0.2"]).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            whoami(&from_2, &v4, &credential, &["203.0.113.9"]).await,
            StatusCode::OK
        );
        assert_eq!(forbidden_count(&server).await, before + 3);
        // `--allow-cidr`-style bad input over HTTP: 422 naming the field.
        let response = client()
            .post(server.url("/v1/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-account-id", Uuid::new_v4().to_string())
            .json(&json!({"title": "bad", "allowed_cidrs": ["10.0.0.0/8", "nope"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], "allowed_cidrs", "{body}");
        assert!(
            !body.to_string().contains("nope"),
            "the entry is not echoed"
        );
        assert!(server.stop("TERM").await.success());
    }

    #[tokio::test]
    async fn a_bad_trusted_proxies_setting_stops_the_server_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let mut server = Server::start_with(
            dir.path(),
            logs.path(),
            "bad-proxies",
            &[
                ("ADMIN_TOKEN", ADMIN_TOKEN),
                ("TRUSTED_PROXIES", "10.0.0.0/8, proxy.internal"),
            ],
        );
        let status = server.exit().await;
        assert!(!status.success());
        assert!(
            server.stderr().contains("TRUSTED_PROXIES: entry 1 is not"),
            "{}",
            server.stderr()
        );
    }

    /// nginx in front of `127.0.0.1:<upstream>`, appending the client to
    /// `X-Forwarded-For` as a reverse proxy does. Stopped on drop.
    struct Nginx {
        child: Child,
        dir: tempfile::TempDir,
        port: u16,
    }

    impl Nginx {
        fn binary() -> PathBuf {
            ["/usr/sbin/nginx", "/usr/bin/nginx"]
                .into_iter()
                .map(PathBuf::from)
                .find(|path| path.exists())
                .unwrap_or_else(|| {
                    panic!(
                        "nginx is not installed (no /usr/sbin/nginx): this test needs it; \
                         install the `nginx-light` package or run without `--include-ignored`"
                    )
                })
        }

        fn start(upstream: u16) -> Self {
            let binary = Self::binary();
            let dir = tempfile::Builder::new()
                .prefix("tak-nginx-")
                .tempdir()
                .unwrap();
            let port = free_port();
            let path = |name: &str| dir.path().join(name).display().to_string();
            std::fs::write(
                dir.path().join("nginx.conf"),
                format!(
                    "daemon off;\nmaster_process off;\npid {pid};\nerror_log {log} info;\n\
                     events {{ worker_connections 64; }}\n\
                     http {{\n  access_log off;\n\
                     client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;\n\
                     fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;\n\
                     server {{\n    listen 127.0.0.1:{port};\n    location / {{\n\
                     proxy_pass http://127.0.0.1:{upstream};\n\
                     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }}\n  }}\n}}\n",
                    pid = path("nginx.pid"),
                    log = path("error.log"),
                    tmp = dir.path().display(),
                ),
            )
            .unwrap();
            let child = Command::new(binary)
                .args([
                    "-p",
                    &path(""),
                    "-c",
                    &path("nginx.conf"),
                    "-e",
                    &path("error.log"),
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
                .spawn()
                .expect("nginx starts");
            let nginx = Self { child, dir, port };
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return nginx;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("nginx did not listen on {port}: {}", nginx.log());
        }

        fn base(&self) -> String {
            format!("http://127.0.0.1:{}", self.port)
        }

        fn log(&self) -> String {
            let read =
                |name| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            format!("{}{}", read("error.log"), read("stderr.log"))
        }
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn port_of(server: &Server) -> u16 {
        server.url("").rsplit(':').next().unwrap().parse().unwrap()
    }

    fn start(dir: &Path, logs: &Path, run: &str, trusted: Option<&str>) -> Server {
        let mut env = vec![("ADMIN_TOKEN", ADMIN_TOKEN)];
        if let Some(trusted) = trusted {
            env.push(("TRUSTED_PROXIES", trusted));
        }
        Server::start_with(dir, logs, run, &env)
    }

    #[tokio::test]
    #[ignore = "needs nginx"]
    async fn behind_a_trusted_nginx_the_forwarded_client_decides() {
        let dir = tempfile::tempdir().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let mut server = start(dir.path(), logs.path(), "proxied", Some("127.0.0.1"));
        server.wait_ready(&client()).await;
        let nginx = Nginx::start(port_of(&server));
        let credential = allowlisted(&server, json!(["127.0.0.2/32"])).await;
        let (from_2, from_3) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
        let proxy = nginx.base();
        let direct = server.url("");

        // Through nginx, the client nginx saw decides.
        assert_eq!(
            whoami(&from_2, &proxy, &credential, &[]).await,
            StatusCode::OK,
            "{}",
            nginx.log()
        );
        assert_eq!(
            whoami(&from_3, &proxy, &credential, &[]).await,
            StatusCode::FORBIDDEN
        );
        // A spoofed entry is left of the one nginx appends: passed over.
        assert_eq!(
            whoami(&from_3, &proxy, &credential, &["127.0.0.2"]).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            whoami(&from_3, &proxy, &credential, &["127.0.0.2", "127.0.0.2"]).await,
            StatusCode::FORBIDDEN
        );
        // Hostile headers through nginx never widen access.
        for hostile in ["fe80::1%eth0", "unknown", "127.0.0.2 127.0.0.2", ",,,"] {
            assert_eq!(
                whoami(&from_3, &proxy, &credential, &[hostile]).await,
                StatusCode::FORBIDDEN,
                "{hostile}"
            );
        }
        // Straight to the server, a client that is not a proxy cannot claim
        // an address.
        assert_eq!(
            whoami(&from_3, &direct, &credential, &["127.0.0.2"]).await,
            StatusCode::FORBIDDEN
        );
        // From the trusted address itself: thousands of entries, or only
        // proxies, make the address unknown or the proxy's; never 127.0.0.2.
        let from_1 = client_from("127.0.0.1");
        let many_proxies = vec!["127.0.0.1"; 5_000].join(",");
        let spoofed = format!("{},127.0.0.3", vec!["127.0.0.2"; 5_000].join(","));
        for forwarded in [many_proxies.as_str(), spoofed.as_str(), "127.0.0.1"] {
            assert_eq!(
                whoami(&from_1, &direct, &credential, &[forwarded]).await,
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(
            whoami(&from_1, &direct, &credential, &["127.0.0.9, 127.0.0.2"]).await,
            StatusCode::OK,
            "the rightmost untrusted entry is the client"
        );
        assert_eq!(
            client()
                .get(server.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );

        // The audit log records the same client: a key created through nginx
        // from 127.0.0.2 has that source, whatever the request claimed.
        let account = uuid::Uuid::new_v4();
        let response = from_2
            .post(format!("{proxy}/v1/api-keys"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-account-id", account.to_string())
            .header("x-forwarded-for", "198.51.100.7")
            .json(&json!({"title": "through the proxy"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let audit: Value = client()
            .get(server.url("/v1/api-keys/audit"))
            .bearer_auth(ADMIN_TOKEN)
            .header("x-account-id", account.to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(audit["entries"][0]["action"], "created", "{audit}");
        assert_eq!(audit["entries"][0]["source"], "127.0.0.2", "{audit}");

        // The same proxy in front of a server that does not trust it: every
        // request comes from nginx's address.
        let mut untrusting = start(dir.path(), logs.path(), "untrusting", None);
        untrusting.wait_ready(&client()).await;
        let other = Nginx::start(port_of(&untrusting));
        let credential = allowlisted(&untrusting, json!(["127.0.0.2/32"])).await;
        assert_eq!(
            whoami(&from_2, &other.base(), &credential, &[]).await,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            whoami(&from_2, &untrusting.url(""), &credential, &[]).await,
            StatusCode::OK
        );
        assert!(untrusting.stop("TERM").await.success());
        assert!(server.stop("TERM").await.success());
    }
}
