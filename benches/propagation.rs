//! How long a revocation made through one replica takes to reach another, over
//! the change feed (CONTRACT §7): 1,000 keys, cached on a second validator with
//! a pool of its own, are revoked one after another through the first; the
//! second validator validates every revoked key until it refuses it. Reports
//! p50 / p99 / max per backend, from the moment `revoke` returned.
//!
//! ```text
//! cargo bench --bench propagation --all-features     # SQLite
//! TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//! TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo bench --bench propagation --all-features   # and PostgreSQL, MySQL
//! ```

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use sea_orm::{ConnectOptions, ConnectionTrait, Database};
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, NewApiKey, Pepper,
    store::{SeaOrmRepository, connect_options},
};

const KEYS: usize = 1_000;

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
    );
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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("keys.db").display());
        measure("SQLite", connect_options(&url)).await;

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
            measure("PostgreSQL", options).await;
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
            measure("MySQL", connect_options(&format!("{base}/{database}"))).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE `{database}`"))
                .await
                .unwrap();
        }
    });
}
