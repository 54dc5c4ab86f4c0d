//! Revocation by the key holder, who presents the full credential.

use super::{KeyManager, ManagerError, to_completion};
use crate::policy::rejection::Rejection;

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
                // The layer refuses these before any HMAC; here the answer must
                // not come back faster than for an unknown key.
                let secret = credential.get(credential.len().saturating_sub(35)..);
                self.validator.verify_dummy(secret.unwrap_or(credential));
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        let revoked = self
            .store
            .revoke(key.account_id().into_inner(), key.key_id().into_inner())
            .await;
        self.validator.invalidate(key.public_key());
        revoked?;
        tracing::info!(key_id = %key.key_id(), account_id = %key.account_id(), "API key revoked by its holder");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
