//! Revocation by whoever presents the full credential: the key holder, or a
//! secret scanner that found the key leaked.

use super::{KeyManager, ManagerError, to_completion};
use crate::{
    audit::{Actor, ChangeReason, ChangeRecord},
    identity::{AccountId, ApiKeyId},
    policy::rejection::Rejection,
    store::KeyStatus,
};

/// A key that a leak report named with its verified secret, as
/// [`KeyManager::revoke_leaked`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeakedKey {
    /// The account that owns the key.
    pub account_id: AccountId,
    /// The key's id.
    pub key_id: ApiKeyId,
    /// Whether this report revoked it: `false` when it was revoked already
    /// (a repeated report).
    pub newly_revoked: bool,
}

/// A credential as a key holder presents it for revocation, without ASCII
/// whitespace around it and without a `Bearer ` prefix (the scheme in any
/// case, then any ASCII whitespace).
fn presented_credential(text: &str) -> &str {
    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
    match text.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            rest.trim_start_matches(|c: char| c.is_ascii_whitespace())
        }
        _ => text,
    }
}

impl KeyManager {
    /// Revokes the key a full credential names, for its holder (for example a
    /// leaked key reported by a secret scanner). Succeeds the same way whether
    /// or not the credential was valid, malformed, unknown or already revoked,
    /// so that it cannot be used to test keys; the credential is checked by the
    /// same constant-time path as the layer. ASCII whitespace around the
    /// credential and a `Bearer ` prefix (as copied from a header) are
    /// removed first. [`ManagerError::Unavailable`] or [`ManagerError::Store`]
    /// only when the store could not be reached.
    pub async fn revoke_by_credential(&self, credential: &str) -> Result<(), ManagerError> {
        let credential = credential.to_owned();
        let this = self.clone();
        to_completion(async move { this.revoke_by_credential_now(&credential).await }).await
    }

    async fn revoke_by_credential_now(&self, credential: &str) -> Result<(), ManagerError> {
        let credential = presented_credential(credential);
        let key = match self.validator.validate(credential).await {
            Ok(key) => key,
            Err(Rejection::StoreUnavailable) => return Err(ManagerError::Unavailable),
            Err(Rejection::MalformedCredential | Rejection::MissingCredential) => {
                self.verify_unparsed(credential);
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let change = ChangeRecord {
            actor: Some(Actor::holder()),
            source: self.change.source,
            reason: ChangeReason::Holder,
        };
        self.revoke_and_evict(key.account_id(), key.key_id(), key.public_key(), &change)
            .await?;
        tracing::info!(key_id = %key.key_id(), account_id = %key.account_id(), "API key revoked by its holder");
        Ok(())
    }
}

impl KeyManager {
    /// Revokes the key a leaked credential names, as a secret scanner reports
    /// it, and says whose key it was: `Some` when the credential is a key of
    /// this store **and its secret verifies** (one HMAC, compared in constant
    /// time), whatever the key's status or expiry, so that a repeated report
    /// of a key revoked already is still recognised; `None` for anything else
    /// (malformed, unknown public key, wrong secret), after the same one HMAC.
    ///
    /// The credential is read by the same parser as the layer's. The row is
    /// read from the store, not the cache, and the revoke takes effect like
    /// any other: this process's cache at once, other replicas through the
    /// change feed. [`ManagerError::Store`] or [`ManagerError::Unavailable`]
    /// only when the store could not be reached.
    pub async fn revoke_leaked(&self, credential: &str) -> Result<Option<LeakedKey>, ManagerError> {
        let credential = credential.to_owned();
        let this = self.clone();
        to_completion(async move { this.revoke_leaked_now(&credential).await }).await
    }

    async fn revoke_leaked_now(&self, text: &str) -> Result<Option<LeakedKey>, ManagerError> {
        let Ok(credential) = self.validator.parse(text) else {
            self.verify_unparsed(text);
            return Ok(None);
        };
        let found = self
            .store
            .find_by_public_key(credential.public_key())
            .await?
            // A case-insensitive collation (MySQL) may match another spelling:
            // only the exact public key is this key.
            .filter(|record| record.public_key == credential.public_key());
        let Some(record) = found else {
            self.validator.verify_dummy(credential.secret_key());
            return Ok(None);
        };
        if !self
            .validator
            .secret_matches(credential.secret_key(), &record)
        {
            return Ok(None);
        }
        let leaked = LeakedKey {
            account_id: record.account_id.into(),
            key_id: record.key_id.into(),
            newly_revoked: record.status != KeyStatus::Revoked,
        };
        if leaked.newly_revoked {
            // The report's URL, when the caller gave one through `acting`.
            let change = match &self.change.reason {
                ChangeReason::Leaked { .. } => self.change.clone(),
                _ => self
                    .change
                    .clone()
                    .because(ChangeReason::Leaked { url: None }),
            };
            self.revoke_and_evict(
                leaked.account_id,
                leaked.key_id,
                &record.public_key,
                &change,
            )
            .await?;
            tracing::info!(
                key_id = %leaked.key_id,
                account_id = %leaked.account_id,
                "API key revoked: reported leaked"
            );
        } else {
            // Revoked elsewhere: this cache may not have heard yet.
            self.validator.invalidate(&record.public_key);
        }
        Ok(Some(leaked))
    }
}

impl KeyManager {
    /// The one HMAC a refusal costs, spent on text that did not parse as a
    /// credential: the layer refuses it before any HMAC, but a revocation's
    /// answer must not come back faster than for an unknown key.
    fn verify_unparsed(&self, text: &str) {
        let secret = text.get(text.len().saturating_sub(35)..);
        self.validator.verify_dummy(secret.unwrap_or(text));
    }

    /// Revokes a key found by its credential and evicts it from this
    /// process's cache, whether or not the write succeeded (a write that timed
    /// out may still have committed).
    async fn revoke_and_evict(
        &self,
        account: AccountId,
        key_id: ApiKeyId,
        public_key: &str,
        change: &ChangeRecord,
    ) -> Result<(), ManagerError> {
        let revoked = self
            .store
            .revoke(account.into_inner(), key_id.into_inner(), change)
            .await;
        self.validator.invalidate(public_key);
        revoked?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ApiKeyValidator, KeyPair, NewApiKey, store::MemoryRepository, testing::fixtures::pepper,
    };

    #[test]
    fn a_presented_credential_loses_whitespace_and_a_bearer_prefix() {
        let credential = "pk_a:sk_b";
        for presented in [
            "pk_a:sk_b",
            "  pk_a:sk_b\r\n",
            "\tpk_a:sk_b ",
            "Bearer pk_a:sk_b",
            " bearer\t pk_a:sk_b \n",
            "BEARER  pk_a:sk_b",
        ] {
            assert_eq!(presented_credential(presented), credential, "{presented:?}");
        }
        // Anything else is passed on as it is, to be refused as malformed.
        assert_eq!(presented_credential("Basic pk_a:sk_b"), "Basic pk_a:sk_b");
        assert_eq!(presented_credential("pk_a: sk_b"), "pk_a: sk_b");
        assert_eq!(presented_credential("Bearer"), "Bearer");
        assert_eq!(presented_credential("\u{a0}pk_a:sk_b"), "\u{a0}pk_a:sk_b");
    }

    #[tokio::test]
    async fn a_leaked_key_is_recognised_by_its_secret_whatever_its_status() {
        let validator = ApiKeyValidator::new(MemoryRepository::new(), pepper());
        let manager = KeyManager::new(validator.clone());
        let account = AccountId::new(uuid::Uuid::new_v4());
        let created = manager.create(account, NewApiKey::new("ci")).await.unwrap();
        let credential = created.credential();
        validator.validate(&credential).await.unwrap(); // cached as active

        let leaked = manager.revoke_leaked(&credential).await.unwrap().unwrap();
        assert_eq!(
            (leaked.account_id, leaked.key_id),
            (account, created.key.key_id)
        );
        assert!(leaked.newly_revoked);
        assert!(validator.validate(&credential).await.is_err());
        // Reported again: still its key, nothing more to revoke.
        let again = manager.revoke_leaked(&credential).await.unwrap().unwrap();
        assert!(!again.newly_revoked);

        let wrong_secret = format!("{}:sk_{}", created.key.public_key, "x".repeat(32));
        let unknown = KeyPair::generate().unwrap().credential();
        for other in [
            wrong_secret.as_str(),
            unknown.as_str(),
            "pk_short:sk_short",
            "",
        ] {
            assert_eq!(
                manager.revoke_leaked(other).await.unwrap(),
                None,
                "{other:?}"
            );
        }
    }
}
