//! Small helpers for editing pod spec JSON without clobbering what is there.

use serde_json::{Map, Value};

/// Member `key` of `value`, created as `null` if absent; `value` itself
/// becomes an object if it was `null`.
///
/// # Errors
///
/// When `value` is neither an object nor `null` (the object is malformed).
pub fn member<'v>(value: &'v mut Value, key: &str) -> Result<&'v mut Value, String> {
    if value.is_null() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => Ok(map.entry(key).or_insert(Value::Null)),
        other => Err(format!("expected an object holding {key:?}, found {other}")),
    }
}

/// The object at `keys` below `value`, created as needed.
///
/// # Errors
///
/// When something on the way is neither an object nor `null`.
pub fn path<'v>(mut value: &'v mut Value, keys: &[&str]) -> Result<&'v mut Value, String> {
    for key in keys {
        value = member(value, key)?;
    }
    Ok(value)
}

/// `value` as an array, created if it was `null`.
///
/// # Errors
///
/// When `value` is neither an array nor `null`.
pub fn array(value: &mut Value) -> Result<&mut Vec<Value>, String> {
    if value.is_null() {
        *value = Value::Array(Vec::new());
    }
    match value {
        Value::Array(items) => Ok(items),
        other => Err(format!("expected a list, found {other}")),
    }
}

/// A string member of an object, or `""`.
pub fn str_of<'v>(value: &'v Value, key: &str) -> &'v str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A label or annotation of a metadata object.
pub fn meta<'v>(metadata: &'v Value, kind: &str, key: &str) -> Option<&'v str> {
    metadata.get(kind)?.get(key)?.as_str()
}
