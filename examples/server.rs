//! A complete API-key service: key management over HTTP and a route protected
//! by [`ApiKeyAuthLayer`], on a SeaORM key store.
//!
//! ```text
//! cargo run --example server
//! ```
//!
//! With no configuration it keeps its keys in a SQLite file `api-keys.db` and its
//! pepper in `api-keys.pepper`, both in the working directory, listens on
//! `127.0.0.1:3000`, and prints a generated admin token to stdout.
//!
//! # Environment
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `DATABASE_URL` | key store; `sqlite://…`, or `postgres://…` / `mysql://…` with the crate features `postgres` / `mysql`. Migrations run at start. | `sqlite://api-keys.db` (created if missing) |
//! | `API_KEY_PEPPER` | the current HMAC key for stored secrets (its UTF-8 bytes, at least 16) | generated once (32 random characters), kept in `api-keys.pepper` (mode 0600) and reused |
//! | `API_KEY_PREVIOUS_PEPPERS` | previous peppers during a rotation, comma-separated, newest first; the last one made the rows without a `pepper_id` | none |
//! | `API_KEY_PREFIX` | the key prefix `P` (`[a-z][a-z0-9]{1,15}`, e.g. `acme`): keys are also accepted as the token `P_…`, and create and rotate answer with it in `token`; any other value stops the server at start | none: `token` is `pk_…:sk_…` |
//! | `ADMIN_TOKEN` | stands in for the host's own login on the management routes (at least 16 bytes, no whitespace) | generated at each start and printed once to stdout as `ADMIN_TOKEN=…` |
//! | `BIND` | listening address | `127.0.0.1:3000` |
//! | `TRUSTED_PROXIES` | the proxies or load balancers in front of the server, comma-separated CIDRs or addresses (e.g. `10.0.0.0/8,127.0.0.1`): from them, the client address is the rightmost `X-Forwarded-For` entry that is not one of them; anything else stops the server at start | none: `X-Forwarded-For` is never read, the client is the connection's peer |
//! | `DATABASE_POOL_MODE` | `transaction` when `DATABASE_URL` is a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supavisor's port 6543): nothing session-level goes through it | `session` (a direct connection or a session-mode pooler) |
//! | `FEED_DATABASE_URL` | PostgreSQL: a direct or session-mode URL of the primary for the change feed's `LISTEN` | `DATABASE_URL` in session mode; none in transaction mode (the feed polls the change log through the pooler) |
//! | `READ_DATABASE_URL` | PostgreSQL: a read replica (streaming standby) for cache-miss lookups | none |
//! | `MAX_KEYS_PER_ACCOUNT` | the most keys one account may have (keys not deleted count, revoked and expired ones too); one more is `409` | 1000 |
//! | `REDIS_URL` | keeps per-key rate limits in Redis, shared by every replica (feature `redis`, on by default): one server, any node of a Redis Cluster (detected at start), or a comma-separated list of cluster nodes (`redis://a:6379,redis://b:6379`); a Redis that cannot be used stops the server at start | rate limits kept in this process |
//! | `GITHUB_SCANNING_KEYS_FILE` | a JSON file of GitHub's secret-scanning public keys (as `https://api.github.com/meta/public_keys/secret_scanning` answers): mounts `POST /v1/secret-scanning/github`; a file that cannot be read or used stops the server at start | the route is not mounted |
//! | `WEBHOOK_URL`, `WEBHOOK_SECRET` | lifecycle events (`key.created`, …) go to this URL as Standard Webhooks signed with the `whsec_…` secret; a bad value stops the server at start | no webhooks (events stay in the outbox) |
//! | `EXPIRY_NOTICE_DAYS` | `key.expiring` is sent this many days (1–365) before a key expires | 7 |
//! | `RUST_LOG` | log filter (logs go to stderr); `tower_api_keys::auth=debug` adds one span per authenticated request | `info` |
//! | `LOG_FORMAT` | `json` for one JSON object per log line | text |
//!
//! # Routes
//!
//! - `GET /healthz`: `ok`, no authentication.
//! - `GET /v1/whoami`: behind [`ApiKeyAuthLayer`]; send `X-API-Key: pk_…:sk_…`
//!   (or `Authorization: Bearer pk_…:sk_…`); answers
//!   `{"account_id": "…", "key_id": "…", "scopes": […] or null}`.
//! - `GET /v1/reports` needs scope `reports:read`, `POST /v1/reports` scope
//!   `reports:write` ([`RequireScopesLayer`]); each answers
//!   `{"account_id": "…", "key_id": "…"}`, a key without the scope `403`.
//! - `/v1/api-keys`: the key-management routes of
//!   [`ManagementRouter`](tower_api_keys::router::ManagementRouter) (create, list,
//!   show, update, rotate, revoke, delete). A real host puts its own
//!   authentication in front; here each request carries
//!   `Authorization: Bearer <ADMIN_TOKEN>` and `X-Account-Id: <uuid>`, the
//!   account whose keys it manages.
//! - `GET /metrics`: the crate's metrics in the Prometheus text format, no
//!   authentication.
//! - `GET /openapi.json`: the OpenAPI 3.1 document of the key-management routes
//!   (feature `openapi`, on by default), no authentication.
//! - `POST /v1/api-keys/revocations`: revocation by the key holder
//!   ([`RevocationRouter`](tower_api_keys::router::RevocationRouter)), body
//!   `{"credential": "pk_…:sk_…"}`, no admin token.
//! - `GET /keys`: the self-service key page
//!   ([`KeysPage`](tower_api_keys::ui::KeysPage), feature `ui`, on by default
//!   here); it asks for the admin token and an account id and keeps them in
//!   the page's memory only.
//! - `POST /v1/secret-scanning/github`: GitHub's secret-scanning partner
//!   endpoint ([`SecretScanningRouter`](tower_api_keys::router::SecretScanningRouter)),
//!   when `GITHUB_SCANNING_KEYS_FILE` is set; GitHub's signature is the
//!   authentication, no admin token.
//!
//! ```text
//! ADMIN_TOKEN=change-me-to-a-long-secret cargo run --example server
//!
//! # in another shell: create a key (the secret is shown this once), then use it
//! ACCOUNT=6f1c0a52-3b8e-4a51-9a55-2f4a1c2b9d10
//! KEY=$(curl -s -X POST localhost:3000/v1/api-keys \
//!   -H 'Authorization: Bearer change-me-to-a-long-secret' -H "X-Account-Id: $ACCOUNT" \
//!   -H 'Content-Type: application/json' -d '{"title": "my laptop"}' \
//!   | jq -r '.public_key + ":" + .secret_key')
//! curl -s localhost:3000/v1/whoami -H "X-API-Key: $KEY"
//! # {"account_id":"6f1c0a52-…","key_id":"…"}
//! ```
//!
//! Every refusal is an RFC 9457 problem document (`application/problem+json`).
//! On SIGINT or SIGTERM the server stops accepting connections, finishes the
//! requests in flight (closing any still open after 30 s), writes pending
//! `last_used_at` values and exits with status 0. It never logs a secret key,
//! a credential, a hash or the pepper.

use std::{
    future::IntoFuture, io::IsTerminal, net::SocketAddr, process::ExitCode, sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyId, ApiKeyValidator, AuthenticatedKey, KeyManager,
    RateLimiter, RequireScopesLayer, Scopes,
    headers::PROBLEM_JSON,
    router::{ManagementRouter, RevocationRouter, ScanningKeys, SecretScanningRouter},
    store::{redact_secrets, redact_url},
};
use tracing_subscriber::EnvFilter;

#[path = "support/events.rs"]
mod events;
#[path = "support/settings.rs"]
mod settings;

use settings::{
    admin_token, env_or, key_prefix, max_keys_per_account, peppers, repository, scanning_keys,
    trusted_proxies,
};

const DEFAULT_DATABASE_URL: &str = "sqlite://api-keys.db";
const DEFAULT_BIND: &str = "127.0.0.1:3000";
/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    // `LOG_FORMAT=json`: one JSON object per line, spans' fields included.
    if std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json")) {
        logs.json().with_current_span(true).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Per-key rate limits: in Redis (the whole cluster shares each key's budget)
/// when `REDIS_URL` is set, in this process otherwise.
async fn rate_limiter() -> Result<RateLimiter, String> {
    let Some(url) = std::env::var_os("REDIS_URL") else {
        tracing::info!("rate limits are kept in this process (set REDIS_URL to share them)");
        return Ok(RateLimiter::in_process());
    };
    let url = url
        .into_string()
        .map_err(|_| "REDIS_URL is not valid UTF-8".to_owned())?;
    #[cfg(feature = "redis")]
    {
        let limiter = RateLimiter::redis(&url).await.map_err(|err| {
            redact_secrets(&format!("cannot use Redis for rate limits: {err}"), &url)
        })?;
        tracing::info!(redis = %redact_url(&url), "rate limits are kept in Redis");
        Ok(limiter)
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(
            "REDIS_URL is set, but this build lacks the crate feature `redis` \
             (cargo run --example server --features redis)"
                .to_owned(),
        )
    }
}

async fn run() -> Result<(), String> {
    // First, so that a signal during startup still ends in a clean stop.
    let shutdown = shutdown_signal()?;
    let database_url = env_or("DATABASE_URL", DEFAULT_DATABASE_URL)?;
    let bind = env_or("BIND", DEFAULT_BIND)?;
    let bind: SocketAddr = bind
        .parse()
        .map_err(|err| format!("BIND={bind:?} is not a socket address: {err}"))?;
    let (admin_token, admin_token_generated) = admin_token()?;
    let max_keys = max_keys_per_account()?;
    let peppers = peppers()?;
    let scanning_keys = scanning_keys()?;
    let key_prefix = key_prefix()?;
    let trusted_proxies = trusted_proxies()?;

    // Before the validator is built: it registers its metrics with the recorder.
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|err| format!("cannot install the metrics recorder: {err}"))?;

    let repo = repository(&database_url).await?;

    let mut validator =
        ApiKeyValidator::builder(repo.clone(), peppers).with_rate_limiter(rate_limiter().await?);
    if let Some(prefix) = key_prefix {
        tracing::info!(%prefix, "keys are also accepted as tokens {prefix}_…");
        validator = validator.with_key_prefix(prefix);
    }
    if let Some(proxies) = trusted_proxies {
        tracing::info!(?proxies, "X-Forwarded-For is read from these proxies");
        validator = validator.with_trusted_proxies(proxies);
    }
    let validator = validator.build();
    let manager = KeyManager::new(validator.clone()).with_max_keys_per_account(max_keys);
    let events = events::start(&validator, &manager)?;
    let app = app(validator.clone(), manager, admin_token, scanning_keys).route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    );
    #[cfg(feature = "openapi")]
    let app = {
        // The router's OpenAPI document, with the paths as mounted here.
        let document = tower_api_keys::router::openapi::openapi("/v1/api-keys")
            .to_json()
            .map_err(|err| format!("cannot serialize the OpenAPI document: {err}"))?;
        app.route(
            "/openapi.json",
            get(move || {
                std::future::ready(
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        document.clone(),
                    )
                        .into_response(),
                )
            }),
        )
    };

    // The self-service key page over the routes above; its sign-in form
    // stands in for a host's login, as the admin token does.
    #[cfg(feature = "ui")]
    let app = app.nest(
        "/keys",
        tower_api_keys::ui::KeysPage::new("/v1/api-keys")
            .with_sign_in_form(true)
            .build(),
    );

    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|err| format!("cannot listen on {bind}: {err}"))?;
    let local = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening address: {err}"))?;

    if let Some(token) = admin_token_generated {
        // The one secret this program prints, and only because it made it up.
        println!("ADMIN_TOKEN={token}");
        tracing::info!("ADMIN_TOKEN not set: generated one and printed it to stdout");
    }
    tracing::info!("listening on http://{local}");

    let mut drain = shutdown.clone();
    let mut graceful = shutdown;
    // With connect info: the peer address is what key allowlists check.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = graceful.wait_for(|stop| *stop).await;
    })
    .into_future();
    let served = tokio::select! {
        served = server => served.map_err(|err| format!("server failed: {err}")),
        () = async {
            let _ = drain.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; closing them");
            Ok(())
        }
    };

    events.shutdown().await;
    // Writes the pending `last_used_at` values.
    validator.shutdown().await;
    if let Err(err) = repo.connection().clone().close().await {
        tracing::warn!(error = %err, "closing the key store failed");
    }
    tracing::info!("stopped");
    served
}

/// The whole application: health check, the protected route, key management
/// and, with GitHub's keys, the secret-scanning endpoint.
fn app(
    validator: ApiKeyValidator,
    manager: KeyManager,
    admin_token: String,
    scanning_keys: Option<ScanningKeys>,
) -> Router {
    let revocations = RevocationRouter::new(manager.clone()).build();
    let scanning = scanning_keys.map(|keys| SecretScanningRouter::new(manager.clone(), keys));
    let management = ManagementRouter::new(manager)
        .build()
        .layer(middleware::from_fn_with_state(
            Arc::new(AdminToken::new(&admin_token)),
            admin_auth,
        ));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/v1/whoami",
            get(whoami).route_layer(ApiKeyAuthLayer::new(validator.clone())),
        )
        .route(
            "/v1/reports",
            get(report)
                .layer(RequireScopesLayer::new(["reports:read"]))
                .merge(post(report).layer(RequireScopesLayer::new(["reports:write"])))
                .route_layer(ApiKeyAuthLayer::new(validator)),
        )
        .nest("/v1/api-keys/revocations", revocations)
        .nest("/v1/api-keys", management)
        .merge(scanning.map_or_else(Router::new, |scanning| {
            Router::new().nest("/v1/secret-scanning/github", scanning.build())
        }))
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "Not found") })
        .method_not_allowed_fallback(|| async {
            problem(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
}

/// The body of `GET /v1/whoami`.
#[derive(serde::Serialize)]
struct WhoAmI<'a> {
    account_id: AccountId,
    key_id: ApiKeyId,
    scopes: Option<&'a Scopes>,
}

async fn whoami(key: AuthenticatedKey) -> Response {
    Json(WhoAmI {
        account_id: key.account_id(),
        key_id: key.key_id(),
        scopes: key.scopes(),
    })
    .into_response()
}

/// The body of `GET` and `POST /v1/reports`.
#[derive(serde::Serialize)]
struct Report {
    account_id: AccountId,
    key_id: ApiKeyId,
}

async fn report(key: AuthenticatedKey) -> Json<Report> {
    Json(Report {
        account_id: key.account_id(),
        key_id: key.key_id(),
    })
}

/// The admin token's SHA-256 digest: requests are checked by comparing
/// digests in constant time, so that neither the token's bytes nor its length
/// show in the time an answer takes. No `Debug`.
struct AdminToken([u8; 32]);

impl AdminToken {
    fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `presented` is the token.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

/// Stand-in for the host's own login: `Authorization: Bearer <ADMIN_TOKEN>`
/// authenticates, and `X-Account-Id: <uuid>` names the account whose keys the
/// request manages (inserted as an [`AccountId`] extension for the router).
async fn admin_auth(
    State(expected): State<Arc<AdminToken>>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let authorized = token.is_some_and(|token| expected.matches(token));
    if !authorized {
        let mut response = problem(
            StatusCode::UNAUTHORIZED,
            "Management requests need Authorization: Bearer <ADMIN_TOKEN>",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"api-keys-admin\""),
        );
        return response;
    }
    let Some(account) = request.headers().get("x-account-id") else {
        return problem(
            StatusCode::UNAUTHORIZED,
            "Management requests need an X-Account-Id header",
        );
    };
    let Some(account) = account
        .to_str()
        .ok()
        .and_then(|value| value.trim().parse::<AccountId>().ok())
    else {
        return problem(StatusCode::BAD_REQUEST, "X-Account-Id must be a UUID");
    };
    request.extensions_mut().insert(account);
    // The audit log's actor for every change made with the admin token.
    request
        .extensions_mut()
        .insert(tower_api_keys::audit::Actor::new("admin"));
    next.run(request).await
}

/// An RFC 9457 problem document, fields in the order the crate writes them.
fn problem(status: StatusCode, detail: &str) -> Response {
    #[derive(serde::Serialize)]
    struct Problem<'a> {
        r#type: &'static str,
        title: &'static str,
        status: u16,
        detail: &'a str,
    }
    let body = serde_json::to_string(&Problem {
        r#type: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
    })
    .unwrap_or_default();
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body,
    )
        .into_response()
}

/// Installs the SIGINT/SIGTERM handlers; the channel turns `true` on the first.
fn shutdown_signal() -> Result<watch::Receiver<bool>, String> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())
            .map_err(|err| format!("cannot install the SIGINT handler: {err}"))?;
        let mut terminate = signal(SignalKind::terminate())
            .map_err(|err| format!("cannot install the SIGTERM handler: {err}"))?;
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name} received: finishing requests in flight, then stopping");
            let _ = tx.send(true);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("Ctrl-C received: finishing requests in flight, then stopping");
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
