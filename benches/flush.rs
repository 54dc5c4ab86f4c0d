//! The `last_used_at` flush at scale: the time to write 100,000 and 1,000,000
//! pending uses, into a table of as many keys, with the statements a flush
//! runs (5,000 keys each, sorted by key id as the usage writer sorts them).
//!
//! SQLite (a file) always; PostgreSQL and MySQL/MariaDB too when
//! `TEST_POSTGRES_URL` / `TEST_MYSQL_URL` are set (a fresh schema or database is
//! made and dropped). Every iteration writes newer times than the last, so
//! every row is really written. Sizes from `BENCH_FLUSH_SIZES` (default
//! `100000,1000000`). Run with `cargo bench --bench flush --all-features`.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend};
use tower_api_keys::store::{ApiKeyRepository, SeaOrmRepository, connect_options};
use uuid::Uuid;

fn sizes() -> Vec<u64> {
    std::env::var("BENCH_FLUSH_SIZES")
        .unwrap_or_else(|_| "100000,1000000".to_owned())
        .split(',')
        .map(|size| {
            size.trim()
                .parse()
                .expect("BENCH_FLUSH_SIZES: comma-separated key counts")
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
    let url = format!("sqlite://{}", dir.path().join("flush.db").display());
    Backend {
        name: "sqlite",
        repo: SeaOrmRepository::connect(&url).await.unwrap(),
        cleanup: None,
        _dir: Some(dir),
    }
}

async fn postgres() -> Option<Backend> {
    let url = std::env::var("TEST_POSTGRES_URL").ok()?;
    if !cfg!(feature = "postgres") {
        return None;
    }
    let schema = format!("bench_{}", Uuid::new_v4().simple());
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

async fn mysql() -> Option<Backend> {
    let url = std::env::var("TEST_MYSQL_URL").ok()?;
    if !cfg!(feature = "mysql") {
        return None;
    }
    let database = format!("bench_{}", Uuid::new_v4().simple());
    let admin = Database::connect(url.as_str()).await.unwrap();
    admin
        .execute_unprepared(&format!(
            "CREATE DATABASE `{database}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        ))
        .await
        .unwrap();
    let (base, _) = url
        .rsplit_once('/')
        .expect("TEST_MYSQL_URL names a database");
    Some(Backend {
        name: "mysql",
        repo: SeaOrmRepository::connect(&format!("{base}/{database}"))
            .await
            .unwrap(),
        cleanup: Some((url, format!("DROP DATABASE `{database}`"))),
        _dir: None,
    })
}

/// The key id of row `i`, scattered by its high 32 bits (as `tests/flush.rs`).
fn key_id(i: u64) -> Uuid {
    Uuid::from_u128(u128::from((i * 2_654_435_761) % (1 << 32)) << 96 | u128::from(i))
}

/// Grows `api_keys` from `from` to `to` rows (`title = i`, `key_id = key_id(i)`).
async fn fill(repo: &SeaOrmRepository, from: u64, to: u64) {
    let db = repo.connection();
    let hash = "0".repeat(64);
    let sql = match db.get_database_backend() {
        DatabaseBackend::Sqlite => format!(
            "WITH RECURSIVE seq(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM seq WHERE i < {last}) \
             INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, created_at) \
             SELECT unhex(printf('%08x%024x', (i * 2654435761) % 4294967296, i)), 'pk_' || printf('%032d', i), \
             '{hash}', x'00000000000000000000000000000001', CAST(i AS TEXT), \
             '2025-01-01T00:00:00.000001+00:00' FROM seq",
            last = to - 1
        ),
        DatabaseBackend::Postgres => format!(
            "INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, created_at) \
             SELECT (lpad(to_hex((i * 2654435761) % 4294967296), 8, '0') || lpad(to_hex(i), 24, '0'))::uuid, \
             'pk_' || lpad(i::text, 32, '0'), '{hash}', '00000000-0000-0000-0000-000000000001', i::text, \
             TIMESTAMPTZ '2025-01-01 00:00:00.000001Z' FROM generate_series({from}::bigint, {last}) AS i",
            last = to - 1
        ),
        _ => {
            let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                          UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                          UNION ALL SELECT 8 UNION ALL SELECT 9)";
            let places = (to - 1).max(1).ilog10() + 1;
            let tables: Vec<String> = (0..places).map(|p| format!("{digits} AS t{p}")).collect();
            let sum: Vec<String> = (0..places)
                .map(|p| format!("t{p}.d * {}", 10u64.pow(p)))
                .collect();
            format!(
                "INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, created_at) \
                 SELECT UNHEX(CONCAT(LPAD(HEX((i * 2654435761) % 4294967296), 8, '0'), LPAD(HEX(i), 24, '0'))), \
                 CONCAT('pk_', LPAD(i, 32, '0')), '{hash}', UNHEX('00000000000000000000000000000001'), \
                 CAST(i AS CHAR), TIMESTAMP '2025-01-01 00:00:00.000001' \
                 FROM (SELECT {} AS i FROM {}) AS seq WHERE i >= {from} AND i < {to} \
                 ORDER BY (i * 2654435761) % 4294967296, i",
                sum.join(" + "),
                tables.join(" CROSS JOIN ")
            )
        }
    };
    db.execute_unprepared(&sql).await.unwrap();
}

fn bench_flush(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = vec![rt.block_on(sqlite())];
    backends.extend(rt.block_on(postgres()));
    backends.extend(rt.block_on(mysql()));
    let base = DateTime::from_timestamp_micros(1_767_225_600_000_500).unwrap();

    let mut group = c.benchmark_group("flush");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    for backend in &backends {
        let mut rows = 0;
        let mut round: i64 = 0;
        for size in sizes() {
            if size > rows {
                let started = Instant::now();
                rt.block_on(fill(&backend.repo, rows, size));
                eprintln!(
                    "{}: {rows}..{size} rows made in {:.1?}",
                    backend.name,
                    started.elapsed()
                );
                rows = size;
            }
            let mut ids: Vec<Uuid> = (0..size).map(key_id).collect();
            ids.sort_unstable();
            group.throughput(criterion::Throughput::Elements(size));
            group.bench_function(BenchmarkId::new(backend.name, size), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        // Newer than every earlier round, so every row is written.
                        round += 1;
                        let at = base + TimeDelta::hours(round);
                        let pairs: Vec<(Uuid, DateTime<Utc>)> = ids
                            .iter()
                            .enumerate()
                            .map(|(i, id)| (*id, at + TimeDelta::microseconds(i as i64)))
                            .collect();
                        let started = Instant::now();
                        rt.block_on(backend.repo.record_last_used(&pairs)).unwrap();
                        total += started.elapsed();
                    }
                    total
                })
            });
        }
    }
    group.finish();
    rt.block_on(async {
        for backend in backends {
            if let Some((url, statement)) = backend.cleanup {
                backend.repo.connection().clone().close().await.ok();
                let admin = Database::connect(url.as_str()).await.unwrap();
                admin.execute_unprepared(&statement).await.ok();
            }
        }
    });
}

criterion_group!(benches, bench_flush);
criterion_main!(benches);
