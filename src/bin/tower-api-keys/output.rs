//! What a command prints: one JSON document (`--json`, the field names of the
//! HTTP API) or text for people.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tower_api_keys::{
    ApiKeyInfo, AuditPage, CreatedKey, KeyPrefix, PepperStatus, events::OutboxEvent, key::token,
};

use crate::cli::PatternFormat;

/// A command's result, in both forms.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) json: Value,
    pub(crate) text: String,
}

impl Report {
    /// The form asked for, with a final line break.
    pub(crate) fn render(&self, json: bool) -> String {
        if json {
            let mut out = self.json.to_string();
            out.push('\n');
            out
        } else {
            self.text.clone()
        }
    }
}

/// A key just created or rotated: the key and its secret, which appears here
/// and nowhere else (as in the HTTP API's `201` body).
pub(crate) fn created(created: &CreatedKey) -> Report {
    let mut body = match serde_json::to_value(&created.key) {
        Ok(Value::Object(body)) => body,
        _ => serde_json::Map::new(),
    };
    let secret = created.secret_key.expose();
    let token = created.token.expose();
    body.insert("secret_key".to_owned(), Value::String(secret.to_owned()));
    body.insert("token".to_owned(), Value::String(token.to_owned()));
    let mut text = details(&created.key);
    let _ = writeln!(text, "{:<14}{secret}", "secret_key");
    let _ = writeln!(text, "{:<14}{token}", "token");
    text.push_str(
        "\nThe secret key and the token are shown this once and are not stored. \
         Clients send the token (or public_key:secret_key).\n",
    );
    Report {
        json: Value::Object(body),
        text,
    }
}

/// A pattern that matches exactly this service's credentials (the token form
/// of `prefix` and `pk_…:sk_…`), for secret scanners. The JSON form names the
/// format and carries the pattern's text.
pub(crate) fn scanning_pattern(prefix: Option<&KeyPrefix>, format: PatternFormat) -> Report {
    let regex = token::scanning_regex(prefix);
    let (name, text) = match format {
        PatternFormat::Regex => ("regex", format!("{regex}\n")),
        PatternFormat::Gitleaks => {
            let (id, description, keywords) = match prefix {
                Some(prefix) => (
                    format!("tower-api-keys-{prefix}"),
                    format!("tower-api-keys API key: a {prefix}_ token or a pk_…:sk_… credential"),
                    format!("[\"{prefix}_\", \"pk_\"]"),
                ),
                None => (
                    "tower-api-keys".to_owned(),
                    "tower-api-keys API key: a pk_…:sk_… credential".to_owned(),
                    "[\"pk_\"]".to_owned(),
                ),
            };
            (
                "gitleaks",
                format!(
                    "[[rules]]\nid = \"{id}\"\ndescription = \"{description}\"\n\
                     regex = '''{regex}'''\nkeywords = {keywords}\n"
                ),
            )
        }
    };
    Report {
        json: json!({"format": name, "regex": regex, "pattern": text}),
        text,
    }
}

/// One key.
pub(crate) fn key(key: &ApiKeyInfo) -> Report {
    Report {
        json: serde_json::to_value(key).unwrap_or(Value::Null),
        text: details(key),
    }
}

/// An account's keys, as a table.
pub(crate) fn keys(account: uuid::Uuid, keys: &[ApiKeyInfo]) -> Report {
    let text = if keys.is_empty() {
        format!("no API keys for account {account}\n")
    } else {
        table(
            &[
                "KEY_ID",
                "STATUS",
                "CREATED_AT",
                "EXPIRES_AT",
                "LAST_USED_AT",
                "PUBLIC_KEY",
                "TITLE",
            ],
            keys.iter()
                .map(|key| {
                    vec![
                        key.key_id.to_string(),
                        status(key),
                        short_time(key.created_at, "-"),
                        short_time(key.expires_at, "never"),
                        short_time(key.last_used_at, "never"),
                        key.public_key.clone(),
                        truncate(&clean(&key.title), 48),
                    ]
                })
                .collect(),
        )
    };
    Report {
        json: serde_json::to_value(keys).unwrap_or(Value::Null),
        text,
    }
}

/// A confirmation, as the HTTP API words it.
pub(crate) fn message(message: &str, text: String) -> Report {
    Report {
        json: json!({ "message": message }),
        text,
    }
}

/// Keys per pepper.
pub(crate) fn pepper_status(status: &[PepperStatus]) -> Report {
    let text = table(
        &["PEPPER_ID", "ROLE", "IN_RING", "KEYS"],
        status
            .iter()
            .map(|line| {
                vec![
                    line.pepper_id
                        .as_ref()
                        .map_or_else(|| "(invalid id)".to_owned(), ToString::to_string),
                    serde_json::to_value(line.role)
                        .ok()
                        .and_then(|role| role.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    if line.in_ring { "yes" } else { "no" }.to_owned(),
                    line.keys.to_string(),
                ]
            })
            .collect(),
    );
    Report {
        json: serde_json::to_value(status).unwrap_or(Value::Null),
        text,
    }
}

/// A page of the audit log: one line per entry, newest first.
pub(crate) fn audit(page: &AuditPage) -> Report {
    let text = if page.entries.is_empty() {
        "no audit entries\n".to_owned()
    } else {
        let mut text = table(
            &["ID", "AT", "KEY_ID", "ACTION", "ACTOR", "SOURCE"],
            page.entries
                .iter()
                .map(|entry| {
                    vec![
                        entry.id.to_string(),
                        entry
                            .at
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        entry.key_id.to_string(),
                        entry.action.clone(),
                        clean(entry.actor.as_deref().unwrap_or("-")),
                        clean(entry.source.as_deref().unwrap_or("-")),
                    ]
                })
                .collect(),
        );
        if let Some(next) = page.next_before {
            text.push_str(&format!("more: --before {next}\n"));
        }
        text
    };
    Report {
        json: serde_json::to_value(page).unwrap_or(Value::Null),
        text,
    }
}

/// Events kept as failed: one line each.
pub(crate) fn failed_events(events: &[OutboxEvent]) -> Report {
    let text = if events.is_empty() {
        "no failed events\n".to_owned()
    } else {
        table(
            &["EVENT_ID", "TYPE", "KEY_ID", "ATTEMPTS", "LAST_ERROR"],
            events
                .iter()
                .map(|event| {
                    vec![
                        clean(&event.event_id),
                        event.event_type.clone(),
                        event.key_id.to_string(),
                        event.attempts.to_string(),
                        clean(event.last_error.as_deref().unwrap_or("-")),
                    ]
                })
                .collect(),
        )
    };
    let json: Vec<Value> = events
        .iter()
        .map(|event| {
            json!({
                "event_id": event.event_id,
                "type": event.event_type,
                "key_id": event.key_id,
                "attempts": event.attempts,
                "last_error": event.last_error,
                "created_at": event.created_at,
                "payload": serde_json::from_str::<Value>(&event.payload).unwrap_or(Value::Null),
            })
        })
        .collect();
    Report {
        json: Value::Array(json),
        text,
    }
}

/// How many failed events were put back.
pub(crate) fn retried(count: u64) -> Report {
    Report {
        json: json!({ "retried": count }),
        text: format!("{count} failed event(s) put back for delivery\n"),
    }
}

/// Every field of a key, one per line.
fn details(key: &ApiKeyInfo) -> String {
    let mut lines = vec![
        ("key_id", key.key_id.to_string()),
        ("public_key", key.public_key.clone()),
        ("title", clean(&key.title)),
        (
            "description",
            key.description
                .as_deref()
                .map_or_else(|| "-".to_owned(), clean),
        ),
        ("status", status(key)),
        (
            "scopes",
            key.scopes.as_ref().map_or_else(
                || "(unrestricted)".to_owned(),
                |scopes| {
                    if scopes.is_empty() {
                        "(none)".to_owned()
                    } else {
                        scopes.iter().collect::<Vec<_>>().join(" ")
                    }
                },
            ),
        ),
        (
            "metadata",
            key.metadata.as_ref().map_or_else(
                || "-".to_owned(),
                |metadata| clean(&serde_json::to_string(metadata).unwrap_or_default()),
            ),
        ),
        (
            "rate_limit",
            key.rate_limit.map_or_else(
                || "-".to_owned(),
                |limit| {
                    format!(
                        "{} requests / {} s",
                        limit.requests(),
                        limit.period_seconds()
                    )
                },
            ),
        ),
        (
            "allowed_cidrs",
            key.allowed_cidrs.as_ref().map_or_else(
                || "(any address)".to_owned(),
                |networks| {
                    networks
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" ")
                },
            ),
        ),
        ("expires_at", time(key.expires_at, "never")),
        ("last_used_at", time(key.last_used_at, "never")),
        ("created_at", time(key.created_at, "-")),
    ];
    if let Some(from) = key.rotated_from {
        lines.push(("rotated_from", from.to_string()));
    }
    let mut text = String::new();
    for (name, value) in lines {
        let _ = writeln!(text, "{name:<14}{value}");
    }
    text
}

/// `active`, `revoked` or `expired`.
fn status(key: &ApiKeyInfo) -> String {
    serde_json::to_value(key.status)
        .ok()
        .and_then(|status| status.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// RFC 3339 in UTC, as the JSON output has it.
fn time(at: Option<DateTime<Utc>>, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

/// RFC 3339 in UTC to the second, for tables.
fn short_time(at: Option<DateTime<Utc>>, none: &str) -> String {
    at.map_or_else(
        || none.to_owned(),
        |at| at.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Text from the store, fit for a terminal: control characters (escape
/// sequences, line breaks) escaped.
pub(crate) fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters, an ellipsis marking a cut.
fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_text_is_cleaned() {
        let text = table(
            &["A", "BB"],
            vec![
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(text, "A    BB\nxyz  1\nq    22\n");
        assert_eq!(clean("a\u{1b}[31m\nb"), "a\\u{1b}[31m\\nb");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
