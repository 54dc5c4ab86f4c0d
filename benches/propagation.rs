//! How long a revocation made through one replica takes to reach another, over
//! the change feed (CONTRACT §7, §12):
//!
//! - 1,000 keys, cached on a second validator with a pool of its own, are
//!   revoked one after another through the first; the second validator
//!   validates every revoked key until it refuses it. Reports p50 / p99 / max
//!   per backend, from the moment `revoke` returned.
//! - 100,000 keys, cached on the second validator, are revoked by one `UPDATE`
//!   (one transaction). Reports the time from its commit until every one has
//!   left the second validator's cache (the next request for each is then
//!   refused), and the process's peak heap growth meanwhile (the feed's work:
//!   reading the change log or the notifications, and evicting).
//!
//! ```text
//! cargo bench --bench propagation --all-features     # SQLite
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo bench --bench propagation --all-features   # and PostgreSQL, MySQL
//! ```

use std::{
    alloc::{GlobalAlloc, Layout, System},
    collections::VecDeque,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, KeyPair, NewApiKey, Pepper,
    hash::KeyHasher,
    store::{ApiKeyRecord, ApiKeyRepository, KeyStatus, SeaOrmRepository, connect_options},
};

const KEYS: usize = 1_000;
/// Keys revoked by the one large transaction.
const LARGE: usize = 100_000;

/// `System`, keeping the bytes live on the heap and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on unchanged to `System`; the counters are
// atomics, whose updates never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System::alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn pepper() -> Pepper {
    Pepper::try_from("benchmark-pepper-0123456789").unwrap()
}

async fn measure(name: &str, options: ConnectOptions) {
    let writer = SeaOrmRepository::connect_with(options.clone())
        .await
        .unwrap();
    let reader = SeaOrmRepository::connect_with(options).await.unwrap();
    let manager = KeyManager::new(
        ApiKeyValidator::builder(writer, pepper())
            .with_change_feed(false)
            .with_cache_capacity(10 * KEYS as u64)
            .build(),
    )
    .with_max_keys_per_account(KEYS as u64);
    let replica = ApiKeyValidator::builder(reader, pepper())
        .with_cache_capacity(10 * KEYS as u64)
        .build();
    while !replica.change_feed().is_some_and(|feed| feed.connected) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let account = AccountId::new(uuid::Uuid::new_v4());
    let mut keys: Vec<CreatedKey> = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        keys.push(
            manager
                .create(account, NewApiKey::new(format!("k{i}")))
                .await
                .unwrap(),
        );
    }
    // Let the inserts' own feed events pass, then cache every key.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for key in &keys {
        assert!(replica.validate(&key.credential()).await.is_ok());
    }

    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let checker = {
        let replica = replica.clone();
        tokio::spawn(async move {
            let mut pending: VecDeque<(String, Instant)> = VecDeque::new();
            let mut delays = Vec::with_capacity(KEYS);
            while delays.len() < KEYS {
                while let Ok(next) = received.try_recv() {
                    pending.push_back(next);
                }
                let mut still = VecDeque::with_capacity(pending.len());
                for (credential, revoked_at) in pending.drain(..) {
                    if replica.validate(&credential).await.is_err() {
                        delays.push(revoked_at.elapsed());
                    } else {
                        still.push_back((credential, revoked_at));
                    }
                }
                pending = still;
                tokio::task::yield_now().await;
            }
            delays
        })
    };
    let started = Instant::now();
    for key in &keys {
        manager.revoke(account, key.key.key_id).await.unwrap();
        sent.send((key.credential(), Instant::now())).unwrap();
    }
    let revoking = started.elapsed();
    let mut delays = checker.await.unwrap();
    delays.sort();
    let at = |q: f64| delays[((delays.len() as f64 * q) as usize).min(delays.len() - 1)];
    let feed = replica.change_feed().unwrap();
    println!(
        "{name:<11} {KEYS} revocations in {revoking:.2?} ({:?} feed): \
         p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
        feed.mode,
        at(0.50),
        at(0.99),
        delays[delays.len() - 1],
    );
    replica.shutdown().await;
}

/// One transaction revokes [`LARGE`] keys cached on a replica: how long until
/// the replica has dropped them all, and the heap's peak growth meanwhile.
async fn measure_large(name: &str, options: ConnectOptions) {
    let writer = SeaOrmRepository::connect_with(options.clone())
        .await
        .unwrap();
    let account = uuid::Uuid::new_v4();
    let hasher = KeyHasher::new(&pepper());
    let pairs: Vec<KeyPair> = (0..LARGE).map(|_| KeyPair::generate().unwrap()).collect();
    for chunk in pairs.chunks(10_000) {
        let records = chunk
            .iter()
            .map(|pair| ApiKeyRecord {
                key_id: uuid::Uuid::new_v4(),
                public_key: pair.public_key.as_str().to_owned(),
                secret_key_hash: hasher.hash(pair.secret_key.expose()).to_hex().into(),
                account_id: account,
                title: "large".into(),
                description: None,
                status: KeyStatus::Active,
                expires_at: None,
                last_used_at: None,
                created_at: Some(chrono::Utc::now()),
                pepper_id: None,
                scopes: None,
                metadata: None,
                rotated_from: None,
                rate_limit: None,
                allowed_cidrs: None,
            })
            .collect();
        writer.insert_many(records).await.unwrap();
    }
    let reader = SeaOrmRepository::connect_with(options).await.unwrap();
    let replica = ApiKeyValidator::builder(reader, pepper())
        .with_cache_capacity(4 * LARGE as u64)
        .build();
    while !replica.change_feed().is_some_and(|feed| feed.connected) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the inserts' own feed events pass, then cache every key.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let credentials: Vec<String> = pairs.iter().map(KeyPair::credential).collect();
    let tasks: Vec<_> = credentials
        .chunks(LARGE / 16)
        .map(|chunk| {
            let (replica, chunk) = (replica.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for credential in chunk {
                    assert!(replica.validate(&credential).await.is_ok());
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let cached = replica.cached_entries().known;
    assert!(cached >= LARGE as u64);

    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
    let before = LIVE.load(Ordering::Relaxed);
    writer
        .connection()
        .execute_unprepared("UPDATE api_keys SET status = 'revoked' WHERE title = 'large'")
        .await
        .unwrap();
    let committed = Instant::now();
    while replica.cached_entries().known > cached - LARGE as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let propagated = committed.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    for credential in credentials.iter().step_by(LARGE / 100) {
        assert!(replica.validate(credential).await.is_err());
    }
    println!(
        "{name:<11} one transaction revoking {LARGE} keys: all refused {propagated:.2?} after \
         its commit; heap peak +{:.1} MiB meanwhile",
        peak as f64 / (1024.0 * 1024.0)
    );
    replica.shutdown().await;
}

/// Both measurements on one backend.
async fn measure_both(name: &str, options: ConnectOptions) {
    measure(name, options.clone()).await;
    measure_large(name, options).await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        measure_both("SQLite", connect_options(&url)).await;

        #[cfg(feature = "postgres")]
        if let Ok(url) = std::env::var("TEST_POSTGRES_URL") {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(url.as_str()).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
                .await
                .unwrap();
            let mut options = connect_options(&url);
            options.set_schema_search_path(schema.clone());
            measure_both("PostgreSQL", options).await;
            admin
                .execute_unprepared(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await
                .unwrap();
        }

        #[cfg(feature = "mysql")]
        if let Ok(url) = std::env::var("TEST_MYSQL_URL") {
            let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(url.as_str()).await.unwrap();
            admin
                .execute_unprepared(&format!("CREATE DATABASE `{database}`"))
                .await
                .unwrap();
            let (base, _) = url.rsplit_once('/').unwrap();
            measure_both("MySQL", connect_options(&format!("{base}/{database}"))).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE `{database}`"))
                .await
                .unwrap();
        }
    });
}
