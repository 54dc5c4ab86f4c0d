//! The example server (`examples/server.rs`) as a real process: built once per
//! test binary with the test's features, started on a free port with its own
//! environment, spoken to over real HTTP, killed on drop.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use uuid::Uuid;

/// The `ADMIN_TOKEN` the tests give the server.
pub const ADMIN_TOKEN: &str = "test-admin-token-4f9c2e71";
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds the example once per test binary, with this test's features, and
/// returns the executable cargo reports (wherever the target dir is).
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // Every feature this test was built with (`default` included), so that
        // the example links the library `cargo test` built with it, not a
        // second build of it.
        let features: Vec<&str> = [
            ("default", cfg!(feature = "default")),
            ("test-util", cfg!(feature = "test-util")),
            ("axum", cfg!(feature = "axum")),
            ("sqlite", cfg!(feature = "sqlite")),
            ("postgres", cfg!(feature = "postgres")),
            ("mysql", cfg!(feature = "mysql")),
            ("rustls", cfg!(feature = "rustls")),
            ("tonic", cfg!(feature = "tonic")),
            ("redis", cfg!(feature = "redis")),
            ("openapi", cfg!(feature = "openapi")),
            ("secret-scanning", cfg!(feature = "secret-scanning")),
            ("webhooks", cfg!(feature = "webhooks")),
            ("cli", cfg!(feature = "cli")),
            ("ui", cfg!(feature = "ui")),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect();
        let mut cargo = Command::new(env!("CARGO"));
        // Without the variables cargo sets for this test run: a build script
        // that reads one (ring's reads CARGO_MANIFEST_DIR) would run again, and
        // everything above it be rebuilt here, and again by the next `cargo test`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix))
                || name == "CARGO_TARGET_TMPDIR"
            {
                cargo.env_remove(name.as_ref());
            }
        }
        cargo
            .args(["build", "--example", "server", "--message-format=json"])
            .args(["--no-default-features", "--features", &features.join(",")])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
        if !cfg!(debug_assertions) {
            cargo.arg("--release");
        }
        let output = cargo.output().expect("cargo runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "building the example failed:\n{}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|message| {
                message["reason"] == "compiler-artifact"
                    && message["target"]["name"] == "server"
                    && message["target"]["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|kind| kind == "example"))
            })
            .and_then(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reports the example's executable")
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// One run of the example server. Killed on drop if still running, so that a
/// failing test leaves no process behind.
pub struct Server {
    child: Child,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Server {
    /// Starts the server in `dir` with the default database and pepper file;
    /// its output goes to `logs/<run>.stdout` and `logs/<run>.stderr`.
    pub fn start(dir: &Path, logs: &Path, run: &str, admin_token: Option<&str>) -> Self {
        let env: Vec<_> = admin_token
            .map(|token| ("ADMIN_TOKEN", token))
            .into_iter()
            .collect();
        Self::start_with(dir, logs, run, &env)
    }

    /// As [`Server::start`], with these variables set on top (a `BIND` among
    /// them replaces the free port, so that a restart can keep the address).
    pub fn start_with(dir: &Path, logs: &Path, run: &str, env: &[(&str, &str)]) -> Self {
        let bind = env.iter().find(|(name, _)| *name == "BIND").map_or_else(
            || format!("127.0.0.1:{}", free_port()),
            |(_, bind)| (*bind).to_owned(),
        );
        let stdout = logs.join(format!("{run}.stdout"));
        let stderr = logs.join(format!("{run}.stderr"));
        let mut command = Command::new(server_binary());
        command
            .current_dir(dir)
            .env("BIND", &bind)
            .env_remove("DATABASE_URL")
            .env_remove("REDIS_URL")
            .env_remove("API_KEY_PEPPER")
            .env_remove("API_KEY_PREFIX")
            .env_remove("ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap());
        command.envs(env.iter().copied());
        let child = command.spawn().expect("the example server starts");
        Self {
            child,
            base: format!("http://{bind}"),
            stdout,
            stderr,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }

    pub fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until `/healthz` answers `ok`.
    pub async fn wait_ready(&mut self, client: &reqwest::Client) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the server exited early ({status}):\n{}", self.output());
            }
            if let Ok(response) = client.get(self.url("/healthz")).send().await
                && response.status() == 200
            {
                assert_eq!(response.text().await.unwrap(), "ok");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not answer /healthz within {READY_TIMEOUT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a process that is expected to exit on its own.
    pub async fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {READY_TIMEOUT:?}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the process to exit.
    pub async fn stop(&mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill -{signal} failed");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {EXIT_TIMEOUT:?} of SIG{signal}:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A management request as the stand-in host login expects it.
pub fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    account: Uuid,
) -> reqwest::RequestBuilder {
    client
        .request(method, url)
        .bearer_auth(token)
        .header("x-account-id", account.to_string())
}

/// Checks an RFC 9457 problem response and returns its document.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{content_type}"
    );
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["type"], "about:blank", "{document}");
    assert_eq!(document["status"], status, "{document}");
    assert!(document["title"].is_string(), "{document}");
    assert!(document["detail"].is_string(), "{document}");
    document
}

pub struct Created {
    pub key_id: String,
    pub secret_key: String,
    pub credential: String,
    /// The answer's `token`: `P_…` with `API_KEY_PREFIX`, else the credential.
    pub token: String,
}

pub async fn create_key(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    account: Uuid,
    title: &str,
) -> Created {
    create_key_with(client, server, token, account, json!({"title": title})).await
}

pub async fn create_key_with(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    account: Uuid,
    body: Value,
) -> Created {
    let title = body["title"].as_str().unwrap().to_owned();
    let response = admin(
        client,
        reqwest::Method::POST,
        server.url("/v1/api-keys"),
        token,
        account,
    )
    .json(&body)
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    let key_id = body["key_id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/api-keys/{key_id}"));
    assert_eq!(body["title"], title);
    assert_eq!(body["status"], "active");
    let public_key = body["public_key"].as_str().unwrap();
    let secret_key = body["secret_key"].as_str().unwrap().to_owned();
    assert!(public_key.starts_with("pk_") && secret_key.starts_with("sk_"));
    Created {
        key_id,
        credential: format!("{public_key}:{secret_key}"),
        token: body["token"].as_str().unwrap().to_owned(),
        secret_key,
    }
}

pub async fn whoami(
    client: &reqwest::Client,
    server: &Server,
    credential: &str,
) -> reqwest::Response {
    client
        .get(server.url("/v1/whoami"))
        .header("x-api-key", credential)
        .send()
        .await
        .unwrap()
}

pub async fn assert_whoami(
    client: &reqwest::Client,
    server: &Server,
    key: &Created,
    account: Uuid,
) {
    let response = whoami(client, server, &key.credential).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"account_id": account.to_string(), "key_id": key.key_id, "scopes": null})
    );
}
