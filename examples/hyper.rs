//! `ApiKeyAuthLayer` on a bare hyper service, with `tower::ServiceBuilder`.
//!
//! ```text
//! API_KEY_PEPPER=… cargo run --example hyper
//! curl -H 'x-api-key: pk_…:sk_…' http://127.0.0.1:3001/
//! ```
//!
//! `DATABASE_URL` (default `sqlite://api-keys.db`), `API_KEY_PEPPER` (or the
//! `api-keys.pepper` file) and `BIND` (default `127.0.0.1:3001`) as in the other
//! examples. Ctrl-C stops accepting, waits for in-flight requests and flushes
//! pending `last_used_at` writes.

use std::{convert::Infallible, error::Error, path::Path};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown, service::TowerToHyperService};
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, PeerAddr, PepperRing,
    store::{SeaOrmRepository, redact_secrets},
};

/// The application: only ever called with a valid key.
async fn whoami(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Put there by `ApiKeyAuthLayer`, with `ApiKeyId` and `AuthenticatedKey`.
    let account = request.extensions().get::<AccountId>().copied();
    let text = account.map_or_else(|| "no account".to_owned(), |account| account.to_string());
    Ok(Response::new(Full::new(Bytes::from(text))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://api-keys.db".to_owned());
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3001".to_owned());
    let (peppers, _source) = PepperRing::from_env_or_file(
        "API_KEY_PEPPER",
        "API_KEY_PREVIOUS_PEPPERS",
        Path::new("api-keys.pepper"),
    )?;
    // A driver's error may quote the URL, password included.
    let repository = SeaOrmRepository::connect(&database_url)
        .await
        .map_err(|err| {
            redact_secrets(&format!("cannot open the key store: {err}"), &database_url)
        })?;
    let validator = ApiKeyValidator::new(repository, peppers);

    let service = tower::ServiceBuilder::new()
        .layer(ApiKeyAuthLayer::new(validator.clone()))
        .service_fn(whoami);

    let listener = tokio::net::TcpListener::bind(&bind).await?;
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = accepted?;
                // The peer address, for keys with an address allowlist.
                let service = tower::ServiceBuilder::new()
                    .map_request(move |mut request: Request<Incoming>| {
                        request.extensions_mut().insert(PeerAddr::from(remote));
                        request
                    })
                    .service(service.clone());
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
                let connection = graceful.watch(connection);
                tokio::spawn(connection);
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    validator.shutdown().await;
    Ok(())
}
