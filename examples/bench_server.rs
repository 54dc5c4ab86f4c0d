//! A server for measuring what [`ApiKeyAuthLayer`] costs over HTTP: one trivial
//! handler served twice by the same router, at `/plain` without authentication
//! and at `/keyed` behind the layer. `scripts/bench-http.sh` drives it with wrk
//! and prints the ratio of the two throughputs.
//!
//! ```text
//! cargo run --release --example bench_server
//! ```
//!
//! Keys live in memory ([`MemoryRepository`]) under a pepper generated at
//! start. One key is created at start; its credential is printed to stdout as
//! `CREDENTIAL=pk_…:sk_…` and, when `CREDENTIAL_FILE` names a path, written
//! there (mode 0600 on Unix). `BIND` sets the listening address (default
//! `127.0.0.1:3100`). The server runs until it is killed.

use std::{net::SocketAddr, process::ExitCode};

use axum::{Router, routing::get};
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, KeyManager, NewApiKey, Pepper,
    store::MemoryRepository,
};
use uuid::Uuid;

/// The handler both routes serve.
async fn ok() -> &'static str {
    "ok"
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), String> {
    let bind: SocketAddr = std::env::var("BIND")
        .unwrap_or_else(|_| "127.0.0.1:3100".to_owned())
        .parse()
        .map_err(|err| format!("BIND: {err}"))?;
    let pepper = Pepper::generate().map_err(|err| format!("pepper: {err}"))?;
    let validator = ApiKeyValidator::new(MemoryRepository::new(), pepper);
    let created = KeyManager::new(validator.clone())
        .create(AccountId::new(Uuid::new_v4()), NewApiKey::new("bench"))
        .await
        .map_err(|err| format!("creating the key: {err}"))?;
    let credential = created.credential();
    if let Some(path) = std::env::var_os("CREDENTIAL_FILE") {
        write_private(path.as_ref(), &credential)
            .map_err(|err| format!("CREDENTIAL_FILE: {err}"))?;
    }

    let app = Router::new().route("/plain", get(ok)).merge(
        Router::new()
            .route("/keyed", get(ok))
            .layer(ApiKeyAuthLayer::new(validator)),
    );
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    // The benchmark's own throwaway key, in memory only: printing it is the point.
    println!("CREDENTIAL={credential}");
    axum::serve(listener, app)
        .await
        .map_err(|err| format!("server failed: {err}"))
}

/// Writes `contents` to `path`, readable by its owner only on Unix.
fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}
