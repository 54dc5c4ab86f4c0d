//! The reference service's own PostgreSQL table, adopted as it is: `status` is
//! the ENUM `api_key_status` (nullable), `created_at` is nullable, two CHECK
//! constraints hold. Rows written the way the reference service writes them
//! validate and list; everything the crate writes keeps the table as it was.
//! Needs `TEST_POSTGRES_URL`: ignored unless run with `--include-ignored` (CI does).
//!
//! Every test of the shared suites (`tests/layer.rs`, `tests/router.rs`, …) also
//! runs on this table, as the `postgres_adopted` backend.

mod common;

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use common::{Harness, PEPPER, TestDb, pepper};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};
use serde_json::Value as Json;
use tower_api_keys::{
    AccountId, ApiKeyValidator, KeyPair, NewApiKey, Pepper,
    hash::KeyHasher,
    store::{ApiKeyRepository, KeyStatus},
};
use uuid::Uuid;

async fn execute(db: &TestDb, sql: &str, values: Vec<Value>) -> u64 {
    db.repo
        .connection()
        .execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .rows_affected()
}

async fn query_text(db: &TestDb, sql: &str, values: Vec<Value>) -> Vec<String> {
    db.repo
        .connection()
        .query_all_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

async fn count(db: &TestDb, sql: &str, values: Vec<Value>) -> i64 {
    db.repo
        .connection()
        .query_one_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            sql,
            values,
        ))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap()
}

/// Writes a key the way the reference service does: its own SQL, an explicit
/// `'…'::api_key_status` (or NULL), database defaults for `key_id` and, unless
/// given, `created_at`. Returns the generated `key_id`.
async fn reference_insert(
    db: &TestDb,
    pair: &KeyPair,
    account: Uuid,
    status: Option<&str>,
    created_at: Option<Option<chrono::DateTime<Utc>>>,
) -> Uuid {
    let hash = KeyHasher::new(&Pepper::try_from(PEPPER).unwrap())
        .hash(pair.secret_key.expose())
        .to_hex();
    let status_sql = match status {
        Some(label) => format!("'{label}'::api_key_status"),
        None => "NULL".to_owned(),
    };
    let mut values: Vec<Value> = vec![
        pair.public_key.as_str().into(),
        hash.into(),
        account.into(),
        "written by the reference service".into(),
    ];
    let (created_column, created_value) = match created_at {
        None => ("", String::new()),
        Some(at) => {
            values.push(at.into());
            (", created_at", ", $5".to_owned())
        }
    };
    let sql = format!(
        "INSERT INTO api_keys (public_key, secret_key_hash, account_id, title, status{created_column}) \
         VALUES ($1, $2, $3, $4, {status_sql}{created_value}) RETURNING key_id::text"
    );
    query_text(db, &sql, values).await[0].parse().unwrap()
}

async fn list(h: &Harness, account: Uuid) -> Vec<Json> {
    let response = h
        .client
        .get(h.url("/v1/api-keys"))
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json::<Vec<Json>>().await.unwrap()
}

async fn assert_invalid(response: reqwest::Response) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["detail"], "Invalid API key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn a_row_written_by_the_reference_service_validates() {
    let db = common::postgres_adopted().await;
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = Uuid::new_v4();
    let pair = KeyPair::generate().unwrap();
    let key_id = reference_insert(&db, &pair, account, Some("active"), None).await;

    let response = h.whoami(&pair.credential()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Json = response.json().await.unwrap();
    assert_eq!(body["account_id"], account.to_string());
    assert_eq!(body["key_id"], key_id.to_string());

    let fresh = ApiKeyValidator::new(db.repo.clone(), pepper());
    let key = fresh.validate(&pair.credential()).await.unwrap();
    assert_eq!(key.key_id().into_inner(), key_id);
    let record = db
        .repo
        .find_by_public_key(pair.public_key.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, KeyStatus::Active);
    assert!(record.created_at.is_some(), "the column default applies");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn null_status_and_created_at_read_as_active_and_list_last() {
    let db = common::postgres_adopted().await;
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = Uuid::new_v4();
    let bare = KeyPair::generate().unwrap();
    let bare_id = reference_insert(&db, &bare, account, None, Some(None)).await;
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM api_keys WHERE key_id = $1 AND status IS NULL AND created_at IS NULL",
            vec![bare_id.into()],
        )
        .await,
        1
    );
    // Two keys with a creation time, one older and one newer than the bare row's insertion.
    let older = KeyPair::generate().unwrap();
    let older_id = reference_insert(
        &db,
        &older,
        account,
        Some("active"),
        Some(Some(Utc::now() - TimeDelta::days(3))),
    )
    .await;
    let newer = h
        .manager
        .create(AccountId::new(account), NewApiKey::new("newer"))
        .await
        .unwrap();

    let keys = list(&h, account).await;
    let ids: Vec<&str> = keys.iter().map(|k| k["key_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[0], newer.key.key_id.to_string());
    assert_eq!(ids[1], older_id.to_string());
    assert_eq!(ids[2], bare_id.to_string(), "no created_at: listed last");
    let bare_json = &keys[2];
    assert!(bare_json["created_at"].is_null(), "{bare_json}");
    assert_eq!(bare_json["status"], "active");
    assert!(keys[..2].iter().all(|k| k["created_at"].is_string()));

    let shown = h
        .manager
        .get(AccountId::new(account), bare_id.into())
        .await
        .unwrap();
    assert_eq!(shown.created_at, None);
    assert_eq!(
        serde_json::to_value(&shown).unwrap()["created_at"],
        Json::Null
    );

    assert_eq!(h.whoami(&bare.credential()).await.status(), StatusCode::OK);
    assert_eq!(h.whoami(&older.credential()).await.status(), StatusCode::OK);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn a_stored_expired_status_is_refused_and_lists_as_expired() {
    let db = common::postgres_adopted().await;
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    let account = Uuid::new_v4();
    let expired = KeyPair::generate().unwrap();
    let expired_id = reference_insert(&db, &expired, account, Some("expired"), None).await;
    let revoked = KeyPair::generate().unwrap();
    reference_insert(&db, &revoked, account, Some("revoked"), None).await;

    assert_invalid(h.whoami(&expired.credential()).await).await;
    assert_invalid(h.whoami(&revoked.credential()).await).await;
    // The same bytes as for a key that does not exist.
    let refused = h.whoami(&expired.credential()).await.bytes().await.unwrap();
    let unknown = h
        .whoami(&KeyPair::generate().unwrap().credential())
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(refused, unknown);

    let record = db
        .repo
        .get(account, expired_id)
        .await
        .unwrap()
        .expect("the row reads");
    assert_eq!(record.status, KeyStatus::Expired);
    let keys = list(&h, account).await;
    let listed = keys
        .iter()
        .find(|k| k["key_id"] == expired_id.to_string())
        .unwrap();
    assert_eq!(listed["status"], "expired");
    let shown = h
        .client
        .get(h.url(&format!("/v1/api-keys/{expired_id}")))
        .header("x-account-id", account.to_string())
        .send()
        .await
        .unwrap()
        .json::<Json>()
        .await
        .unwrap();
    assert_eq!(shown["status"], "expired");
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn every_write_keeps_the_enum_the_defaults_and_the_constraints() {
    let db = common::postgres_adopted().await;
    let validator = ApiKeyValidator::builder(db.repo.clone(), pepper())
        .with_flush_interval(Duration::from_secs(3600))
        .build();
    let h = Harness::start(validator).await;
    let account = Uuid::new_v4();
    let owner = AccountId::new(account);

    // Create: through the router and through the manager.
    let response = h
        .client
        .post(h.url("/v1/api-keys"))
        .header("x-account-id", account.to_string())
        .json(&serde_json::json!({"title": "  over HTTP  ", "expires_in_days": 30}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Json = response.json().await.unwrap();
    let http_credential = format!(
        "{}:{}",
        created["public_key"].as_str().unwrap(),
        created["secret_key"].as_str().unwrap()
    );
    let kept = h
        .manager
        .create(owner, NewApiKey::new("kept").with_description("d"))
        .await
        .unwrap();
    let revoked = h
        .manager
        .create(owner, NewApiKey::new("to revoke"))
        .await
        .unwrap();
    let deleted = h
        .manager
        .create(owner, NewApiKey::new("to delete"))
        .await
        .unwrap();
    assert_eq!(
        query_text(
            &db,
            "SELECT status::text FROM api_keys WHERE key_id = $1",
            vec![kept.key.key_id.into_inner().into()],
        )
        .await,
        ["active"]
    );

    // Use: validation and the batched last_used_at write.
    let before = Utc::now() - TimeDelta::seconds(1);
    for credential in [&http_credential, &kept.credential(), &revoked.credential()] {
        assert_eq!(h.whoami(credential).await.status(), StatusCode::OK);
    }
    assert_eq!(h.validator.flush().await.unwrap(), 3);
    let used = h
        .manager
        .get(owner, kept.key.key_id)
        .await
        .unwrap()
        .last_used_at;
    assert!(used.is_some_and(|at| at >= before), "{used:?}");

    // Revoke (twice: idempotent) and delete.
    for _ in 0..2 {
        let info = h.manager.revoke(owner, revoked.key.key_id).await.unwrap();
        assert_eq!(info.status, tower_api_keys::store::EffectiveStatus::Revoked);
    }
    assert_invalid(h.whoami(&revoked.credential()).await).await;
    assert_eq!(
        query_text(
            &db,
            "SELECT status::text FROM api_keys WHERE key_id = $1",
            vec![revoked.key.key_id.into_inner().into()],
        )
        .await,
        ["revoked"]
    );
    h.manager.delete(owner, deleted.key.key_id).await.unwrap();
    assert_invalid(h.whoami(&deleted.credential()).await).await;

    let keys = list(&h, account).await;
    let statuses: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k["title"].as_str().unwrap(), k["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("to revoke", "revoked"),
            ("kept", "active"),
            ("over HTTP", "active")
        ]
    );

    // The table is as the reference service made it.
    let column = query_text(
        &db,
        "SELECT concat_ws('|', c.data_type, c.udt_name, c.is_nullable, c.column_default, t.typtype) \
         FROM information_schema.columns c JOIN pg_type t ON t.typname = c.udt_name \
         AND t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = c.udt_schema) \
         WHERE c.table_schema = current_schema() AND c.table_name = 'api_keys' \
         AND c.column_name = 'status'",
        vec![],
    )
    .await;
    assert_eq!(
        column,
        ["USER-DEFINED|api_key_status|YES|'active'::api_key_status|e"]
    );
    let labels = query_text(
        &db,
        "SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) FROM pg_enum \
         WHERE enumtypid = to_regtype('api_key_status')",
        vec![],
    )
    .await;
    assert_eq!(labels, ["active,revoked,expired"]);
    let defaults = query_text(
        &db,
        "SELECT column_name || '=' || coalesce(column_default, '') || '|' || is_nullable \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         AND table_name = 'api_keys' AND column_name IN ('key_id', 'created_at') ORDER BY column_name",
        vec![],
    )
    .await;
    assert_eq!(
        defaults,
        ["created_at=now()|YES", "key_id=gen_random_uuid()|NO"]
    );
    let checks = query_text(
        &db,
        "SELECT conname::text FROM pg_constraint WHERE conrelid = to_regclass('api_keys') \
         AND contype = 'c' ORDER BY conname",
        vec![],
    )
    .await;
    assert_eq!(
        checks,
        ["api_keys_public_key_format", "api_keys_title_not_blank"]
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM api_keys \
             WHERE NOT (LENGTH(TRIM(title)) > 0 AND public_key ~ '^pk_[a-zA-Z0-9]{32}$')",
            vec![],
        )
        .await,
        0
    );
    // The table's own account_id index is used; the migration added none.
    assert_eq!(
        query_text(
            &db,
            "SELECT string_agg(c.relname::text, ',' ORDER BY c.relname) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass('api_keys') AND a.attname = 'account_id'",
            vec![],
        )
        .await,
        ["ix_api_keys_account_id"]
    );
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn the_migration_runs_again_on_the_adopted_table() {
    use sea_orm_migration::MigratorTrait;
    let db = common::postgres_adopted().await;
    let pair = KeyPair::generate().unwrap();
    let account = Uuid::new_v4();
    reference_insert(&db, &pair, account, Some("active"), None).await;
    tower_api_keys::migration::Migrator::up(db.repo.connection(), None)
        .await
        .unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM tower_api_keys_migrations",
            vec![]
        )
        .await,
        tower_api_keys::migration::migrations().len() as i64
    );
    let validator = ApiKeyValidator::new(db.repo.clone(), pepper());
    assert!(validator.validate(&pair.credential()).await.is_ok());
    db.cleanup().await;
}

/// A column of a type the crate cannot read: the error names the column and
/// the types, on the request path (the log line of a `503`) and in management.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs TEST_POSTGRES_URL"]
async fn a_decode_failure_names_the_column_and_the_type() {
    let db = common::postgres_adopted().await;
    let pair = KeyPair::generate().unwrap();
    let account = Uuid::new_v4();
    let key_id = reference_insert(&db, &pair, account, Some("active"), None).await;
    execute(
        &db,
        "ALTER TABLE api_keys ALTER COLUMN expires_at TYPE text USING expires_at::text",
        vec![],
    )
    .await;
    // A NULL decodes as any type: give the row a value.
    execute(
        &db,
        "UPDATE api_keys SET expires_at = '2099-01-01T00:00:00Z'",
        vec![],
    )
    .await;
    let lookup = db
        .repo
        .find_by_public_key(pair.public_key.as_str())
        .await
        .unwrap_err()
        .to_string();
    let get = db.repo.get(account, key_id).await.unwrap_err().to_string();
    for message in [&lookup, &get] {
        assert!(message.contains("expires_at"), "{message}");
        assert!(message.to_lowercase().contains("text"), "{message}");
        assert!(message.contains("TIMESTAMPTZ"), "{message}");
    }
    let h = Harness::start(ApiKeyValidator::new(db.repo.clone(), pepper())).await;
    assert_eq!(
        h.whoami(&pair.credential()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    db.cleanup().await;
}
