//! CONTRACT §12: the change feed's bounds hold under faults, not only on a
//! quiet network. Each test stages one fault with real parts: a TCP forwarder
//! that freezes connections, a private PostgreSQL cluster that is stopped and
//! started, sessions killed on MariaDB, large and slow writer transactions, a
//! writer in another time zone, an emptied change log, rows replaced without a
//! delete trigger.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestDb,
    faults::{self, Forwarder, upstream_of},
    feed::{connected, eventually, replica, seen_events, within},
    pepper,
    postgres::PgCluster,
};
use sea_orm::{ConnectionTrait, Database, IsolationLevel, TransactionTrait};
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, KeyPair, NewApiKey, Rejection,
    store::{ApiKeyRecord, ApiKeyRepository, SeaOrmRepository},
};
use uuid::Uuid;

/// §7's bound, with room for a loaded 2-core CI machine; the bound itself is
/// measured by `benches/propagation.rs`.
const BOUND: Duration = Duration::from_secs(3);
/// §12: a connection that dies silently is noticed within 5 s.
const NOTICED: Duration = Duration::from_secs(5);

/// The account of every key the tests create through a manager (each test
/// has a database of its own).
const ACCOUNT: AccountId = AccountId::new(Uuid::from_u128(0x7a4b_1c2d));

/// A key manager on `repository` with no feed of its own.
fn manager(repository: SeaOrmRepository) -> KeyManager {
    KeyManager::new(
        ApiKeyValidator::builder(repository, pepper())
            .with_change_feed(false)
            .build(),
    )
}

/// Creates a key through `manager` and caches it on `replica` once the
/// replica has seen its insert (so that the insert's own event does not
/// evict it later).
async fn cached_key(manager: &KeyManager, replica: &ApiKeyValidator, title: &str) -> CreatedKey {
    let events = replica.change_feed().unwrap().events;
    let key = manager
        .create(ACCOUNT, NewApiKey::new(title))
        .await
        .unwrap();
    seen_events(replica, events + 1).await;
    // Eventually: after a fault the replica's pool may hold dead connections,
    // each of which fails one lookup.
    eventually(replica, &key.credential(), true, "the new key validates").await;
    key
}

/// Revokes `key`, retrying while the writer's own connections are dead (a
/// restart or killed sessions leave them in its pool).
async fn revoke(manager: &KeyManager, key: &CreatedKey) {
    for _ in 0..50 {
        if manager.revoke(ACCOUNT, key.key.key_id).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the writer could not revoke the key");
}

/// Runs plain SQL on a connection of its own.
async fn sql(db: &TestDb, statement: &str) {
    db.connect_again()
        .await
        .connection()
        .execute_unprepared(statement)
        .await
        .unwrap();
}

async fn a_frozen_feed_connection_is_noticed_and_replaced(db: &TestDb) {
    let forwarder = Forwarder::start(upstream_of(db.url())).await;
    let replica = connected(
        ApiKeyValidator::builder(db.connect_via(&forwarder).await, pepper())
            .with_change_poll_interval(Duration::from_millis(200))
            .with_store_timeout(Duration::from_millis(500))
            .build(),
    )
    .await;
    let manager = manager(db.connect_again().await);
    cached_key(&manager, &replica, "before").await;

    // The network drops every connection without a word: no byte passes, no
    // socket closes. New connections still pass.
    forwarder.freeze_connections();
    let noticed = faults::within(NOTICED, || !replica.change_feed().unwrap().connected).await;
    assert!(
        noticed.is_some(),
        "a frozen feed connection was still reported connected {NOTICED:?} later"
    );
    faults::within(Duration::from_secs(5), || {
        let feed = replica.change_feed().unwrap();
        feed.connected && feed.connections >= 2
    })
    .await
    .expect("the feed reconnects on its own");

    // Changes flow again: a key cached now is refused once it is revoked.
    let after = cached_key(&manager, &replica, "after").await;
    revoke(&manager, &after).await;
    within(&replica, &after.credential(), false, BOUND)
        .await
        .expect("a revocation after reconnecting reaches the replica");
    replica.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn postgres_a_frozen_listener_is_noticed_and_replaced() {
    let db = common::postgres().await;
    a_frozen_feed_connection_is_noticed_and_replaced(&db).await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_MYSQL_URL"]
async fn mysql_a_frozen_poll_connection_is_noticed_and_replaced() {
    let db = common::mysql().await;
    a_frozen_feed_connection_is_noticed_and_replaced(&db).await;
    db.cleanup().await;
}

/// PostgreSQL stopped and started again: the feed reports the outage for as
/// long as it lasts, listens again within a second of the database accepting
/// connections, and a key revoked right after the restart is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL's server binaries (initdb)"]
async fn a_restarted_postgres_is_listened_to_again_within_a_second() {
    if !cfg!(feature = "postgres") {
        panic!("the `postgres` feature is off; the restart test needs it");
    }
    let cluster = PgCluster::start();
    let url = cluster.url();
    let replica = replica(
        SeaOrmRepository::connect(&url).await.unwrap(),
        Duration::from_secs(1),
    )
    .await;
    let manager = manager(SeaOrmRepository::connect(&url).await.unwrap());
    let key = cached_key(&manager, &replica, "restart").await;

    tokio::task::block_in_place(|| cluster.stop());
    faults::within(NOTICED, || !replica.change_feed().unwrap().connected)
        .await
        .expect("the feed reports the stopped database");
    // Down is down: never reported connected while the database is away.
    for _ in 0..50 {
        assert!(!replica.change_feed().unwrap().connected);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tokio::task::block_in_place(|| cluster.start_again());
    let back = Instant::now();
    // Revoked right after the restart, before the feed is back.
    revoke(&manager, &key).await;
    faults::within(Duration::from_secs(5), || {
        replica.change_feed().unwrap().connected
    })
    .await
    .expect("the feed listens again");
    let reconnected = back.elapsed();
    assert!(
        reconnected < Duration::from_secs(2),
        "listening again took {reconnected:?} after the database accepted connections"
    );
    within(&replica, &key.credential(), false, BOUND)
        .await
        .expect("the key revoked during the reconnection is refused");
    // Changes flow: a key cached after the restart is refused on revocation.
    let next = cached_key(&manager, &replica, "next").await;
    revoke(&manager, &next).await;
    within(&replica, &next.credential(), false, BOUND)
        .await
        .expect("a revocation after the restart reaches the replica");
    replica.shutdown().await;
}

/// Validates every credential, concurrently; the number accepted.
async fn validate_all(validator: &ApiKeyValidator, credentials: &[String]) -> usize {
    let size = credentials.len().div_ceil(16).max(1);
    let chunks: Vec<Vec<String>> = credentials.chunks(size).map(<[String]>::to_vec).collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let validator = validator.clone();
            tokio::spawn(async move {
                let mut accepted = 0;
                for credential in chunk {
                    match validator.validate(&credential).await {
                        Ok(_) => accepted += 1,
                        Err(Rejection::InvalidCredential) => {}
                        Err(other) => panic!("unexpected refusal: {other:?}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += task.await.unwrap();
    }
    accepted
}

/// Inserts `n` active keys of one account written straight to the store,
/// titled `title`; their credentials.
async fn bulk_keys(repository: &SeaOrmRepository, n: usize, title: &str) -> Vec<String> {
    let account = Uuid::new_v4();
    let pairs: Vec<KeyPair> = (0..n).map(|_| KeyPair::generate().unwrap()).collect();
    let records: Vec<ApiKeyRecord> = pairs
        .iter()
        .map(|pair| ApiKeyRecord {
            title: title.to_owned(),
            ..common::row(pair, account, None)
        })
        .collect();
    repository.insert_many(records).await.unwrap();
    pairs.iter().map(KeyPair::credential).collect()
}

/// MySQL/MariaDB: a writer transaction of 12,000 change rows, open while a
/// later change commits, reaches the replica when it commits (the poller keeps
/// its ids as one open range, with no cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_MYSQL_URL"]
async fn mysql_a_large_transaction_open_across_a_later_commit_is_not_lost() {
    let db = common::mysql().await;
    let credentials = bulk_keys(&db.repo, 12_000, "bulk").await;
    let manager = manager(db.connect_again().await);
    let other = manager
        .create(ACCOUNT, NewApiKey::new("other"))
        .await
        .unwrap();
    let replica = connected(
        ApiKeyValidator::builder(db.connect_again().await, pepper())
            .with_change_poll_interval(Duration::from_millis(200))
            .with_cache_capacity(100_000)
            .build(),
    )
    .await;
    assert_eq!(
        validate_all(&replica, &credentials).await,
        credentials.len()
    );
    assert!(replica.validate(&other.credential()).await.is_ok());

    let writer = db.connect_again().await;
    let transaction = writer
        .connection()
        .begin_with_config(Some(IsolationLevel::ReadCommitted), None)
        .await
        .unwrap();
    transaction
        .execute_unprepared("UPDATE api_keys SET status = 'revoked' WHERE title = 'bulk'")
        .await
        .unwrap();
    // A later change commits first: its change-log id is above all 12,000.
    revoke(&manager, &other).await;
    within(&replica, &other.credential(), false, BOUND)
        .await
        .expect("the later change is read");
    // Polls pass with the large transaction still open; its keys still
    // validate (and are cached again if anything evicted them).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        validate_all(&replica, &credentials).await,
        credentials.len()
    );

    let cached = replica.cached_entries().known;
    let large = credentials.len() as u64;
    assert!(cached >= large);
    transaction.commit().await.unwrap();
    faults::within(BOUND, || replica.cached_entries().known <= cached - large)
        .await
        .expect("every key of the large transaction leaves the replica's cache");
    assert_eq!(validate_all(&replica, &credentials).await, 0);
    replica.shutdown().await;
    db.cleanup().await;
}

/// MySQL/MariaDB: a plain-SQL revoke from a session in another time zone is
/// not pruned before replicas read it (the log is pruned by id, and stamped in
/// UTC), even by a replica that starts right after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_MYSQL_URL"]
async fn mysql_a_writer_in_another_time_zone_is_not_pruned_early() {
    let db = common::mysql().await;
    let manager = manager(db.connect_again().await);
    let replica = replica(db.connect_again().await, Duration::from_secs(2)).await;
    let key = cached_key(&manager, &replica, "zoned").await;

    let writer = db.connect_again().await;
    let transaction = writer.connection().begin().await.unwrap();
    transaction
        .execute_unprepared("SET time_zone = '-05:00'")
        .await
        .unwrap();
    transaction
        .execute_unprepared(&format!(
            "UPDATE api_keys SET status = 'revoked' WHERE public_key = '{}'",
            key.key.public_key
        ))
        .await
        .unwrap();
    transaction.commit().await.unwrap();
    // Another replica starts (and may prune) at once.
    let late = replica_started(&db).await;

    within(&replica, &key.credential(), false, Duration::from_secs(5))
        .await
        .expect("the revoke from a -05:00 session reaches the replica");
    let skew = writer
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::MySql,
            "SELECT ABS(TIMESTAMPDIFF(SECOND, changed_at, UTC_TIMESTAMP(6))) AS skew \
             FROM tower_api_keys_changes ORDER BY id DESC LIMIT 1",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "skew")
        .unwrap();
    assert!(skew < 60, "the change was stamped {skew} s off UTC");
    late.shutdown().await;
    replica.shutdown().await;
    db.cleanup().await;
}

async fn replica_started(db: &TestDb) -> ApiKeyValidator {
    replica(db.connect_again().await, Duration::from_millis(100)).await
}

/// MySQL/MariaDB: a change log emptied by pruning is not an id reset (no
/// cache is emptied), the next change with a much higher id is read at once,
/// and a replica that starts on an empty log skips no open id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_MYSQL_URL"]
async fn mysql_an_emptied_change_log_is_not_a_reset() {
    let db = common::mysql().await;
    let manager = manager(db.connect_again().await);
    let replica = replica_started(&db).await;
    let first = cached_key(&manager, &replica, "first").await;
    let connections = replica.change_feed().unwrap().connections;

    sql(&db, "DELETE FROM tower_api_keys_changes").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        replica.cached_entries().known,
        1,
        "an emptied log emptied the cache"
    );
    assert_eq!(replica.change_feed().unwrap().connections, connections);

    sql(
        &db,
        "ALTER TABLE tower_api_keys_changes AUTO_INCREMENT = 5000000",
    )
    .await;
    revoke(&manager, &first).await;
    within(&replica, &first.credential(), false, BOUND)
        .await
        .expect("a change far above the last id is read");

    // A replica starting on an empty log while a transaction holds the id
    // just below the first visible one.
    let held = cached_key(&manager, &replica, "held").await;
    let later = cached_key(&manager, &replica, "later").await;
    sql(&db, "DELETE FROM tower_api_keys_changes").await;
    sql(
        &db,
        "ALTER TABLE tower_api_keys_changes AUTO_INCREMENT = 6000000",
    )
    .await;
    let writer = db.connect_again().await;
    let transaction = writer.connection().begin().await.unwrap();
    transaction
        .execute_unprepared(&format!(
            "UPDATE api_keys SET status = 'revoked' WHERE public_key = '{}'",
            held.key.public_key
        ))
        .await
        .unwrap();
    revoke(&manager, &later).await;
    let starting = replica_started(&db).await;
    assert!(starting.validate(&held.credential()).await.is_ok());
    transaction.commit().await.unwrap();
    within(&starting, &held.credential(), false, BOUND)
        .await
        .expect("the open id below the first visible one is read when it commits");
    starting.shutdown().await;
    replica.shutdown().await;
    db.cleanup().await;
}

/// MariaDB: every session of the database killed (a failover, a proxy
/// restart); a revoke made right after reaches the other replica within the
/// bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_MYSQL_URL"]
async fn mysql_every_session_killed_then_a_revoke_reaches_every_replica() {
    let db = common::mysql().await;
    let manager = manager(db.connect_again().await);
    let replica = replica(db.connect_again().await, Duration::from_secs(1)).await;
    let key = cached_key(&manager, &replica, "killed").await;
    // The replica's pool holds several idle connections, as a busy one does.
    let unknown: Vec<String> = (0..40)
        .map(|_| KeyPair::generate().unwrap().credential())
        .collect();
    assert_eq!(validate_all(&replica, &unknown).await, 0);

    let database = db.url().rsplit('/').next().unwrap().to_owned();
    let admin = Database::connect(std::env::var("TEST_MYSQL_URL").unwrap())
        .await
        .unwrap();
    let sessions = admin
        .query_all_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::MySql,
            format!(
                "SELECT CAST(ID AS SIGNED) AS id FROM information_schema.PROCESSLIST \
                 WHERE DB = '{database}'"
            ),
        ))
        .await
        .unwrap();
    assert!(!sessions.is_empty());
    for session in sessions {
        let id: i64 = session.try_get("", "id").unwrap();
        admin.execute_unprepared(&format!("KILL {id}")).await.ok();
    }
    admin.close().await.ok();

    revoke(&manager, &key).await;
    within(&replica, &key.credential(), false, BOUND)
        .await
        .expect("a revoke after every session was killed reaches the replica");
    replica.shutdown().await;
    db.cleanup().await;
}

/// SQLite and MySQL: a row replaced (`INSERT OR REPLACE` / `REPLACE`) under
/// another public key takes the old one out of every cache, although SQLite
/// fires no delete trigger for it.
async fn a_replaced_row_reaches_every_replica(db: &TestDb) {
    let verb = match db.backend {
        "sqlite" => "INSERT OR REPLACE",
        "mysql" => "REPLACE",
        other => panic!("{other}: the test needs SQLite or MySQL"),
    };
    let manager = manager(db.connect_again().await);
    let replica = replica_started(db).await;
    let key = cached_key(&manager, &replica, "replaced").await;
    let successor = KeyPair::generate().unwrap();
    sql(
        db,
        &format!(
            "{verb} INTO api_keys (key_id, public_key, secret_key_hash, account_id, title, status, \
             created_at) SELECT key_id, '{}', secret_key_hash, account_id, title, status, \
             created_at FROM api_keys WHERE public_key = '{}'",
            successor.public_key.as_str(),
            key.key.public_key
        ),
    )
    .await;
    within(&replica, &key.credential(), false, BOUND)
        .await
        .expect("the replaced row's public key leaves the cache");
    replica.shutdown().await;
}

backend_tests!(sqlite_and_mysql: a_replaced_row_reaches_every_replica);

/// While the feed is down, a shorter feed-down TTL makes a replica read its
/// keys again (a revoke made elsewhere is seen without the feed), and a zero
/// stale-if-error fails closed once the store is gone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn postgres_feed_down_ttl_and_stale_if_error_are_separate() {
    let db = common::postgres().await;
    let forwarder = Forwarder::start(upstream_of(db.url())).await;
    let short = connected(
        ApiKeyValidator::builder(db.connect_via(&forwarder).await, pepper())
            .with_feed_down_ttl(Duration::from_millis(300))
            .with_stale_if_error(Duration::ZERO)
            .with_store_timeout(Duration::from_millis(500))
            .build(),
    )
    .await;
    let default = connected(
        ApiKeyValidator::builder(db.connect_via(&forwarder).await, pepper())
            .with_store_timeout(Duration::from_millis(500))
            .build(),
    )
    .await;
    let manager = manager(db.connect_again().await);
    let revoked = cached_key(&manager, &short, "revoked").await;
    let kept = cached_key(&manager, &short, "kept").await;
    for key in [&revoked, &kept] {
        assert!(default.validate(&key.credential()).await.is_ok());
    }

    // The listeners die and cannot come back; the query pools' connections
    // keep working.
    forwarder.refuse_new();
    let killed = db
        .connect_again()
        .await
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!(
                "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                 WHERE application_name = left('tower-api-keys change feed: {}', 63)",
                db.application_name()
            ),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(killed, 2, "both listeners");
    faults::within(NOTICED, || {
        !short.change_feed().unwrap().connected && !default.change_feed().unwrap().connected
    })
    .await
    .expect("both feeds report the outage");

    revoke(&manager, &revoked).await;
    within(&short, &revoked.credential(), false, BOUND)
        .await
        .expect("the feed-down TTL re-reads the key");
    assert!(
        default.validate(&revoked.credential()).await.is_ok(),
        "by default a cached key is trusted for the positive TTL while the feed is down"
    );

    // The store goes too: past its trust, the key is refused (503), not served
    // stale.
    forwarder.cut();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        short.validate(&kept.credential()).await.map(|_| ()),
        Err(Rejection::StoreUnavailable)
    );
    assert!(default.validate(&kept.credential()).await.is_ok());
    short.shutdown().await;
    default.shutdown().await;
    db.cleanup().await;
}
