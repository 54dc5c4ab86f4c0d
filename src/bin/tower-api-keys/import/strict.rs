//! Reading one line's JSON strictly: a member named twice is an error, and
//! messages name fields without quoting values from the file.

use serde_json::{Map, Value};

/// A JSON value read as [`Value`] is, except that an object that names a
/// member twice, at any depth, is an error: JSON parsers disagree on which
/// of the two wins (serde_json keeps the last), so a line such as
/// `"status":"revoked","status":"active"` has no one meaning.
pub(super) struct Strict(pub(super) Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "{} is named twice",
                    shown_name(&name)
                )));
            }
            let Strict(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// A serde_json error without its position on the (single) line, then the column.
pub(super) fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let message = text
        .rfind(" at line ")
        .map_or(text.as_str(), |at| &text[..at]);
    format!("{message} at column {}", err.column())
}

/// A field name from the file, fit to print: short names of plain characters
/// as they are, anything else not at all.
pub(super) fn shown_name(name: &str) -> String {
    if !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'-' || b == b'.')
    {
        format!("`{name}`")
    } else {
        "a field".to_owned()
    }
}
