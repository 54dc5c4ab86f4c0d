//! Fixtures for the crate's own unit tests: a pepper, a row written as another
//! process would have, and the store double of [`crate::testing`] under the
//! name the unit tests know it by.

use chrono::Utc;
use uuid::Uuid;

use crate::{
    key::KeyPair,
    key::hash::KeyHasher,
    key::pepper::Pepper,
    store::{ApiKeyRecord, KeyStatus},
};

/// The unit tests' store double: a [`Probe`](crate::testing::Probe) over a
/// [`MemoryRepository`](crate::store::MemoryRepository).
pub(crate) type Scripted = crate::testing::Probe;

pub(crate) const PEPPER: &str = "unit-test-pepper-0123456789";

pub(crate) fn pepper() -> Pepper {
    Pepper::try_from(PEPPER).unwrap()
}

/// A row for `pair`, as another process would have written it.
pub(crate) fn row(pair: &KeyPair, account_id: Uuid) -> ApiKeyRecord {
    ApiKeyRecord {
        key_id: Uuid::new_v4(),
        public_key: pair.public_key.as_str().to_owned(),
        secret_key_hash: KeyHasher::new(&pepper())
            .hash(pair.secret_key.expose())
            .to_hex()
            .into(),
        account_id,
        title: "unit".into(),
        description: None,
        status: KeyStatus::Active,
        expires_at: None,
        last_used_at: None,
        scopes: None,
        metadata: None,
        rotated_from: None,
        rate_limit: None,
        allowed_cidrs: None,
        created_at: Some(Utc::now()),
        pepper_id: None,
    }
}
