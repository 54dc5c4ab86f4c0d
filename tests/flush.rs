//! `last_used_at` at scale: 100,000 keys (every backend) and 1,000,000 keys
//! (SQLite, PostgreSQL, MySQL) used in one flush interval all land, and
//! `last_used_at` only moves forward.
//!
//! The rows are made in SQL (`INSERT … SELECT` over a generated series), every
//! pair goes through the public `ApiKeyRepository::record_last_used` in one call
//! (the repository writes 5,000 pairs per statement), and one `COUNT` checks
//! every row. Wall times go to stderr (`--nocapture`); speed is measured by
//! `benches/flush.rs`, not asserted here.

mod common;

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use common::TestDb;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};
use tower_api_keys::store::ApiKeyRepository;
use uuid::Uuid;

/// `used_at` of row `i` is `BASE + i ms`: never on a whole second, so that
/// SQLite's text always carries six fraction digits.
const BASE_MICROS: i64 = 1_767_225_600_000_500; // 2026-01-01T00:00:00.000500Z
/// Rows with `i % 100 == 0` already hold this newer value: it must stay.
const NEWER: &str = "2030-01-01 00:00:00.000001";
/// Rows with `i % 100 == 1` hold this older value: it must be overwritten.
const OLDER: &str = "2020-01-01 00:00:00.000001";

fn base() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(BASE_MICROS).unwrap()
}

/// The key id of row `i`: its high 32 bits scattered (a multiplicative hash),
/// so that ids do not follow insertion order; computed alike in SQL by [`fill`].
fn key_id(i: u64) -> Uuid {
    Uuid::from_u128(u128::from((i * 2_654_435_761) % (1 << 32)) << 96 | u128::from(i))
}

/// `n` rows (a power of ten) with `title = i` and `key_id = key_id(i)` for `i`
/// in `0..n`.
async fn fill(db: &TestDb, n: u64) {
    let conn = db.repo.connection();
    let hash = "0".repeat(64);
    let sql = match conn.get_database_backend() {
        DatabaseBackend::Sqlite => format!(
            "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {last}) \
             INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, last_used_at, created_at) \
             SELECT unhex(printf('%08x%024x', (i * 2654435761) % 4294967296, i)), 'pk_' || printf('%032d', i), '{hash}', x'00000000000000000000000000000001', \
             CAST(i AS TEXT), \
             CASE i % 100 WHEN 0 THEN '{newer}' WHEN 1 THEN '{older}' END, \
             '2025-01-01T00:00:00.000001+00:00' FROM seq",
            last = n - 1,
            newer = sqlite_text(NEWER),
            older = sqlite_text(OLDER),
        ),
        DatabaseBackend::Postgres => format!(
            "INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, last_used_at, created_at) \
             SELECT (lpad(to_hex((i * 2654435761) % 4294967296), 8, '0') || lpad(to_hex(i), 24, '0'))::uuid, \
             'pk_' || lpad(i::text, 32, '0'), '{hash}', \
             '00000000-0000-0000-0000-000000000001', i::text, \
             CASE i % 100 WHEN 0 THEN TIMESTAMPTZ '{NEWER}Z' WHEN 1 THEN TIMESTAMPTZ '{OLDER}Z' END, \
             TIMESTAMPTZ '2025-01-01 00:00:00.000001Z' FROM generate_series(0::bigint, {last}) AS i",
            last = n - 1,
        ),
        _ => {
            // MySQL/MariaDB: no series function; a cross join of digit tables. Inserted
            // in key order: the table is clustered on `key_id`, and random inserts into
            // a table larger than the buffer pool take minutes.
            let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                          UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                          UNION ALL SELECT 8 UNION ALL SELECT 9)";
            let places = n.ilog10();
            let tables: Vec<String> = (0..places).map(|p| format!("{digits} AS t{p}")).collect();
            let sum: Vec<String> = (0..places)
                .map(|p| format!("t{p}.d * {}", 10u64.pow(p)))
                .collect();
            format!(
                "INSERT INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, last_used_at, created_at) \
                 SELECT UNHEX(CONCAT(LPAD(HEX((i * 2654435761) % 4294967296), 8, '0'), LPAD(HEX(i), 24, '0'))), \
                 CONCAT('pk_', LPAD(i, 32, '0')), '{hash}', \
                 UNHEX('00000000000000000000000000000001'), CAST(i AS CHAR), \
                 CASE i % 100 WHEN 0 THEN TIMESTAMP '{NEWER}' WHEN 1 THEN TIMESTAMP '{OLDER}' END, \
                 TIMESTAMP '2025-01-01 00:00:00.000001' FROM (SELECT {} AS i FROM {}) AS seq \
                 ORDER BY (i * 2654435761) % 4294967296, i",
                sum.join(" + "),
                tables.join(" CROSS JOIN ")
            )
        }
    };
    conn.execute_unprepared(&sql).await.unwrap();
}

/// A `YYYY-MM-DD HH:MM:SS.ffffff` time as sqlx stores it on SQLite.
fn sqlite_text(time: &str) -> String {
    format!("{}+00:00", time.replacen(' ', "T", 1))
}

/// Every `(key_id(i), BASE + i ms)` pair.
fn pairs(n: u64) -> Vec<(Uuid, DateTime<Utc>)> {
    (0..n)
        .map(|i| (key_id(i), base() + TimeDelta::milliseconds(i as i64)))
        .collect()
}

/// Rows holding what they must after the flush: the newer value kept where it
/// was stored, `BASE + i ms` everywhere else.
async fn rows_as_expected(db: &TestDb) -> i64 {
    let conn = db.repo.connection();
    let backend = conn.get_database_backend();
    let sql = match backend {
        DatabaseBackend::Sqlite => format!(
            "SELECT COUNT(*) FROM api_keys WHERE CASE WHEN CAST(title AS INTEGER) % 100 = 0 \
             THEN last_used_at = '{newer}' ELSE last_used_at = \
             strftime('%Y-%m-%dT%H:%M:%S', {secs} + ({micros} + 1000 * CAST(title AS INTEGER)) / 1000000, 'unixepoch') \
             || '.' || printf('%06d', ({micros} + 1000 * CAST(title AS INTEGER)) % 1000000) || '+00:00' END",
            newer = sqlite_text(NEWER),
            secs = BASE_MICROS / 1_000_000,
            micros = BASE_MICROS % 1_000_000,
        ),
        DatabaseBackend::Postgres => format!(
            "SELECT COUNT(*) FROM api_keys WHERE CASE WHEN title::bigint % 100 = 0 \
             THEN last_used_at = TIMESTAMPTZ '{NEWER}Z' ELSE last_used_at = \
             TIMESTAMPTZ '{}' + title::bigint * INTERVAL '1 millisecond' END",
            base().format("%Y-%m-%d %H:%M:%S%.6fZ")
        ),
        _ => format!(
            "SELECT COUNT(*) FROM api_keys WHERE CASE WHEN CAST(title AS UNSIGNED) % 100 = 0 \
             THEN last_used_at = TIMESTAMP '{NEWER}' ELSE last_used_at = \
             TIMESTAMPADD(MICROSECOND, CAST(title AS UNSIGNED) * 1000, TIMESTAMP '{}') END",
            base().format("%Y-%m-%d %H:%M:%S%.6f")
        ),
    };
    conn.query_one_raw(Statement::from_string(backend, sql))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

async fn every_use_lands(db: &TestDb, n: u64) {
    let started = Instant::now();
    fill(db, n).await;
    let filled = started.elapsed();
    let pairs = pairs(n);
    let before = rows_as_expected(db).await;
    assert!(before < n as i64 / 50, "{before} rows already as expected");

    let flush_started = Instant::now();
    db.repo.record_last_used(&pairs).await.unwrap();
    let flushed = flush_started.elapsed();
    assert_eq!(rows_as_expected(db).await, n as i64);
    eprintln!(
        "{} keys on {}: filled in {filled:.1?}, written in {flushed:.1?}, test {:.1?}",
        n,
        db.backend,
        started.elapsed()
    );
}

async fn a_hundred_thousand_uses_all_land(db: &TestDb) {
    every_use_lands(db, 100_000).await;
}

backend_tests!(a_hundred_thousand_uses_all_land);

/// A million on SQLite, PostgreSQL and MySQL. The adopted PostgreSQL table runs
/// the 100,000 case above; at a million it would repeat the PostgreSQL case
/// (the statement does not touch `status`) for another minute and a half of CI.
mod a_million_uses_all_land {
    use super::{common, every_use_lands};

    const N: u64 = 1_000_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "slow: a million rows (about a minute)"]
    async fn sqlite() {
        let db = common::sqlite().await;
        every_use_lands(&db, N).await;
        db.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs TEST_POSTGRES_URL (and slow: a million rows)"]
    async fn postgres() {
        let db = common::postgres().await;
        every_use_lands(&db, N).await;
        db.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs TEST_MYSQL_URL (and slow: a million rows)"]
    async fn mysql() {
        let db = common::mysql().await;
        every_use_lands(&db, N).await;
        db.cleanup().await;
    }
}
