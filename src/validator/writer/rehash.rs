//! The re-hash queue: keys found hashed under a previous pepper, waiting to
//! be written again under the current one.

use std::{collections::HashMap, sync::Mutex};

use uuid::Uuid;

use crate::{
    store::{HashRewrite, LAST_USED_CHUNK, Store, StoreError},
    sync::lock,
};

/// Pending re-hashes, one per key.
pub(super) struct Rehashes(Mutex<HashMap<Uuid, HashRewrite>>);

impl Rehashes {
    pub(super) fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    /// Queues a key's re-hash (a later one for the same key replaces it).
    pub(super) fn queue(&self, rewrite: HashRewrite) {
        lock(&self.0).insert(rewrite.key_id, rewrite);
    }

    /// Re-hashes waiting to be written.
    pub(super) fn len(&self) -> usize {
        lock(&self.0).len()
    }

    /// Writes the pending re-hashes to `store`, as the `last_used_at` values
    /// are written: chunk by chunk, putting back what was not written.
    pub(super) async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let mut batch: Vec<HashRewrite> =
            std::mem::take(&mut *lock(&self.0)).into_values().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        batch.sort_unstable_by_key(|rewrite| rewrite.key_id);
        let mut written = 0;
        for chunk in batch.chunks(LAST_USED_CHUNK) {
            if let Err(err) = store.rewrite_hashes(chunk).await {
                let mut pending = lock(&self.0);
                for rewrite in &batch[written..] {
                    pending
                        .entry(rewrite.key_id)
                        .or_insert_with(|| rewrite.clone());
                }
                tracing::warn!(
                    error = %err,
                    written,
                    pending = pending.len(),
                    "re-hashing keys under the current pepper failed; the rest will be retried"
                );
                return Err(err);
            }
            written += chunk.len();
        }
        tracing::debug!(keys = written, "re-hashed keys under the current pepper");
        Ok(written)
    }
}
