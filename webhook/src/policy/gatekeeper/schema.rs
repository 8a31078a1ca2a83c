//! A constraint's parameters checked against its template's
//! `openAPIV3Schema`, as the apiserver checks a custom resource against a
//! structural schema: types, properties, items, enums, required fields,
//! and no unknown fields unless the schema keeps them.

use serde_json::Value;

/// Checks `value` (at `path`, for messages) against `schema`.
///
/// # Errors
///
/// The first mismatch, with its path: `parameters.allowedCapabilities[1]:
/// expected string, got 3`.
pub fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    if value.is_null() && schema["nullable"] == true {
        return Ok(());
    }
    if schema["x-kubernetes-int-or-string"] == true {
        return match value {
            Value::String(_) => Ok(()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
            other => Err(format!(
                "{path}: expected an integer or a string, got {other}"
            )),
        };
    }
    if let Some(expected) = schema["type"].as_str() {
        let fits = match expected {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !fits {
            return Err(format!("{path}: expected {expected}, got {value}"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        return Err(format!(
            "{path}: {value} is not one of {}",
            allowed.join(", ")
        ));
    }
    match value {
        Value::Object(members) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !members.contains_key(name)
                {
                    return Err(format!("{path}.{name}: required"));
                }
            }
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let keeps_unknown = schema["x-kubernetes-preserve-unknown-fields"] == true
                || additional == &Value::Bool(true)
                || (properties.is_none() && schema.get("type").is_none());
            for (name, member) in members {
                let here = format!("{path}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => check(property, member, &here)?,
                    None if additional.is_object() => check(additional, member, &here)?,
                    None if keeps_unknown => {}
                    None => {
                        let known: Vec<&String> =
                            properties.map(|p| p.keys().collect()).unwrap_or_default();
                        return Err(format!(
                            "{here}: unknown field (the template's schema has {})",
                            if known.is_empty() {
                                "no fields".to_owned()
                            } else {
                                known
                                    .iter()
                                    .map(|k| k.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ));
                    }
                }
            }
            Ok(())
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_are_checked_as_a_structural_schema_checks_them() {
        let schema = json!({"type": "object", "properties": {
            "exemptImages": {"type": "array", "items": {"type": "string"}},
            "rule": {"type": "string", "enum": ["MustRunAs", "RunAsAny"]},
            "ranges": {"type": "array", "items": {"type": "object", "required": ["min"],
                "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}}},
            "anything": {"x-kubernetes-preserve-unknown-fields": true},
            "port": {"x-kubernetes-int-or-string": true}}});
        let ok = json!({"exemptImages": ["a/*"], "rule": "RunAsAny", "ranges": [{"min": 1, "max": 2}],
            "anything": {"x": 1}, "port": "http"});
        assert_eq!(check(&schema, &ok, "parameters"), Ok(()));
        for (bad, message) in [
            (
                json!({"exemptImages": ["a", 3]}),
                "parameters.exemptImages[1]: expected string, got 3",
            ),
            (
                json!({"rule": "Sometimes"}),
                "parameters.rule: \"Sometimes\" is not one of \"MustRunAs\", \"RunAsAny\"",
            ),
            (
                json!({"ranges": [{"max": 2}]}),
                "parameters.ranges[0].min: required",
            ),
            (
                json!({"exemptImage": []}),
                "parameters.exemptImage: unknown field (the template's schema has anything, exemptImages, port, ranges, rule)",
            ),
            (
                json!({"port": 1.5}),
                "parameters.port: expected an integer or a string, got 1.5",
            ),
        ] {
            assert_eq!(check(&schema, &bad, "parameters").unwrap_err(), message);
        }
    }
}
