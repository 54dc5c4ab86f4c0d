//! The rules every key request obeys, and the error that names the field that
//! breaks one. Shared by [`KeyManager`](crate::KeyManager), which enforces them,
//! and the management router, which reports them.

use serde::Serialize;

use crate::{
    policy::limits::{EXPIRES_IN_DAYS, MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS},
    policy::{AllowedNetworks, Metadata, Scopes},
    ratelimit::RateLimit,
    store::KeyChanges,
};

/// What to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// Trimmed, then 1–255 characters; no NUL.
    pub title: String,
    /// Up to 4,096 characters, stored as given; no NUL.
    pub description: Option<String>,
    /// 1–365 days; `None` for a key that never expires.
    pub expires_in_days: Option<i64>,
    /// The scopes the key grants; `None` for an unrestricted key.
    pub scopes: Option<Scopes>,
    /// Metadata handlers can read from the authenticated key.
    pub metadata: Option<Metadata>,
    /// The key's own rate limit; `None`: the layer's default, if any.
    pub rate_limit: Option<RateLimit>,
    /// The networks the key may be used from; `None`: any address.
    pub allowed_cidrs: Option<AllowedNetworks>,
}

impl NewApiKey {
    /// A key with this title, no description, that never expires.
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            description: None,
            expires_in_days: None,
            scopes: None,
            metadata: None,
            rate_limit: None,
            allowed_cidrs: None,
        }
    }

    /// Lets the key be used only from `networks`.
    #[must_use]
    pub fn with_allowed_cidrs(mut self, networks: AllowedNetworks) -> Self {
        self.allowed_cidrs = Some(networks);
        self
    }

    /// Limits the key to `limit`.
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Restricts the key to `scopes` (an empty set grants no scope).
    #[must_use]
    pub fn with_scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = Some(scopes);
        self
    }

    /// Attaches metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = Some(metadata);
        self
    }

    /// Sets the description.
    #[must_use]
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Makes the key expire after `days` (1–365).
    #[must_use]
    pub fn with_expires_in_days(mut self, days: i64) -> Self {
        self.expires_in_days = Some(days);
        self
    }

    /// Checks every rule and returns every violation.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        check_title(&self.title, &mut errors);
        if let Some(description) = &self.description {
            check_description(description, &mut errors);
        }
        if let Some(days) = self.expires_in_days
            && !EXPIRES_IN_DAYS.contains(&days)
        {
            errors.push(FieldError::new(
                "expires_in_days",
                "must be an integer from 1 to 365, or null",
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Checks a title (trimmed first) against the contract's rules.
fn check_title(title: &str, errors: &mut Vec<FieldError>) {
    let title = title.trim();
    // PostgreSQL cannot store U+0000 in text; refuse it on every backend alike.
    if title.contains('\0') {
        errors.push(FieldError::new("title", "must not contain NUL characters"));
    } else if title.is_empty() {
        errors.push(FieldError::new("title", "must not be blank"));
    } else if title.chars().count() > MAX_TITLE_CHARS {
        errors.push(FieldError::new(
            "title",
            format!("must be at most {MAX_TITLE_CHARS} characters"),
        ));
    }
}

/// Checks a description (stored as given).
fn check_description(description: &str, errors: &mut Vec<FieldError>) {
    if description.contains('\0') {
        errors.push(FieldError::new(
            "description",
            "must not contain NUL characters",
        ));
    } else if description.chars().count() > MAX_DESCRIPTION_CHARS {
        errors.push(FieldError::new(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
}

impl KeyChanges {
    /// Checks every rule a change obeys (those of [`NewApiKey`]) and returns
    /// every violation. Scopes and metadata are valid by construction.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        if let Some(title) = &self.title {
            check_title(title, &mut errors);
        }
        if let Some(Some(description)) = &self.description {
            check_description(description, &mut errors);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Checks a stored row given from outside (an import): the title and
/// description rules of [`NewApiKey`], a `pk_` + 32 alphanumeric public key, a
/// 64-hex-digit hash and a valid pepper id. Field names are prefixed with
/// `prefix` (for example `records[3].`).
pub(crate) fn check_record(
    record: &crate::store::ApiKeyRecord,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) {
    let mut own = Vec::new();
    check_title(&record.title, &mut own);
    if record.title.trim() != record.title {
        own.push(FieldError::new(
            "title",
            "must not have leading or trailing whitespace",
        ));
    }
    if let Some(description) = &record.description {
        check_description(description, &mut own);
    }
    let public_key = record.public_key.as_bytes();
    if public_key.len() != 35
        || !public_key.starts_with(b"pk_")
        || !public_key[3..].iter().all(u8::is_ascii_alphanumeric)
    {
        own.push(FieldError::new(
            "public_key",
            "must be pk_ followed by 32 letters or digits",
        ));
    }
    let hash = record.secret_key_hash.as_bytes();
    if hash.len() != 64 || !hash.iter().all(u8::is_ascii_hexdigit) {
        own.push(FieldError::new(
            "secret_key_hash",
            "must be 64 hexadecimal digits",
        ));
    }
    if let Some(pepper_id) = &record.pepper_id
        && pepper_id.parse::<crate::key::ring::PepperId>().is_err()
    {
        own.push(FieldError::new(
            "pepper_id",
            "must be a pepper id (16 hexadecimal digits)",
        ));
    }
    errors.extend(
        own.into_iter()
            .map(|error| FieldError::new(format!("{prefix}{}", error.field), error.message)),
    );
}

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name as sent.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_counts_characters_and_trims() {
        assert!(NewApiKey::new("  ok  ").validate().is_ok());
        assert_eq!(
            NewApiKey::new("   ").validate().unwrap_err()[0].field,
            "title"
        );
        assert!(NewApiKey::new("é".repeat(255)).validate().is_ok());
        assert!(NewApiKey::new("é".repeat(256)).validate().is_err());
        assert!(
            NewApiKey::new(format!("  {}  ", "a".repeat(255)))
                .validate()
                .is_ok()
        );
        let description = NewApiKey::new("t").with_description("😀".repeat(4096));
        assert!(description.validate().is_ok());
        let description = NewApiKey::new("t").with_description("😀".repeat(4097));
        assert_eq!(description.validate().unwrap_err()[0].field, "description");
        for days in [0, 366, -1] {
            let errors = NewApiKey::new("t")
                .with_expires_in_days(days)
                .validate()
                .unwrap_err();
            assert_eq!(errors[0].field, "expires_in_days");
        }
        for days in [1, 365] {
            assert!(
                NewApiKey::new("t")
                    .with_expires_in_days(days)
                    .validate()
                    .is_ok()
            );
        }
    }
}
