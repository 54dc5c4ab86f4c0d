//! CONTRACT §7: a change made by any writer reaches every validator (replica)
//! on the same database, through the change feed.

mod common;

use std::time::{Duration, Instant};

use common::{
    TestDb,
    feed::{DEADLINE, eventually, replica},
    pepper,
};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tower_api_keys::{
    AccountId, ApiKeyValidator, CreatedKey, KeyManager, KeyPair, NewApiKey, feed::FeedMode,
    store::ApiKeyRepository,
};
use uuid::Uuid;

async fn cached_everywhere(replicas: &[ApiKeyValidator], key: &CreatedKey) {
    for replica in replicas {
        assert!(replica.validate(&key.credential()).await.is_ok());
    }
}

async fn every_replica_refuses_a_key_changed_by_any_writer(db: &TestDb) {
    let writer = replica(db.repo.clone(), Duration::from_millis(100)).await;
    let manager = KeyManager::new(writer.clone());
    let mut replicas = vec![writer];
    for _ in 0..2 {
        replicas.push(replica(db.connect_again().await, Duration::from_millis(100)).await);
    }
    // Plain SQL from a connection of its own, as an operator or the reference
    // service would write.
    let sql = db.connect_again().await;
    let account = AccountId::new(Uuid::new_v4());

    let revoked = manager
        .create(account, NewApiKey::new("revoked"))
        .await
        .unwrap();
    cached_everywhere(&replicas, &revoked).await;
    manager.revoke(account, revoked.key.key_id).await.unwrap();
    for replica in &replicas {
        eventually(
            replica,
            &revoked.credential(),
            false,
            "revoke through the manager",
        )
        .await;
    }

    let deleted = manager
        .create(account, NewApiKey::new("deleted"))
        .await
        .unwrap();
    cached_everywhere(&replicas, &deleted).await;
    manager.delete(account, deleted.key.key_id).await.unwrap();
    for replica in &replicas {
        eventually(
            replica,
            &deleted.credential(),
            false,
            "delete through the manager",
        )
        .await;
    }

    for (what, statement) in [
        (
            "UPDATE status",
            "UPDATE api_keys SET status = 'revoked' WHERE public_key = '{}'",
        ),
        ("DELETE", "DELETE FROM api_keys WHERE public_key = '{}'"),
        (
            "UPDATE expires_at",
            "UPDATE api_keys SET expires_at = created_at WHERE public_key = '{}'",
        ),
    ] {
        let key = manager.create(account, NewApiKey::new(what)).await.unwrap();
        cached_everywhere(&replicas, &key).await;
        sql.connection()
            .execute_unprepared(&statement.replace("{}", &key.key.public_key))
            .await
            .unwrap();
        for replica in &replicas {
            eventually(replica, &key.credential(), false, what).await;
        }
    }

    // An INSERT makes every replica forget that the public key was unknown.
    let late = KeyPair::generate().unwrap();
    for replica in &replicas {
        assert!(replica.validate(&late.credential()).await.is_err());
    }
    sql.insert(common::row(&late, account.into_inner(), None))
        .await
        .unwrap();
    for replica in &replicas {
        eventually(
            replica,
            &late.credential(),
            true,
            "INSERT of an unknown key",
        )
        .await;
    }

    // A write of last_used_at alone is not a change: nothing is evicted.
    let events: Vec<u64> = replicas
        .iter()
        .map(|replica| replica.change_feed().unwrap().events)
        .collect();
    for replica in &replicas {
        replica.flush().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (replica, before) in replicas.iter().zip(events) {
        assert_eq!(replica.change_feed().unwrap().events, before);
    }
    for replica in &replicas {
        replica.shutdown().await;
    }
}

/// A writer transaction that stays open across several polls and commits late
/// is still seen (MySQL/MariaDB and SQLite poll; PostgreSQL notifies at commit,
/// so the test does not apply to it).
async fn a_slow_writer_transaction_is_not_skipped(db: &TestDb) {
    let reader = replica(db.connect_again().await, Duration::from_millis(50)).await;
    assert_eq!(
        reader.change_feed().unwrap().mode,
        FeedMode::Poll,
        "{}: the test needs a polling feed",
        db.backend
    );
    let manager = KeyManager::new(ApiKeyValidator::new(db.repo.clone(), pepper()));
    let account = AccountId::new(Uuid::new_v4());
    let slow = manager
        .create(account, NewApiKey::new("slow"))
        .await
        .unwrap();
    let fast = manager
        .create(account, NewApiKey::new("fast"))
        .await
        .unwrap();
    cached_everywhere(std::slice::from_ref(&reader), &slow).await;
    cached_everywhere(std::slice::from_ref(&reader), &fast).await;

    let writer = db.connect_again().await;
    let transaction = writer.connection().begin().await.unwrap();
    transaction
        .execute_unprepared(&format!(
            "UPDATE api_keys SET status = 'revoked' WHERE public_key = '{}'",
            slow.key.public_key
        ))
        .await
        .unwrap();
    if db.backend == "mysql" {
        // A later change commits first: its change-log id is above the slow
        // one's, which is not visible yet.
        manager.revoke(account, fast.key.key_id).await.unwrap();
        eventually(&reader, &fast.credential(), false, "the fast change").await;
    }
    // Several polls pass while the transaction is open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(reader.validate(&slow.credential()).await.is_ok());
    transaction.commit().await.unwrap();
    eventually(&reader, &slow.credential(), false, "the late commit").await;
    reader.shutdown().await;
}

backend_tests!(every_replica_refuses_a_key_changed_by_any_writer);
backend_tests!(sqlite_and_mysql: a_slow_writer_transaction_is_not_skipped);

/// PostgreSQL: the listener's session is killed and a key is revoked at once;
/// the validator reconnects, catches up and still refuses the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn a_killed_listener_reconnects_and_catches_up() {
    let db = common::postgres().await;
    let validator = replica(db.repo.clone(), Duration::from_secs(1)).await;
    // The writer has no feed of its own: the one listener in this schema is the
    // validator's.
    let manager = KeyManager::new(
        ApiKeyValidator::builder(db.connect_again().await, pepper())
            .with_change_feed(false)
            .build(),
    );
    let account = AccountId::new(Uuid::new_v4());
    let key = manager.create(account, NewApiKey::new("k")).await.unwrap();
    cached_everywhere(std::slice::from_ref(&validator), &key).await;

    let admin = db.connect_again().await;
    let killed = admin
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
    assert_eq!(killed, 1, "exactly this validator's listener");
    admin
        .connection()
        .execute_unprepared(&format!(
            "UPDATE api_keys SET status = 'revoked' WHERE public_key = '{}'",
            key.key.public_key
        ))
        .await
        .unwrap();
    let started = Instant::now();
    while validator.validate(&key.credential()).await.is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the revoked key still validated 5 s after the listener was killed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Reconnected, and it keeps working.
    let started = Instant::now();
    while validator.change_feed().unwrap().connections < 2 {
        assert!(
            started.elapsed() < DEADLINE,
            "the listener did not reconnect"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = manager
        .create(account, NewApiKey::new("next"))
        .await
        .unwrap();
    cached_everywhere(std::slice::from_ref(&validator), &next).await;
    manager.revoke(account, next.key.key_id).await.unwrap();
    eventually(
        &validator,
        &next.credential(),
        false,
        "a revoke after reconnecting",
    )
    .await;
    validator.shutdown().await;
    db.cleanup().await;
}

/// A repository without a feed, or a validator with the feed turned off, has
/// no feed status; with it on, the status names the backend's mode.
#[tokio::test]
async fn the_feed_can_be_turned_off_and_reports_its_mode() {
    let db = common::sqlite().await;
    let off = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_change_feed(false)
        .build();
    assert!(off.change_feed().is_none());
    let memory = ApiKeyValidator::new(tower_api_keys::store::MemoryRepository::new(), pepper());
    assert!(memory.change_feed().is_none());
    let on = replica(db.repo.clone(), Duration::from_secs(1)).await;
    assert_eq!(on.change_feed().unwrap().mode, FeedMode::Poll);
    on.shutdown().await;
}
