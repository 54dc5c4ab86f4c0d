//! `import`: JSON lines of keys hashed elsewhere, read into
//! [`ApiKeyRecord`]s with every error named by its line.
//!
//! Messages never quote a value from the file (a misplaced hash or secret must
//! not reach a terminal or a log); they name the line and the field.

use std::{
    io::{BufRead, BufReader},
    path::Path,
};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tower_api_keys::{
    AllowedNetworks, Metadata, RateLimit, Scopes,
    store::{ApiKeyRecord, KeyStatus, StoredHash},
};
use uuid::Uuid;

pub(crate) use self::report::{conflicts, invalid_lines, refused};
use self::strict::{Strict, json_error, shown_name};
use crate::error::CliError;

mod report;
mod strict;

/// Longest line accepted, in bytes. A valid line is far shorter: the longest
/// fields are a 4,096-character description and 4,096 bytes of metadata.
pub(crate) const MAX_LINE_BYTES: usize = 65_536;

/// The fields of a line.
const FIELDS: &[&str] = &[
    "key_id",
    "public_key",
    "secret_key_hash",
    "account_id",
    "title",
    "description",
    "status",
    "expires_at",
    "last_used_at",
    "created_at",
    "scopes",
    "metadata",
    "rate_limit",
    "allowed_cidrs",
    "pepper_id",
];

/// A record and the line it came from (1-based).
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) number: usize,
    pub(crate) record: ApiKeyRecord,
}

/// Reads `path` (`-`: standard input) as JSON lines. Blank lines are skipped.
/// Every line is read and checked; any error fails the whole file.
pub(crate) fn read(path: &Path) -> Result<Vec<Line>, CliError> {
    if path.as_os_str() == "-" {
        parse(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|err| CliError::usage(format!("cannot read {}: {err}", path.display())))?;
        parse(BufReader::new(file))
    }
}

/// Parses JSON lines from `reader`.
pub(crate) fn parse(mut reader: impl BufRead) -> Result<Vec<Line>, CliError> {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    let mut buffer = Vec::new();
    let mut number = 0;
    loop {
        let too_long = match next_line(&mut reader, &mut buffer) {
            Ok(Some(too_long)) => too_long,
            Ok(None) => break,
            Err(err) => {
                return Err(CliError::usage(format!(
                    "cannot read the input after line {number}: {err}"
                )));
            }
        };
        number += 1;
        if too_long {
            errors.push(format!("line {number}: longer than {MAX_LINE_BYTES} bytes"));
            continue;
        }
        let Ok(mut text) = std::str::from_utf8(&buffer) else {
            errors.push(format!("line {number}: not UTF-8 text"));
            continue;
        };
        if number == 1 {
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        if text.trim().is_empty() {
            continue;
        }
        match parse_line(text) {
            Ok(record) => lines.push(Line { number, record }),
            Err(line_errors) => {
                errors.extend(
                    line_errors
                        .into_iter()
                        .map(|e| format!("line {number}: {e}")),
                );
            }
        }
    }
    if errors.is_empty() {
        Ok(lines)
    } else {
        Err(refused(errors))
    }
}

/// The next line of `reader` in `buffer`, without its line break; `Some(true)`
/// for a line over [`MAX_LINE_BYTES`] (read to its end but not kept), `None`
/// at the end of the input.
fn next_line(reader: &mut impl BufRead, buffer: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buffer.clear();
    let mut too_long = false;
    let mut read_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            break;
        }
        read_any = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let content = &available[..newline.unwrap_or(available.len())];
        if !too_long {
            if buffer.len() + content.len() > MAX_LINE_BYTES + 1 {
                too_long = true;
                buffer.clear();
            } else {
                buffer.extend_from_slice(content);
            }
        }
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if !read_any {
        return Ok(None);
    }
    if buffer.ends_with(b"\r") {
        buffer.pop();
    }
    Ok(Some(too_long || buffer.len() > MAX_LINE_BYTES))
}

/// One line as a record, or its errors (`field: message`).
fn parse_line(text: &str) -> Result<ApiKeyRecord, Vec<String>> {
    let object = match serde_json::from_str::<Strict>(text) {
        Ok(Strict(Value::Object(object))) => object,
        Ok(_) => return Err(vec!["must be a JSON object".to_owned()]),
        // The only data error: a member named twice.
        Err(err) if err.is_data() => return Err(vec![json_error(&err)]),
        Err(err) => return Err(vec![format!("not valid JSON ({})", json_error(&err))]),
    };
    let mut errors = Vec::new();
    for name in object.keys() {
        if !FIELDS.contains(&name.as_str()) {
            errors.push(format!("{}: unknown field", shown_name(name)));
        }
    }
    let mut fields = Fields {
        object: &object,
        errors: &mut errors,
    };
    let key_id = fields.uuid("key_id");
    let public_key = fields.required_string("public_key");
    let secret_key_hash = fields.required_string("secret_key_hash");
    let account_id = fields.uuid("account_id");
    if object.get("account_id").is_none_or(Value::is_null) {
        fields.missing("account_id");
    }
    let title = fields.required_string("title");
    let description = fields.string("description");
    let status = fields.status();
    let expires_at = fields.time("expires_at");
    let last_used_at = fields.time("last_used_at");
    let created_at = fields.time("created_at");
    let scopes = fields.scopes();
    let metadata = fields.metadata();
    let rate_limit = fields.rate_limit();
    let allowed_cidrs = fields.allowed_cidrs();
    let pepper_id = fields.string("pepper_id");
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ApiKeyRecord {
        key_id: key_id.unwrap_or_else(Uuid::new_v4),
        public_key: public_key.unwrap_or_default(),
        // The contract stores lowercase hex.
        secret_key_hash: StoredHash::new(secret_key_hash.unwrap_or_default().to_ascii_lowercase()),
        account_id: account_id.unwrap_or_default(),
        title: title.unwrap_or_default(),
        description,
        status,
        expires_at,
        last_used_at,
        created_at,
        pepper_id,
        scopes,
        metadata,
        rotated_from: None,
        rate_limit,
        allowed_cidrs,
    })
}

/// Reads typed fields of one line's object, collecting errors.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: &'a mut Vec<String>,
}

impl Fields<'_> {
    /// The value of `name`, `None` when absent or `null`.
    fn get(&self, name: &str) -> Option<&Value> {
        self.object.get(name).filter(|value| !value.is_null())
    }

    fn error(&mut self, name: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{name}: {message}"));
    }

    fn missing(&mut self, name: &str) {
        self.error(name, "is required");
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(text) => Some(text.clone()),
            _ => {
                self.error(name, "must be a string or null");
                None
            }
        }
    }

    fn required_string(&mut self, name: &str) -> Option<String> {
        if self.get(name).is_none() {
            self.missing(name);
            return None;
        }
        match self.get(name) {
            Some(Value::String(text)) => Some(text.clone()),
            _ => {
                self.error(name, "must be a string");
                None
            }
        }
    }

    fn uuid(&mut self, name: &str) -> Option<Uuid> {
        let parsed = match self.get(name)? {
            Value::String(text) => Uuid::parse_str(text).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(name, "must be a UUID");
        }
        parsed
    }

    fn time(&mut self, name: &str) -> Option<DateTime<Utc>> {
        let parsed = match self.get(name)? {
            Value::String(text) => DateTime::parse_from_rfc3339(text).ok(),
            _ => None,
        };
        if parsed.is_none() {
            self.error(name, "must be an RFC 3339 timestamp or null");
        }
        parsed.map(|at| at.with_timezone(&Utc))
    }

    fn status(&mut self) -> KeyStatus {
        match self.get("status") {
            None => KeyStatus::Active,
            Some(Value::String(text)) if text == "active" => KeyStatus::Active,
            Some(Value::String(text)) if text == "revoked" => KeyStatus::Revoked,
            Some(Value::String(text)) if text == "expired" => KeyStatus::Expired,
            Some(_) => {
                self.error("status", "must be active, revoked or expired");
                KeyStatus::Active
            }
        }
    }

    fn scopes(&mut self) -> Option<Scopes> {
        let scopes = Scopes::from_json(self.get("scopes")?);
        scopes.map_err(|err| self.error("scopes", err)).ok()?
    }

    fn allowed_cidrs(&mut self) -> Option<AllowedNetworks> {
        let networks = AllowedNetworks::from_json(self.get("allowed_cidrs")?);
        networks
            .map_err(|err| self.error("allowed_cidrs", err))
            .ok()?
    }

    fn metadata(&mut self) -> Option<Metadata> {
        let value = self.get("metadata")?.clone();
        Metadata::from_value(value)
            .map_err(|err| self.error("metadata", err))
            .ok()
    }

    /// `rate_limit`; an error names the member at fault
    /// (`rate_limit.requests`) where there is one.
    fn rate_limit(&mut self) -> Option<RateLimit> {
        let limit = RateLimit::from_json(self.get("rate_limit")?);
        limit
            .map_err(|err| {
                let field = match err.member() {
                    None => "rate_limit".to_owned(),
                    Some(member @ ("requests" | "period_seconds")) => {
                        format!("rate_limit.{member}")
                    }
                    Some(member) => format!("rate_limit.{}", shown_name(member)),
                };
                self.error(&field, err);
            })
            .ok()?
    }
}

/// Reads everything a reader yields (for tests of the parser).
#[cfg(test)]
fn parse_text(text: &str) -> Result<Vec<Line>, CliError> {
    parse(BufReader::new(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_api_keys::FieldError;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn line(extra: &str) -> String {
        format!(
            r#"{{"public_key":"pk_{}","secret_key_hash":"{HASH}","account_id":"{}","title":"t"{extra}}}"#,
            "a".repeat(32),
            Uuid::nil()
        )
    }

    fn message(result: Result<Vec<Line>, CliError>) -> String {
        result.unwrap_err().line(None)
    }

    #[test]
    fn a_minimal_line_gets_the_defaults() {
        let lines = parse_text(&format!("\n{}\r\n\n", line(""))).unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].number, 2);
        let record = &lines[0].record;
        assert_eq!(record.status, KeyStatus::Active);
        assert_eq!(record.created_at, None);
        assert_eq!(record.scopes, None);
        assert!(!record.key_id.is_nil());
    }

    #[test]
    fn every_optional_field_is_read() {
        let lines = parse_text(&line(
            r#","key_id":"6f1c0a52-3b8e-4a51-9a55-2f4a1c2b9d10","description":"d","status":"revoked","expires_at":"2030-01-01T00:00:00Z","last_used_at":null,"created_at":"2024-01-01T00:00:00+02:00","scopes":["b","a"],"metadata":{"k":1},"rate_limit":{"requests":5,"period_seconds":60},"pepper_id":"0011223344556677""#,
        ))
        .unwrap();
        let record = &lines[0].record;
        assert_eq!(record.status, KeyStatus::Revoked);
        assert_eq!(
            record.scopes.as_ref().unwrap().iter().collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(record.rate_limit, Some(RateLimit::new(5, 60).unwrap()));
        assert_eq!(
            record.created_at.unwrap().to_rfc3339(),
            "2023-12-31T22:00:00+00:00"
        );
        assert_eq!(record.pepper_id.as_deref(), Some("0011223344556677"));
    }

    #[test]
    fn errors_name_the_line_and_field_without_quoting_values() {
        let text = format!(
            "{}\n{}\n{{\"title\":\n[]\n{}",
            line(""),
            line(&format!(r#","status":"{HASH}","scopes":"{HASH}","exra":1"#)),
            line(r#","rate_limit":{"requests":0,"period_seconds":5}"#),
        );
        let message = message(parse_text(&text));
        assert!(
            message.starts_with("import refused, nothing written: "),
            "{message}"
        );
        assert!(
            message.contains("line 2: `exra`: unknown field"),
            "{message}"
        );
        assert!(message.contains("line 2: status: must be"), "{message}");
        assert!(message.contains("line 2: scopes: must be"), "{message}");
        assert!(message.contains("line 3: not valid JSON"), "{message}");
        assert!(
            message.contains("line 4: must be a JSON object"),
            "{message}"
        );
        assert!(
            message.contains("line 5: rate_limit.requests: "),
            "{message}"
        );
        assert!(!message.contains(HASH), "{message}");
    }

    #[test]
    fn a_member_named_twice_is_refused_at_any_depth() {
        for extra in [
            r#","status":"revoked","status":"active""#,
            r#","title":"again""#,
            r#","metadata":{"a":1,"b":{"c":1,"c":2}}"#,
            r#","rate_limit":{"requests":1,"requests":2,"period_seconds":60}"#,
        ] {
            let message = message(parse_text(&line(extra)));
            assert!(message.contains("line 1: "), "{message}");
            assert!(message.contains("is named twice"), "{extra}: {message}");
        }
        // The same name in different objects is fine.
        let lines = parse_text(&line(r#","metadata":{"a":{"title":1},"b":{"title":2}}"#)).unwrap();
        assert_eq!(lines.len(), 1);
    }

    #[test]
    fn a_rate_limit_error_names_the_member_at_fault() {
        for (extra, expected) in [
            (
                r#","rate_limit":"5/60""#,
                r#"line 1: rate_limit: must be an object {"requests", "period_seconds"} or null"#,
            ),
            (
                r#","rate_limit":{"requests":1}"#,
                "line 1: rate_limit.period_seconds: is required",
            ),
            (
                r#","rate_limit":{"requests":1,"period_seconds":1,"burst":2}"#,
                "line 1: rate_limit.`burst`: unknown field",
            ),
            (
                r#","rate_limit":{"requests":1,"period_seconds":1,"sk_x y":2}"#,
                "line 1: rate_limit.a field: unknown field",
            ),
        ] {
            let message = message(parse_text(&line(extra)));
            assert!(message.ends_with(expected), "{message}");
        }
    }

    #[test]
    fn required_fields_are_reported() {
        let message = message(parse_text(r#"{"title":null}"#));
        for field in ["public_key", "secret_key_hash", "account_id", "title"] {
            assert!(
                message.contains(&format!("line 1: {field}: is required")),
                "{message}"
            );
        }
    }

    #[test]
    fn huge_lines_and_bad_bytes_are_refused_without_keeping_them() {
        let mut input = vec![b'{'; 3 * MAX_LINE_BYTES];
        input.push(b'\n');
        input.extend_from_slice(b"\xff\xfe\n");
        input.extend_from_slice(line("").as_bytes());
        let message = message(parse(BufReader::new(&input[..])));
        assert!(
            message.contains("line 1: longer than 65536 bytes"),
            "{message}"
        );
        assert!(message.contains("line 2: not UTF-8 text"), "{message}");
        assert!(!message.contains("line 3"), "{message}");
    }

    #[test]
    fn an_empty_input_has_no_lines() {
        assert!(parse_text("").unwrap().is_empty());
        assert!(parse_text("\n \n").unwrap().is_empty());
    }

    #[test]
    fn library_field_errors_are_named_by_line() {
        let lines = parse_text(&format!("\n{}\n\n{}", line(""), line(""))).unwrap();
        let err = invalid_lines(
            &lines,
            &[
                FieldError::new("records[1].title", "must not be blank"),
                FieldError::new("records[7].title", "x"),
            ],
        );
        assert_eq!(
            err.line(None),
            "import refused, nothing written: line 4: title: must not be blank; records[7].title: x"
        );
    }
}
