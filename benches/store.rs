//! The cold path: a cache miss through the validator (SeaORM lookup, HMAC,
//! caching) against a bare sqlx `SELECT … WHERE public_key = ?` on the same pool,
//! with 1,000 and then 1,000,000 keys in the table.
//!
//! SQLite always; PostgreSQL too when `TEST_POSTGRES_URL` is set (a fresh
//! schema is made and dropped). Run with `cargo bench --bench store --all-features`.
//!
//! With `BENCH_PGBOUNCER_URL` also set (a PgBouncer in transaction mode in
//! front of the same server, its database part ignored), the group
//! `transaction_pooler` compares the cold miss through it
//! ([`PoolMode::Transaction`]) with the same lookup direct, and with the
//! transaction mode's statements sent direct, on one fresh database of 1,000
//! keys, in the same run.
//!
//! The group `management` compares a create and a revoke with their audit
//! row and outbox event against the same store writing neither.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyManager, NewApiKey, Pepper,
    store::{ApiKeyRepository, PoolMode, SeaOrmRepository, connect_options},
};

macro_rules! select_by_public_key {
    ($placeholder:literal) => {
        concat!(
            "SELECT key_id, public_key, secret_key_hash, account_id, title, description, status, ",
            "expires_at, last_used_at, created_at FROM api_keys WHERE public_key = ",
            $placeholder
        )
    };
}
/// Table sizes to measure at, from `BENCH_STORE_SIZES` (default `1000,1000000`).
fn sizes() -> Vec<u64> {
    std::env::var("BENCH_STORE_SIZES")
        .unwrap_or_else(|_| "1000,1000000".to_owned())
        .split(',')
        .map(|size| {
            size.trim()
                .parse()
                .expect("BENCH_STORE_SIZES: comma-separated row counts")
        })
        .collect()
}

struct Backend {
    name: &'static str,
    repo: SeaOrmRepository,
    cleanup: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("cold.db").display());
    Backend {
        name: "sqlite",
        repo: SeaOrmRepository::connect(&url).await.unwrap(),
        cleanup: None,
        _dir: Some(dir),
    }
}

#[cfg(feature = "postgres")]
async fn postgres() -> Option<Backend> {
    let url = std::env::var("TEST_POSTGRES_URL").ok()?;
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(url.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!("CREATE SCHEMA \"{schema}\""))
        .await
        .unwrap();
    let mut options = connect_options(&url);
    options.set_schema_search_path(schema.clone());
    Some(Backend {
        name: "postgres",
        repo: SeaOrmRepository::connect_with(options).await.unwrap(),
        cleanup: Some((url, format!("DROP SCHEMA \"{schema}\" CASCADE"))),
        _dir: None,
    })
}

#[cfg(not(feature = "postgres"))]
async fn postgres() -> Option<Backend> {
    None
}

/// Grows `api_keys` to `target` rows with synthetic keys (`pk_` + 32 digits).
async fn fill(db: &DatabaseConnection, name: &str, from: u64, target: u64) {
    let sql = if name == "sqlite" {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} + 1 UNION ALL SELECT i + 1 FROM n WHERE i < {target}) \
             INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, status, created_at) \
             SELECT randomblob(16), 'pk_' || printf('%032d', i), lower(hex(randomblob(32))), randomblob(16), 'bulk', 'active', '2026-01-01T00:00:00+00:00' FROM n"
        )
    } else {
        format!(
            "INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, status, created_at) \
             SELECT gen_random_uuid(), 'pk_' || lpad(i::text, 32, '0'), md5(i::text) || md5(i::text), gen_random_uuid(), 'bulk', 'active', now() \
             FROM generate_series({} , {target}) AS i",
            from + 1
        )
    };
    db.execute_unprepared(&sql).await.unwrap();
    let analyze = if name == "sqlite" {
        "ANALYZE"
    } else {
        "ANALYZE api_keys"
    };
    db.execute_unprepared(analyze).await.unwrap();
}

fn bench_cold(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![rt.block_on(sqlite())];
    backends.extend(rt.block_on(postgres()));
    let pepper = || Pepper::try_from("benchmark-pepper-0123456789").unwrap();

    let mut group = c.benchmark_group("cold_path");
    group.measurement_time(Duration::from_secs(5));
    for backend in &backends {
        let validator = ApiKeyValidator::builder(backend.repo.clone(), pepper())
            .with_positive_ttl(Duration::ZERO)
            .with_stale_if_error(Duration::ZERO)
            .build();
        let credential = rt.block_on(async {
            KeyManager::new(validator.clone())
                .create(
                    AccountId::new(uuid::Uuid::new_v4()),
                    NewApiKey::new("bench"),
                )
                .await
                .unwrap()
                .credential()
        });
        let public_key = credential[..35].to_owned();
        let db = backend.repo.connection();
        let mut rows = 1;
        for size in sizes() {
            rt.block_on(fill(db, backend.name, rows, size));
            rows = size;
            let label = format!("{}/{size}", backend.name);
            group.bench_function(BenchmarkId::new("validator_miss", &label), |b| {
                b.to_async(&rt)
                    .iter(|| async { validator.validate(&credential).await.unwrap() })
            });
            group.bench_function(BenchmarkId::new("repository_lookup", &label), |b| {
                b.to_async(&rt).iter(|| async {
                    backend
                        .repo
                        .find_by_public_key(&public_key)
                        .await
                        .unwrap()
                        .unwrap()
                })
            });
            match backend.name {
                #[cfg(feature = "sqlite")]
                "sqlite" => {
                    let pool = db.get_sqlite_connection_pool();
                    let sql = select_by_public_key!("?");
                    group.bench_function(BenchmarkId::new("bare_sqlx_select", &label), |b| {
                        b.to_async(&rt).iter(|| async {
                            sea_orm::sqlx::query(sql)
                                .bind(&public_key)
                                .fetch_optional(pool)
                                .await
                                .unwrap()
                                .unwrap()
                        })
                    });
                }
                #[cfg(feature = "postgres")]
                "postgres" => {
                    let pool = db.get_postgres_connection_pool();
                    let sql = select_by_public_key!("$1");
                    group.bench_function(BenchmarkId::new("bare_sqlx_select", &label), |b| {
                        b.to_async(&rt).iter(|| async {
                            sea_orm::sqlx::query(sql)
                                .bind(&public_key)
                                .fetch_optional(pool)
                                .await
                                .unwrap()
                                .unwrap()
                        })
                    });
                }
                _ => {}
            }
        }
    }
    group.finish();
    rt.block_on(async {
        for backend in backends {
            if let Some((url, statement)) = backend.cleanup {
                let admin = Database::connect(url.as_str()).await.unwrap();
                admin.execute_unprepared(&statement).await.ok();
            }
        }
    });
}

/// The cold miss through a transaction-mode PgBouncer beside the same miss
/// direct, on one database.
fn bench_pooler(c: &mut Criterion) {
    let (Ok(direct), Ok(pooler)) = (
        std::env::var("TEST_POSTGRES_URL"),
        std::env::var("BENCH_PGBOUNCER_URL"),
    ) else {
        return;
    };
    if !cfg!(feature = "postgres") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let database = format!("bench_{}", uuid::Uuid::new_v4().simple());
    let at = |url: &str| {
        let mut url: reqwest::Url = url.parse().unwrap();
        url.set_path(&format!("/{database}"));
        url.to_string()
    };
    let admin = rt.block_on(async {
        let admin = Database::connect(direct.as_str()).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
            .await
            .unwrap();
        admin
    });
    let repos = rt.block_on(async {
        let direct_url = at(&direct);
        let direct = SeaOrmRepository::connect(&direct_url).await.unwrap();
        fill(direct.connection(), "postgres", 1, 1_000).await;
        let pooled = SeaOrmRepository::builder(&at(&pooler))
            .with_pool_mode(PoolMode::Transaction)
            .connect()
            .await
            .unwrap();
        // The transaction-mode statements without the pooler: what the simple
        // protocol costs apart from the pooler's own hop.
        let unprepared = SeaOrmRepository::builder(&direct_url)
            .with_pool_mode(PoolMode::Transaction)
            .connect()
            .await
            .unwrap();
        [
            ("direct", direct),
            ("direct_transaction_mode", unprepared),
            ("pgbouncer_transaction", pooled),
        ]
    });
    let pepper = || Pepper::try_from("benchmark-pepper-0123456789").unwrap();
    let credential = rt.block_on(async {
        KeyManager::new(ApiKeyValidator::new(repos[0].1.clone(), pepper()))
            .create(
                AccountId::new(uuid::Uuid::new_v4()),
                NewApiKey::new("bench"),
            )
            .await
            .unwrap()
            .credential()
    });
    let public_key = credential[..35].to_owned();
    let mut group = c.benchmark_group("transaction_pooler");
    group.measurement_time(Duration::from_secs(5));
    for (name, repo) in &repos {
        let validator = ApiKeyValidator::builder(repo.clone(), pepper())
            .with_positive_ttl(Duration::ZERO)
            .with_stale_if_error(Duration::ZERO)
            .with_change_feed(false)
            .build();
        group.bench_function(BenchmarkId::new("validator_miss", name), |b| {
            b.to_async(&rt)
                .iter(|| async { validator.validate(&credential).await.unwrap() })
        });
        group.bench_function(BenchmarkId::new("repository_lookup", name), |b| {
            b.to_async(&rt)
                .iter(|| async { repo.find_by_public_key(&public_key).await.unwrap().unwrap() })
        });
    }
    group.finish();
    rt.block_on(async {
        for (_, repo) in repos {
            repo.connection().clone().close().await.ok();
        }
        admin
            .execute_unprepared(&format!("DROP DATABASE \"{database}\" WITH (FORCE)"))
            .await
            .ok();
    });
}

/// The management path with and without its audit row and outbox event, on
/// the same database in the same run: one create (`insert_within_limit`, as
/// the manager calls it, without the HMAC) and one revoke of an active key,
/// each on a store that writes its journal (`audited`) and one that does
/// not (`bare`, [`SeaOrmRepository::without_journal`]). SQLite always,
/// PostgreSQL with `TEST_POSTGRES_URL`.
fn bench_management(c: &mut Criterion) {
    use std::time::Instant;
    use tower_api_keys::{
        audit::{Actor, ChangeRecord},
        store::{ApiKeyRecord, KeyStatus},
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![rt.block_on(sqlite())];
    backends.extend(rt.block_on(postgres()));
    let change = ChangeRecord::by(Actor::new("user:42")).from("203.0.113.7".parse().ok());
    let record = |account_id| ApiKeyRecord {
        key_id: uuid::Uuid::new_v4(),
        public_key: format!("pk_{}", uuid::Uuid::new_v4().simple()),
        secret_key_hash: "0".repeat(64).into(),
        account_id,
        title: "bench".to_owned(),
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
    };
    let mut group = c.benchmark_group("management");
    group.measurement_time(Duration::from_secs(5));
    for backend in &backends {
        for (label, repo) in [
            ("audited", backend.repo.clone()),
            ("bare", backend.repo.clone().without_journal()),
        ] {
            let id = format!("{}/{label}", backend.name);
            group.bench_function(BenchmarkId::new("create", &id), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (repo, change) = (repo.clone(), change.clone());
                    async move {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            // A fresh account each time: the count is of one row.
                            let key = record(uuid::Uuid::new_v4());
                            let started = Instant::now();
                            repo.insert_within_limit(vec![key], 1_000, &change)
                                .await
                                .unwrap();
                            spent += started.elapsed();
                        }
                        spent
                    }
                });
            });
            group.bench_function(BenchmarkId::new("revoke", &id), |b| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (repo, change) = (repo.clone(), change.clone());
                    async move {
                        let mut spent = Duration::ZERO;
                        for _ in 0..iters {
                            let key = record(uuid::Uuid::new_v4());
                            let (account_id, key_id) = (key.account_id, key.key_id);
                            repo.insert(key).await.unwrap();
                            let started = Instant::now();
                            repo.revoke(account_id, key_id, &change).await.unwrap();
                            spent += started.elapsed();
                        }
                        spent
                    }
                });
            });
        }
    }
    group.finish();
    rt.block_on(async {
        for backend in backends {
            backend.repo.connection().clone().close().await.ok();
            if let Some((url, drop)) = backend.cleanup {
                let admin = Database::connect(url.as_str()).await.unwrap();
                admin.execute_unprepared(&drop).await.ok();
            }
        }
    });
}

criterion_group!(benches, bench_cold, bench_pooler, bench_management);
criterion_main!(benches);
