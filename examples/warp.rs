//! warp filters behind `ApiKeyAuthLayer`, served by hyper.
//!
//! ```text
//! cargo run --example warp
//! curl -H 'x-api-key: pk_…:sk_…' http://127.0.0.1:3030/v1/whoami
//! ```
//!
//! The filters become a tower service with `warp::service`, the layer wraps that
//! service, and hyper serves it (warp's own server only takes filters). A filter
//! reads the account with `warp::ext::get::<AccountId>()`, since the layer puts it
//! into the request's extensions.
//!
//! - `GET /v1/whoami` answers `200 {"account_id": "…", "key_id": "…"}`, as the
//!   axum server example does.
//! - Every route is behind the layer. Refusals, and warp's own rejections
//!   (unknown path, wrong method), are RFC 9457 problem documents.
//!
//! Configuration, as in the axum server example, so that keys created there work
//! here on the same database:
//!
//! - `DATABASE_URL` (default `sqlite://api-keys.db`; migrations run at start),
//! - `API_KEY_PEPPER`, or else the pepper kept in `api-keys.pepper` (generated on
//!   first start),
//! - `BIND` (default `127.0.0.1:3030`).
//!
//! SIGINT or SIGTERM stops accepting, lets in-flight requests finish, flushes
//! the pending `last_used_at` writes and exits with status 0.

#[path = "support/mod.rs"]
mod support;

use std::{convert::Infallible, error::Error, future::Future};

use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use serde_json::json;
use tokio::net::TcpListener;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyId, ApiKeyValidator, PeerAddr, headers::PROBLEM_JSON,
};
use warp::{
    Filter, Rejection, Reply, ext::MissingExtension, http::StatusCode, reject::MethodNotAllowed,
};

/// The application's filters: `GET /v1/whoami`, and problem documents for
/// warp's rejections.
pub fn routes()
-> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::path!("v1" / "whoami")
        .and(warp::get())
        // Put there by `ApiKeyAuthLayer`.
        .and(warp::ext::get::<AccountId>())
        .and(warp::ext::get::<ApiKeyId>())
        .map(|account: AccountId, key: ApiKeyId| {
            warp::reply::json(&json!({"account_id": account, "key_id": key}))
        })
        .recover(problem)
}

/// Turns warp's rejections into RFC 9457 problem documents.
async fn problem(rejection: Rejection) -> Result<impl Reply, Infallible> {
    let (status, detail) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "Not found")
    } else if rejection.find::<MethodNotAllowed>().is_some() {
        (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
    } else if rejection.find::<MissingExtension>().is_some() {
        // Only when the layer is missing from the stack.
        tracing::error!("no AccountId on the request: is ApiKeyAuthLayer installed?");
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    };
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or_default(),
        "status": status.as_u16(),
        "detail": detail,
    });
    Ok(warp::reply::with_status(
        warp::reply::with_header(body.to_string(), "content-type", PROBLEM_JSON),
        status,
    ))
}

/// Serves the routes behind the API-key layer on `listener` (HTTP/1.1 and h2c)
/// until `shutdown` completes, then waits for in-flight requests.
pub async fn serve(
    validator: ApiKeyValidator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let service = tower::ServiceBuilder::new()
        .layer(ApiKeyAuthLayer::new(validator))
        .service(warp::service(routes()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accept failed");
                        continue;
                    }
                };
                // The peer address, for keys with an address allowlist.
                let service = tower::ServiceBuilder::new()
                    .map_request(move |mut request: http::Request<_>| {
                        request.extensions_mut().insert(PeerAddr::from(remote));
                        request
                    })
                    .service(service.clone());
                let connection = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    TowerToHyperService::new(service),
                );
                let connection = graceful.watch(connection.into_owned());
                tokio::spawn(async move {
                    if let Err(err) = connection.await {
                        tracing::debug!(error = %err, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    support::init_tracing();
    let bind = support::bind_address("127.0.0.1:3030")?;
    let validator = support::validator().await?;

    let listener = TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, "warp server listening");
    serve(validator.clone(), listener, support::shutdown_signal()).await;

    validator.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
