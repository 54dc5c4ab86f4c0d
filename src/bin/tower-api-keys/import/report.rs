//! Why an import was refused: errors named by line, at most
//! [`MAX_LISTED_ERRORS`] of them, and the conflicts with rows already stored.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect, sea_query::ExprTrait};
use tower_api_keys::{FieldError, entity, store::SeaOrmRepository};
use uuid::Uuid;

use super::Line;
use crate::error::CliError;

/// Most errors one message lists; the rest are counted.
const MAX_LISTED_ERRORS: usize = 10;

/// The one-line refusal of an import, listing `errors` (at most
/// [`MAX_LISTED_ERRORS`]).
pub(crate) fn refused(errors: Vec<String>) -> CliError {
    let total = errors.len();
    let mut message = String::from("import refused, nothing written: ");
    message.push_str(
        &errors
            .into_iter()
            .take(MAX_LISTED_ERRORS)
            .collect::<Vec<_>>()
            .join("; "),
    );
    if total > MAX_LISTED_ERRORS {
        message.push_str(&format!("; and {} more", total - MAX_LISTED_ERRORS));
    }
    CliError::usage(message)
}

/// The library's field errors (`records[i].field`) named by line instead.
pub(crate) fn invalid_lines(lines: &[Line], errors: &[FieldError]) -> CliError {
    let messages = errors
        .iter()
        .map(|error| {
            let located = error
                .field
                .strip_prefix("records[")
                .and_then(|rest| rest.split_once("]."))
                .and_then(|(index, field)| Some((index.parse::<usize>().ok()?, field)))
                .and_then(|(index, field)| Some((lines.get(index)?.number, field)));
            match located {
                Some((number, field)) => format!("line {number}: {field}: {}", error.message),
                None => format!("{}: {}", error.field, error.message),
            }
        })
        .collect();
    refused(messages)
}

/// Why an import conflicted: the lines whose `public_key` or `key_id` appear
/// twice in the file or are already in the store.
pub(crate) async fn conflicts(repo: &SeaOrmRepository, lines: &[Line]) -> CliError {
    let mut errors = Vec::new();
    let mut seen_public: HashMap<&str, usize> = HashMap::new();
    let mut seen_id: HashMap<Uuid, usize> = HashMap::new();
    for line in lines {
        if let Some(first) = seen_public.insert(&line.record.public_key, line.number) {
            seen_public.insert(&line.record.public_key, first);
            errors.push(format!(
                "line {}: public_key: the same as on line {first}",
                line.number
            ));
        }
        if let Some(first) = seen_id.insert(line.record.key_id, line.number) {
            seen_id.insert(line.record.key_id, first);
            errors.push(format!(
                "line {}: key_id: the same as on line {first}",
                line.number
            ));
        }
    }
    match stored(repo, lines).await {
        Ok((public_keys, key_ids)) => {
            for line in lines {
                if public_keys.contains(&line.record.public_key) {
                    errors.push(format!(
                        "line {}: public_key: already in the key store",
                        line.number
                    ));
                }
                if key_ids.contains(&line.record.key_id) {
                    errors.push(format!(
                        "line {}: key_id: already in the key store",
                        line.number
                    ));
                }
            }
        }
        Err(err) => tracing::debug!(error = %err, "cannot look for the conflicting rows"),
    }
    if errors.is_empty() {
        errors.push("a key with the same id or public key already exists".to_owned());
    }
    errors.sort_by_key(|error| {
        error
            .strip_prefix("line ")
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(usize::MAX)
    });
    refused(errors)
}

/// The public keys and key ids of `lines` that the store already holds.
async fn stored(
    repo: &SeaOrmRepository,
    lines: &[Line],
) -> Result<(Vec<String>, Vec<Uuid>), sea_orm::DbErr> {
    const CHUNK: usize = 500;
    let db = repo.executor();
    let (mut public_keys, mut key_ids) = (Vec::new(), Vec::new());
    for chunk in lines.chunks(CHUNK) {
        let found: Vec<(Uuid, String)> = entity::Entity::find()
            .select_only()
            .column(entity::Column::KeyId)
            .column(entity::Column::PublicKey)
            .filter(
                entity::Column::PublicKey
                    .is_in(chunk.iter().map(|line| line.record.public_key.clone()))
                    .or(entity::Column::KeyId.is_in(chunk.iter().map(|line| line.record.key_id))),
            )
            .into_tuple()
            .all(&db)
            .await?;
        for (key_id, public_key) in found {
            key_ids.push(key_id);
            public_keys.push(public_key);
        }
    }
    Ok((public_keys, key_ids))
}
