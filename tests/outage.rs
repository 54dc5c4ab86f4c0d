//! A real database outage: a TCP forwarder on loopback sits between the pool and
//! PostgreSQL, and the test cuts it, hangs it and restores it.
//! Runs when `TEST_POSTGRES_URL` is set (CI sets it).

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use tokio::{
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};
use tower_api_keys::{
    AccountId, ApiKeyValidator, NewApiKey,
    store::{SeaOrmRepository, connect_options},
};
use uuid::Uuid;

const PASS: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;

/// Forwards loopback connections to `upstream`, until told to refuse or hang.
struct Forwarder {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Forwarder {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(PASS));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (accept_mode, accept_connections) = (mode.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    break;
                };
                match accept_mode.load(Ordering::SeqCst) {
                    REFUSE => drop(client),
                    HANG => {
                        // Accept, then never answer.
                        let task = tokio::spawn(async move {
                            let _held = client;
                            std::future::pending::<()>().await;
                        });
                        accept_connections.lock().unwrap().push(task.abort_handle());
                    }
                    _ => {
                        let task = tokio::spawn(async move {
                            if let Ok(mut server) = TcpStream::connect(upstream).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                        accept_connections.lock().unwrap().push(task.abort_handle());
                    }
                }
            }
        });
        Self {
            addr,
            mode,
            connections,
        }
    }

    fn drop_connections(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    fn cut(&self) {
        self.mode.store(REFUSE, Ordering::SeqCst);
        self.drop_connections();
    }

    fn hang(&self) {
        self.mode.store(HANG, Ordering::SeqCst);
        self.drop_connections();
    }

    fn restore(&self) {
        self.drop_connections();
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_degrades_to_503_and_recovers() {
    let Ok(url) = std::env::var("TEST_POSTGRES_URL") else {
        eprintln!("TEST_POSTGRES_URL not set; the outage test needs PostgreSQL");
        return;
    };
    if !cfg!(feature = "postgres") {
        eprintln!("the `postgres` feature is off; the outage test needs it");
        return;
    }
    let upstream_url: reqwest::Url = url.parse().unwrap();
    let upstream = SocketAddr::new(
        upstream_url.host_str().unwrap().parse().unwrap(),
        upstream_url.port().unwrap_or(5432),
    );
    let forwarder = Forwarder::start(upstream).await;
    let mut through = upstream_url.clone();
    through.set_port(Some(forwarder.addr.port())).unwrap();

    let schema = format!("tak_outage_{}", Uuid::new_v4().simple());
    let admin = Database::connect(url.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let mut options = connect_options(through.as_str());
    options
        .set_schema_search_path(schema.clone())
        .acquire_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(1));
    let repo = SeaOrmRepository::connect_with(options).await.unwrap();

    let validator = ApiKeyValidator::builder(repo, common::pepper())
        .with_positive_ttl(Duration::from_millis(300))
        .with_stale_if_error(Duration::from_secs(60))
        .with_store_timeout(Duration::from_millis(700))
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    // The feed empties the cache when it connects: wait for that first.
    let started = std::time::Instant::now();
    while !validator.change_feed().is_some_and(|feed| feed.connected) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change feed did not connect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let h = common::Harness::start(validator).await;
    let account = AccountId::new(Uuid::new_v4());
    let cached = h
        .manager
        .create(account, NewApiKey::new("cached"))
        .await
        .unwrap();
    let uncached = h
        .manager
        .create(account, NewApiKey::new("uncached"))
        .await
        .unwrap();
    // The feed also evicts a key when its row changes: wait until it has seen
    // both inserts, so that the key cached below stays cached.
    let started = std::time::Instant::now();
    while !h
        .validator
        .change_feed()
        .is_some_and(|feed| feed.connected && feed.events >= 2)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the change feed did not report both inserts"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.whoami(&cached.credential()).await.status(),
        StatusCode::OK
    );

    // Cut: existing connections die, new ones are refused.
    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = h.whoami(&cached.credential()).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a cached key rides out the outage within the grace"
    );
    let response = h.whoami(&uncached.credential()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let unknown = tower_api_keys::KeyPair::generate().unwrap().credential();
    assert_eq!(
        h.whoami(&unknown).await.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "never 401 on a store failure"
    );
    // The recorded use of the cached key cannot be written now; it is kept.
    assert!(h.validator.flush().await.is_err());

    // Hang: the database accepts connections and never answers. The store timeout
    // answers for it (the outer timeout only keeps a broken build from hanging CI).
    forwarder.hang();
    let response = tokio::time::timeout(Duration::from_secs(20), h.whoami(&uncached.credential()))
        .await
        .expect("a hung database must not hang requests");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.whoami(&cached.credential()).await.status(),
        StatusCode::OK
    );

    // Restore: validation recovers without a restart, and the kept write lands.
    forwarder.restore();
    let mut recovered = false;
    for _ in 0..50 {
        if h.whoami(&uncached.credential()).await.status() == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "validation must recover once the database is back"
    );
    let mut flushed = false;
    for _ in 0..20 {
        if h.validator.flush().await.is_ok() {
            flushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(flushed);
    let key = h.manager.get(account, cached.key.key_id).await.unwrap();
    assert!(
        key.last_used_at.is_some(),
        "the write that failed during the outage was retried"
    );

    admin
        .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await
        .ok();
}
