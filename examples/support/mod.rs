//! Configuration and signal handling shared by the tonic and warp examples (the
//! same environment as the axum server example, so keys created there work here).

use std::{error::Error, net::SocketAddr, path::Path};

use tower_api_keys::{
    ApiKeyValidator, PepperRing,
    store::{SeaOrmRepository, redact_secrets},
};
use tracing_subscriber::EnvFilter;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
}

/// `BIND`, or `default`.
pub fn bind_address(default: &str) -> Result<SocketAddr, Box<dyn Error>> {
    Ok(std::env::var("BIND")
        .unwrap_or_else(|_| default.to_owned())
        .parse()?)
}

/// A validator over `DATABASE_URL` (default: the SQLite file `api-keys.db`,
/// migrated at start), with the pepper from `API_KEY_PEPPER` or, else, the
/// `api-keys.pepper` file (generated on first start).
pub async fn validator() -> Result<ApiKeyValidator, Box<dyn Error>> {
    let path = Path::new("api-keys.pepper");
    let (pepper, source) =
        PepperRing::from_env_or_file("API_KEY_PEPPER", "API_KEY_PREVIOUS_PEPPERS", path)?;
    tracing::info!(?source, path = %path.display(), "pepper loaded");
    let database_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite://api-keys.db".to_owned());
    // The URL may carry a database password: log only its scheme.
    let backend = database_url.split(':').next().unwrap_or_default();
    let repository = SeaOrmRepository::connect(&database_url)
        .await
        .map_err(|err| {
            redact_secrets(&format!("cannot open the key store: {err}"), &database_url)
        })?;
    tracing::info!(backend, "key store connected and migrated");
    Ok(ApiKeyValidator::new(repository, pepper))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
