//! Shared test support: a fresh database per test on every configured backend,
//! the crate's counting/failing repository wrapper ([`Probe`], from
//! `tower_api_keys::testing`), a real HTTP app on loopback, and the example
//! server as a process ([`server`]).
#![allow(dead_code, unreachable_pub)]

#[cfg(unix)]
pub mod server;

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Json, Router,
    extract::Request,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use chrono::{DateTime, Utc};
use serde_json::json;
use tower_api_keys::{
    AccountId, ApiKeyAuthLayer, ApiKeyValidator, AuthenticatedKey, CreatedKey, KeyManager, KeyPair,
    NewApiKey, Pepper,
    hash::KeyHasher,
    router::ManagementRouter,
    store::{ApiKeyRecord, KeyStatus, SeaOrmRepository, connect_options},
};
use uuid::Uuid;

/// The store double every test wraps its repository in (some test files
/// need none).
#[allow(unused_imports)]
pub use tower_api_keys::testing::Probe;

pub mod faults;
pub mod feed;
pub mod postgres;
pub mod provision;

pub const PEPPER: &str = "integration-test-pepper";

pub fn pepper() -> Pepper {
    Pepper::try_from(PEPPER).unwrap()
}

/// A fresh, migrated database for one test.
pub struct TestDb {
    pub repo: SeaOrmRepository,
    pub backend: &'static str,
    /// How to connect to this database again (another "process").
    options: sea_orm::ConnectOptions,
    /// PostgreSQL: the `application_name` of this test's connections.
    application_name: Option<String>,
    /// PostgreSQL / MySQL: the schema or database to drop at the end.
    cleanup: Option<provision::Fresh>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    async fn open(
        options: sea_orm::ConnectOptions,
        backend: &'static str,
        cleanup: Option<provision::Fresh>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        Self {
            repo: SeaOrmRepository::connect_with(options.clone())
                .await
                .unwrap(),
            backend,
            options,
            application_name: None,
            cleanup,
            _dir: dir,
        }
    }

    /// A PostgreSQL test database in a fresh schema, its connections named
    /// after it.
    async fn open_schema(schema: provision::Fresh, backend: &'static str) -> Self {
        let mut options = connect_options(&schema.admin_url);
        options
            .set_schema_search_path(schema.name.clone())
            .set_application_name(schema.name.clone());
        let name = schema.name.clone();
        let mut db = Self::open(options, backend, Some(schema), None).await;
        db.application_name = Some(name);
        db
    }

    /// A repository on a pool of its own over the same database, as another
    /// process would have.
    pub async fn connect_again(&self) -> SeaOrmRepository {
        SeaOrmRepository::connect_with(self.options.clone())
            .await
            .unwrap()
    }

    /// A repository over the same database whose connections go through
    /// `forwarder` (which forwards to this database's server).
    pub async fn connect_via(&self, forwarder: &faults::Forwarder) -> SeaOrmRepository {
        let mut options = connect_options(&forwarder.url_for(self.options.get_url()));
        if let Some(schema) = &self.application_name {
            options
                .set_schema_search_path(schema.clone())
                .set_application_name(schema.clone());
        }
        options
            .connect_timeout(std::time::Duration::from_secs(2))
            .acquire_timeout(std::time::Duration::from_secs(2));
        SeaOrmRepository::connect_with(options).await.unwrap()
    }

    /// The URL this test's database was opened with.
    pub fn url(&self) -> &str {
        self.options.get_url()
    }

    /// The `application_name` of this test's PostgreSQL connections (unique
    /// per test), so that a test can find its own sessions.
    pub fn application_name(&self) -> &str {
        self.application_name
            .as_deref()
            .expect("a PostgreSQL test database")
    }

    /// Drops the schema or database the test made (SQLite: the temp dir goes on drop).
    pub async fn cleanup(self) {
        if let Some(fresh) = &self.cleanup {
            self.repo.connection().clone().close().await.ok();
            fresh.drop_it().await;
        }
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.db").display());
    TestDb::open(connect_options(&url), "sqlite", None, Some(dir)).await
}

/// A fresh schema on `TEST_POSTGRES_URL`; panics when it is unset.
pub async fn postgres() -> TestDb {
    let schema = provision::postgres_schema("tak_", |_| String::new()).await;
    TestDb::open_schema(schema, "postgres").await
}

/// The reference service's own `api_keys` table (PostgreSQL), created in
/// `schema` before the crate's migration runs on top of it: `status` is the ENUM
/// `api_key_status` (nullable, default `active`), `key_id` and `created_at` have
/// database defaults, two CHECK constraints hold, and the indexes have names of
/// their own.
pub fn reference_table_ddl(schema: &str) -> String {
    format!(
        r#"CREATE TYPE "{schema}".api_key_status AS ENUM ('active', 'revoked', 'expired');
CREATE TABLE "{schema}".api_keys (
    key_id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    public_key VARCHAR(64) NOT NULL UNIQUE,
    secret_key_hash VARCHAR(64) NOT NULL,
    account_id UUID NOT NULL,
    title VARCHAR(255) NOT NULL,
    description TEXT,
    status "{schema}".api_key_status DEFAULT 'active',
    expires_at TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT NOW(),
    CONSTRAINT api_keys_title_not_blank CHECK (LENGTH(TRIM(title)) > 0),
    CONSTRAINT api_keys_public_key_format CHECK (public_key ~ '^pk_[a-zA-Z0-9]{{32}}$')
);
CREATE INDEX ix_api_keys_account_id ON "{schema}".api_keys (account_id);
CREATE INDEX ix_api_keys_public_key ON "{schema}".api_keys (public_key);"#
    )
}

/// A fresh PostgreSQL schema holding the reference service's table
/// ([`reference_table_ddl`]), adopted by the crate: its migration runs on top.
/// Panics when `TEST_POSTGRES_URL` is unset.
pub async fn postgres_adopted() -> TestDb {
    let schema = provision::postgres_schema("tak_", reference_table_ddl).await;
    TestDb::open_schema(schema, "postgres_adopted").await
}

/// A fresh database on the server of `TEST_MYSQL_URL`; panics when it is unset.
pub async fn mysql() -> TestDb {
    let (database, url) = provision::mysql_database("tak_").await;
    TestDb::open(connect_options(&url), "mysql", Some(database), None).await
}

/// Runs each test on SQLite, and on PostgreSQL (the crate's own table and the
/// reference service's adopted one) and MySQL. The server backends are
/// `#[ignore = "needs TEST_…_URL"]`: `cargo test -- --include-ignored` runs
/// them, and fails them if their variable is unset.
///
/// `backend_tests!(redis: …)` runs tests that also need `TEST_REDIS_URL`, on
/// every backend, all ignored, in modules `sqlite_redis`, `postgres_redis`, ….
///
/// `backend_tests!(sqlite_and_mysql: …)` runs tests that only apply to SQLite
/// and MySQL (whose change feeds poll), as `<test>::sqlite` and
/// `<test>::mysql`.
#[macro_export]
macro_rules! backend_tests {
    (sqlite_and_mysql: $($name:ident),* $(,)?) => {$(
        mod $name {
            $crate::backend_tests!(@test sqlite, sqlite, [], $name);
            $crate::backend_tests!(@test mysql, mysql, [ignore = "needs TEST_MYSQL_URL"], $name);
        }
    )*};
    (redis: $($name:ident),* $(,)?) => {
        $crate::backend_tests!(@backend sqlite_redis, sqlite,
            [ignore = "needs TEST_REDIS_URL"]; $($name),*);
        $crate::backend_tests!(@backend postgres_redis, postgres,
            [ignore = "needs TEST_POSTGRES_URL and TEST_REDIS_URL"]; $($name),*);
        $crate::backend_tests!(@backend postgres_adopted_redis, postgres_adopted,
            [ignore = "needs TEST_POSTGRES_URL and TEST_REDIS_URL"]; $($name),*);
        $crate::backend_tests!(@backend mysql_redis, mysql,
            [ignore = "needs TEST_MYSQL_URL and TEST_REDIS_URL"]; $($name),*);
    };
    (@backend $module:ident, $open:ident, $attributes:tt; $($name:ident),*) => {
        mod $module {
            $($crate::backend_tests!(@test $name, $open, $attributes, $name);)*
        }
    };
    // The test `$test`: `$name` on a fresh database of `common::$open`.
    (@test $test:ident, $open:ident, [$($attribute:meta),*], $name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attribute])*
        async fn $test() {
            let db = $crate::common::$open().await;
            super::$name(&db).await;
            db.cleanup().await;
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::backend_tests!(@backend sqlite, sqlite, []; $($name),*);
        $crate::backend_tests!(@backend postgres, postgres,
            [ignore = "needs TEST_POSTGRES_URL"]; $($name),*);
        $crate::backend_tests!(@backend postgres_adopted, postgres_adopted,
            [ignore = "needs TEST_POSTGRES_URL"]; $($name),*);
        $crate::backend_tests!(@backend mysql, mysql, [ignore = "needs TEST_MYSQL_URL"]; $($name),*);
    };
}

/// Holds the first call of one write operation in a [`Probe`] hook until the
/// test releases it.
#[derive(Clone)]
pub struct Gate {
    operation: &'static str,
    armed: Arc<AtomicBool>,
    arrived: Arc<tokio::sync::Notify>,
    released: Arc<tokio::sync::Notify>,
    passed: Arc<AtomicBool>,
}

impl Gate {
    /// A gate for the first `operation` call.
    pub fn new(operation: &'static str) -> Self {
        Self {
            operation,
            armed: Arc::new(AtomicBool::new(true)),
            arrived: Arc::default(),
            released: Arc::default(),
            passed: Arc::default(),
        }
    }

    /// The hook to give [`Probe::with_before_write`] or
    /// [`Probe::with_after_write`].
    pub fn hook(
        &self,
    ) -> impl Fn(&'static str) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + use<>
    {
        let gate = self.clone();
        move |operation| {
            let gate = gate.clone();
            Box::pin(async move {
                if operation == gate.operation && gate.armed.swap(false, Ordering::SeqCst) {
                    gate.arrived.notify_one();
                    gate.released.notified().await;
                    gate.passed.store(true, Ordering::SeqCst);
                }
            })
        }
    }

    /// Waits until the gated call is held.
    pub async fn arrived(&self) {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.arrived.notified())
            .await
            .expect("the gated write arrives");
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.released.notify_one();
    }

    /// Whether the held call went on after [`release`](Self::release) (its
    /// future was not dropped).
    pub fn passed(&self) -> bool {
        self.passed.load(Ordering::SeqCst)
    }
}

/// Holds lookups in a [`Probe::with_after_lookup`] hook, after they read the
/// store and before they answer, while the test asks for it.
#[derive(Clone)]
pub struct LookupGate {
    /// Only the first lookup after [`hold`](Self::hold) is held.
    once: bool,
    holding: Arc<AtomicBool>,
    reached: Arc<tokio::sync::Notify>,
    released: Arc<tokio::sync::Notify>,
}

impl LookupGate {
    /// Holds every lookup while [`hold`](Self::hold) is on.
    pub fn every() -> Self {
        Self::new(false)
    }

    /// Holds the first lookup after [`hold`](Self::hold), and no other.
    pub fn first() -> Self {
        Self::new(true)
    }

    fn new(once: bool) -> Self {
        Self {
            once,
            holding: Arc::default(),
            reached: Arc::default(),
            released: Arc::default(),
        }
    }

    /// The hook to give [`Probe::with_after_lookup`].
    pub fn hook(
        &self,
    ) -> impl Fn(String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + use<> {
        let gate = self.clone();
        move |_| {
            let gate = gate.clone();
            Box::pin(async move {
                let held = if gate.once {
                    gate.holding.swap(false, Ordering::SeqCst)
                } else {
                    gate.holding.load(Ordering::SeqCst)
                };
                if held {
                    gate.reached.notify_one();
                    gate.released.notified().await;
                }
            })
        }
    }

    /// Starts (`true`) or stops holding lookups.
    pub fn hold(&self, on: bool) {
        self.holding.store(on, Ordering::SeqCst);
    }

    /// Waits until a lookup is held.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held lookup go on.
    pub fn release(&self) {
        self.released.notify_one();
    }
}

/// Stand-in for a host's own login: `X-Account-Id: <uuid>` becomes an `AccountId`.
pub async fn host_auth(mut request: Request, next: Next) -> Response {
    if let Some(account) = request
        .headers()
        .get("x-account-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<AccountId>().ok())
    {
        request.extensions_mut().insert(account);
    }
    next.run(request).await
}

/// The app the HTTP tests drive: `/v1/whoami` behind the layer, the management
/// routes behind the stand-in host login.
pub fn app(layer: ApiKeyAuthLayer, manager: KeyManager) -> Router {
    let whoami = Router::new()
        .route(
            "/v1/whoami",
            get(|key: AuthenticatedKey| async move {
                Json(json!({"account_id": key.account_id(), "key_id": key.key_id()}))
            }),
        )
        .layer(layer);
    Router::new().merge(whoami).nest(
        "/v1/api-keys",
        ManagementRouter::new(manager)
            .build()
            .layer(middleware::from_fn(host_auth)),
    )
}

/// Serves `router` on an ephemeral loopback port until the test ends.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// Serves `router` on an ephemeral port of `host` (`127.0.0.1`, or `[::]` for
/// IPv4 and IPv6 clients alike) with the connection's address in each
/// request (`ConnectInfo`), as a host serves it; the bound address.
pub async fn serve_with_connect_info(router: Router, host: &str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(format!("{host}:0"))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// A validator, a manager and a served app over `repo`.
pub struct Harness {
    pub validator: ApiKeyValidator,
    pub manager: KeyManager,
    pub base: String,
    pub client: reqwest::Client,
}

impl Harness {
    pub async fn start(validator: ApiKeyValidator) -> Self {
        let manager = KeyManager::new(validator.clone());
        let addr = serve(app(
            ApiKeyAuthLayer::new(validator.clone()),
            manager.clone(),
        ))
        .await;
        Self {
            validator,
            manager,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    /// A harness over `validator` and one key titled `title`, made through its
    /// manager for a fresh account.
    pub async fn with_key(
        validator: ApiKeyValidator,
        title: &str,
    ) -> (Self, AccountId, CreatedKey) {
        let h = Self::start(validator).await;
        let account = AccountId::new(Uuid::new_v4());
        let created = h
            .manager
            .create(account, NewApiKey::new(title))
            .await
            .unwrap();
        (h, account, created)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn whoami(&self, credential: &str) -> reqwest::Response {
        self.client
            .get(self.url("/v1/whoami"))
            .header("x-api-key", credential)
            .send()
            .await
            .unwrap()
    }

    /// `GET /v1/whoami` with `header: value` (the credential in a header of
    /// the caller's choosing, e.g. `authorization`).
    pub async fn whoami_with(&self, header: &str, value: String) -> reqwest::Response {
        self.client
            .get(self.url("/v1/whoami"))
            .header(header, value)
            .send()
            .await
            .unwrap()
    }
}

/// Runs `n` copies of `f` concurrently and collects their outputs.
pub async fn concurrently<F, Fut, T>(n: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(f(i))).collect();
    let mut out = Vec::with_capacity(n);
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A row written straight to the store, as another process (or the reference
/// service) would: `public_key` with `secret_key_hash` as given, status active,
/// no expiry, made now. Override fields with struct-update syntax.
pub fn record(public_key: &str, secret_key_hash: &str, account_id: Uuid) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: Uuid::new_v4(),
        public_key: public_key.to_owned(),
        secret_key_hash: secret_key_hash.into(),
        account_id,
        title: "written directly".into(),
        description: None,
        status: KeyStatus::Active,
        expires_at: None,
        last_used_at: None,
        created_at: Some(Utc::now()),
        pepper_id: None,
        scopes: None,
        metadata: None,
        rotated_from: None,
        rate_limit: None,
        allowed_cidrs: None,
    }
}

/// A row for `pair` written straight to the store, as another process (or the
/// reference service) would: the secret hashed under [`PEPPER`], status active.
pub fn row(pair: &KeyPair, account_id: Uuid, expires_at: Option<DateTime<Utc>>) -> ApiKeyRecord {
    let now = Utc::now();
    let hash = KeyHasher::new(&pepper())
        .hash(pair.secret_key.expose())
        .to_hex();
    ApiKeyRecord {
        expires_at,
        created_at: Some(expires_at.map_or(now, |at| at.min(now) - chrono::TimeDelta::days(1))),
        ..record(pair.public_key.as_str(), &hash, account_id)
    }
}
