//! Request bodies read field by field, so that every problem is reported at
//! once and unknown fields are refused by name.

use std::time::Duration;

use serde_json::{Map, Value};

use super::ApiError;
use crate::{
    manager::rules::{FieldError, NewApiKey},
    policy::limits::MAX_GRACE_PERIOD_SECONDS,
    policy::{AllowedNetworks, Metadata, Scopes},
    ratelimit::RateLimit,
    store::KeyChanges,
};

/// `scopes`: `null` or an array of valid, distinct scopes.
fn scopes(value: Value) -> Result<Option<Scopes>, FieldError> {
    Scopes::from_json(&value).map_err(|err| FieldError::new("scopes", err.to_string()))
}

/// `metadata`: `null` or a JSON object of at most 4,096 bytes.
fn metadata(value: Value) -> Result<Option<Metadata>, FieldError> {
    match value {
        Value::Null => Ok(None),
        value => Metadata::from_value(value)
            .map(Some)
            .map_err(|err| FieldError::new("metadata", err.to_string())),
    }
}

/// `rate_limit`: `null` or `{"requests": 1–1000000, "period_seconds": 1–86400}`;
/// an error names the nested field (`rate_limit.requests`) where it can.
fn rate_limit(value: Value) -> Result<Option<RateLimit>, FieldError> {
    RateLimit::from_json(&value).map_err(|err| {
        let field = match err.member() {
            Some(member) => format!("rate_limit.{member}"),
            None => "rate_limit".to_owned(),
        };
        FieldError::new(field, err.to_string())
    })
}

/// `allowed_cidrs`: `null` or an array of 1–64 CIDRs or addresses; the
/// message names the position of a bad entry (never its text).
fn allowed_cidrs(value: Value) -> Result<Option<AllowedNetworks>, FieldError> {
    AllowedNetworks::from_json(&value)
        .map_err(|err| FieldError::new("allowed_cidrs", err.to_string()))
}

/// Adds `more` to `errors`, leaving out fields a type error already covers.
fn merge(errors: &mut Vec<FieldError>, more: Vec<FieldError>) {
    for error in more {
        if !errors.iter().any(|e| e.field == error.field) {
            errors.push(error);
        }
    }
}

/// A field that create and update bodies share, read; `null` is `None` where
/// the field allows it.
enum Field {
    Title(String),
    Description(Option<String>),
    Scopes(Option<Scopes>),
    Metadata(Option<Metadata>),
    RateLimit(Option<RateLimit>),
    AllowedCidrs(Option<AllowedNetworks>),
    /// Any other field, unread: the body decides whether it knows it.
    Other(String, Value),
}

/// Reads one field of a create or update body.
fn field(name: String, value: Value) -> Result<Field, FieldError> {
    match name.as_str() {
        "title" => match value {
            Value::String(title) => Ok(Field::Title(title)),
            _ => Err(FieldError::new("title", "must be a string")),
        },
        "description" => match value {
            Value::String(description) => Ok(Field::Description(Some(description))),
            Value::Null => Ok(Field::Description(None)),
            _ => Err(FieldError::new("description", "must be a string or null")),
        },
        "scopes" => scopes(value).map(Field::Scopes),
        "metadata" => metadata(value).map(Field::Metadata),
        "rate_limit" => rate_limit(value).map(Field::RateLimit),
        "allowed_cidrs" => allowed_cidrs(value).map(Field::AllowedCidrs),
        _ => Ok(Field::Other(name, value)),
    }
}

/// `expires_in_days`: `null` or an integer. Its range is a rule of
/// [`NewApiKey::validate`]; an integer too large for `i64` reads as `i64::MAX`,
/// which that rule refuses.
fn expires_in_days(value: Value) -> Result<Option<i64>, FieldError> {
    match value {
        Value::Null => Ok(None),
        Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64()),
        Value::Number(n) if n.as_u64().is_some() => Ok(Some(i64::MAX)),
        _ => Err(FieldError::new(
            "expires_in_days",
            "must be an integer from 1 to 365, or null",
        )),
    }
}

/// Reads a create body: `title`, `description`, `expires_in_days`, `scopes`,
/// `metadata`, `rate_limit`, `allowed_cidrs`.
pub(super) fn new_key(body: Map<String, Value>) -> Result<NewApiKey, ApiError> {
    let mut errors = Vec::new();
    let mut request = NewApiKey::new("");
    let mut has_title = false;
    for (name, value) in body {
        match field(name, value) {
            Ok(Field::Title(title)) => {
                request.title = title;
                has_title = true;
            }
            Ok(Field::Description(description)) => request.description = description,
            Ok(Field::Scopes(scopes)) => request.scopes = scopes,
            Ok(Field::Metadata(metadata)) => request.metadata = metadata,
            Ok(Field::RateLimit(limit)) => request.rate_limit = limit,
            Ok(Field::AllowedCidrs(networks)) => request.allowed_cidrs = networks,
            Ok(Field::Other(name, value)) if name == "expires_in_days" => {
                match expires_in_days(value) {
                    Ok(days) => request.expires_in_days = days,
                    Err(error) => errors.push(error),
                }
            }
            Ok(Field::Other(name, _)) => errors.push(FieldError::new(name, "unknown field")),
            Err(error) => errors.push(error),
        }
    }
    if !has_title && !errors.iter().any(|e| e.field == "title") {
        errors.push(FieldError::new("title", "is required"));
    } else if let Err(more) = request.validate() {
        merge(&mut errors, more);
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Reads an update body (`PATCH /{key_id}`): any of `title`, `description`,
/// `scopes`, `metadata`, `rate_limit`, `allowed_cidrs`; `null` clears all but the
/// title, and `title: null` is an
/// error (a key always has a title).
pub(super) fn key_changes(body: Map<String, Value>) -> Result<KeyChanges, ApiError> {
    let mut errors = Vec::new();
    let mut changes = KeyChanges::default();
    for (name, value) in body {
        match field(name, value) {
            Ok(Field::Title(title)) => changes.title = Some(title),
            Ok(Field::Description(description)) => changes.description = Some(description),
            Ok(Field::Scopes(scopes)) => changes.scopes = Some(scopes),
            Ok(Field::Metadata(metadata)) => changes.metadata = Some(metadata),
            Ok(Field::RateLimit(limit)) => changes.rate_limit = Some(limit),
            Ok(Field::AllowedCidrs(networks)) => changes.allowed_cidrs = Some(networks),
            Ok(Field::Other(name, _)) => errors.push(FieldError::new(name, "unknown field")),
            Err(error) => errors.push(error),
        }
    }
    if let Err(more) = changes.validate() {
        merge(&mut errors, more);
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Reads a rotate body: none, `{}` or `{"grace_period_seconds": 0–604800}`.
pub(super) fn grace_period(body: Option<Map<String, Value>>) -> Result<Duration, ApiError> {
    let mut grace = Duration::ZERO;
    let mut errors = Vec::new();
    for (field, value) in body.unwrap_or_default() {
        match field.as_str() {
            "grace_period_seconds" => match value.as_u64() {
                Some(seconds) if seconds <= MAX_GRACE_PERIOD_SECONDS => {
                    grace = Duration::from_secs(seconds);
                }
                _ if value.is_null() => {}
                _ => errors.push(FieldError::new(
                    "grace_period_seconds",
                    format!("must be an integer from 0 to {MAX_GRACE_PERIOD_SECONDS}"),
                )),
            },
            _ => errors.push(FieldError::new(field, "unknown field")),
        }
    }
    if errors.is_empty() {
        Ok(grace)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// Reads a revocation body: `{"credential": "<string>"}`.
pub(super) fn credential(body: Map<String, Value>) -> Result<String, ApiError> {
    let mut credential = None;
    let mut errors = Vec::new();
    for (field, value) in body {
        match (field.as_str(), value) {
            ("credential", Value::String(value)) => credential = Some(value),
            ("credential", _) => errors.push(FieldError::new("credential", "must be a string")),
            _ => errors.push(FieldError::new(field, "unknown field")),
        }
    }
    match credential {
        Some(credential) if errors.is_empty() => Ok(credential),
        found => {
            if found.is_none() && !errors.iter().any(|e| e.field == "credential") {
                errors.push(FieldError::new("credential", "is required"));
            }
            Err(ApiError::Invalid(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn fields(result: Result<impl std::fmt::Debug, ApiError>) -> Vec<String> {
        let Err(ApiError::Invalid(errors)) = result else {
            panic!("expected field errors, got {result:?}");
        };
        let mut fields: Vec<_> = errors.into_iter().map(|e| e.field).collect();
        fields.sort_unstable();
        fields
    }

    #[test]
    fn new_key_reports_every_field_error_at_once() {
        let body = json!({"title": "", "expires_in_days": 0, "colour": "red", "scopes": ["A"], "metadata": []});
        assert_eq!(
            fields(new_key(object(body))),
            ["colour", "expires_in_days", "metadata", "scopes", "title"]
        );
    }

    #[test]
    fn scopes_and_metadata_follow_the_contract() {
        let ok = new_key(object(
            json!({"title": "t", "scopes": ["b", "a"], "metadata": {"x": 1}}),
        ))
        .unwrap();
        assert_eq!(ok.scopes.unwrap().iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(ok.metadata.unwrap().get("x"), Some(&json!(1)));
        let empty = new_key(object(json!({"title": "t", "scopes": []}))).unwrap();
        assert!(empty.scopes.unwrap().is_empty());
        for bad in [
            json!("a"),
            json!([1]),
            json!(["a", "a"]),
            json!(["a b"]),
            json!((0..33).map(|i| format!("s{i}")).collect::<Vec<_>>()),
        ] {
            assert_eq!(
                fields(new_key(object(json!({"title": "t", "scopes": bad})))),
                ["scopes"]
            );
        }
        let big = json!({ "k": "a".repeat(4_096) });
        assert_eq!(
            fields(new_key(object(json!({"title": "t", "metadata": big})))),
            ["metadata"]
        );
    }

    #[test]
    fn rate_limits_are_bounded_and_errors_name_the_nested_field() {
        let ok = new_key(object(
            json!({"title": "t", "rate_limit": {"requests": 3, "period_seconds": 60}}),
        ))
        .unwrap();
        assert_eq!(ok.rate_limit, Some(RateLimit::new(3, 60).unwrap()));
        for (bad, field) in [
            (json!(5), "rate_limit"),
            (json!([5, 60]), "rate_limit"),
            (
                json!({"requests": 0, "period_seconds": 60}),
                "rate_limit.requests",
            ),
            (
                json!({"requests": 1_000_001, "period_seconds": 60}),
                "rate_limit.requests",
            ),
            (
                json!({"requests": 1, "period_seconds": 86_401}),
                "rate_limit.period_seconds",
            ),
            (
                json!({"requests": 1.5, "period_seconds": 60}),
                "rate_limit.requests",
            ),
            (json!({"requests": 1}), "rate_limit.period_seconds"),
            (
                json!({"requests": 1, "period_seconds": 1, "burst": 2}),
                "rate_limit.burst",
            ),
        ] {
            assert_eq!(
                fields(new_key(object(json!({"title": "t", "rate_limit": bad})))),
                [field]
            );
        }
        let cleared = key_changes(object(json!({"rate_limit": null}))).unwrap();
        assert_eq!(cleared.rate_limit, Some(None));
    }

    #[test]
    fn changes_clear_with_null_and_refuse_a_null_title() {
        let changes = key_changes(object(json!({"description": null, "scopes": null}))).unwrap();
        assert_eq!(changes.description, Some(None));
        assert_eq!(changes.scopes, Some(None));
        assert_eq!(changes.title, None);
        assert_eq!(
            fields(key_changes(object(json!({"title": null})))),
            ["title"]
        );
        assert_eq!(
            fields(key_changes(object(json!({"title": "  "})))),
            ["title"]
        );
        assert_eq!(
            fields(key_changes(object(json!({"expires_in_days": 3})))),
            ["expires_in_days"]
        );
        assert!(key_changes(Map::new()).unwrap().is_empty());
    }

    #[test]
    fn create_and_update_refuse_a_shared_field_alike() {
        for (name, bad) in [
            ("title", json!(null)),
            ("title", json!(1)),
            ("description", json!(1)),
            ("scopes", json!("a")),
            ("scopes", json!(["a", "a"])),
            ("metadata", json!([])),
            ("rate_limit", json!(5)),
            ("rate_limit", json!({"requests": 0, "period_seconds": 1})),
            ("allowed_cidrs", json!([])),
            ("allowed_cidrs", json!("10.0.0.0/8")),
            ("allowed_cidrs", json!(["10.0.0.0/8", "10.0.0.0/33"])),
            ("allowed_cidrs", json!(["fe80::1%eth0"])),
            (
                "allowed_cidrs",
                json!(
                    (0..65)
                        .map(|i| format!("10.{i}.0.0/16"))
                        .collect::<Vec<_>>()
                ),
            ),
        ] {
            let mut create = object(json!({"title": "t"}));
            create.insert(name.to_owned(), bad.clone());
            let update = object(json!({ name: bad }));
            let Err(ApiError::Invalid(created)) = new_key(create) else {
                panic!("create accepted {name}: {bad}");
            };
            let Err(ApiError::Invalid(updated)) = key_changes(update) else {
                panic!("update accepted {name}: {bad}");
            };
            assert_eq!(created, updated, "{name}: {bad}");
        }
    }

    #[test]
    fn grace_periods_are_bounded() {
        assert_eq!(grace_period(None).unwrap(), Duration::ZERO);
        assert_eq!(
            grace_period(Some(object(json!({"grace_period_seconds": 604_800})))).unwrap(),
            Duration::from_secs(604_800)
        );
        for bad in [json!(604_801), json!(-1), json!(1.5), json!("60")] {
            let body = Some(object(json!({ "grace_period_seconds": bad })));
            assert_eq!(fields(grace_period(body)), ["grace_period_seconds"]);
        }
        assert_eq!(
            fields(grace_period(Some(object(json!({"grace": 1}))))),
            ["grace"]
        );
    }

    #[test]
    fn a_revocation_needs_exactly_a_credential_string() {
        assert_eq!(credential(object(json!({"credential": "x"}))).unwrap(), "x");
        assert_eq!(fields(credential(Map::new())), ["credential"]);
        assert_eq!(
            fields(credential(object(json!({"credential": 1})))),
            ["credential"]
        );
        assert_eq!(
            fields(credential(object(json!({"credential": "x", "token": "y"})))),
            ["token"]
        );
    }
}
