//! The JSON Patch (RFC 6902) from the original object to the mutated one,
//! computed on the JSON text: subtrees whose text is the same on both sides
//! are skipped without being parsed. Policies that edit through the SDK's
//! `edit::Node` write untouched parts back byte for byte, so only the path
//! to what changed is ever parsed.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;
use serde_json::value::RawValue;

/// The patch that turns `original` into `mutated` (both JSON texts).
///
/// # Errors
///
/// When either text is not JSON.
pub fn diff(original: &str, mutated: &str) -> Result<Patch, serde_json::Error> {
    let original: &RawValue = serde_json::from_str(original)?;
    let mutated: &RawValue = serde_json::from_str(mutated)?;
    let mut operations = Vec::new();
    diff_values(&mut PointerBuf::root(), original, mutated, &mut operations)?;
    Ok(Patch(operations))
}

enum Shape {
    Object,
    Array,
    Scalar,
}

fn shape(value: &RawValue) -> Shape {
    match value.get().as_bytes().first() {
        Some(b'{') => Shape::Object,
        Some(b'[') => Shape::Array,
        _ => Shape::Scalar,
    }
}

fn parsed(value: &RawValue) -> Result<Value, serde_json::Error> {
    serde_json::from_str(value.get())
}

fn diff_values(
    path: &mut PointerBuf,
    old: &RawValue,
    new: &RawValue,
    operations: &mut Vec<PatchOperation>,
) -> Result<(), serde_json::Error> {
    if old.get() == new.get() {
        return Ok(());
    }
    match (shape(old), shape(new)) {
        (Shape::Object, Shape::Object) => {
            let old: BTreeMap<String, &RawValue> = serde_json::from_str(old.get())?;
            let new: BTreeMap<String, &RawValue> = serde_json::from_str(new.get())?;
            for (key, old_value) in &old {
                path.push_back(key.as_str());
                match new.get(key) {
                    Some(new_value) => diff_values(path, old_value, new_value, operations)?,
                    None => operations.push(PatchOperation::Remove(RemoveOperation {
                        path: path.clone(),
                    })),
                }
                path.pop_back();
            }
            for (key, new_value) in new.iter().filter(|(key, _)| !old.contains_key(*key)) {
                operations.push(PatchOperation::Add(AddOperation {
                    path: path.with_trailing_token(key.as_str()),
                    value: parsed(new_value)?,
                }));
            }
        }
        (Shape::Array, Shape::Array) => {
            let old: Vec<&RawValue> = serde_json::from_str(old.get())?;
            let new: Vec<&RawValue> = serde_json::from_str(new.get())?;
            for (index, (old_value, new_value)) in old.iter().zip(&new).enumerate() {
                path.push_back(index);
                diff_values(path, old_value, new_value, operations)?;
                path.pop_back();
            }
            for (index, added) in new.iter().enumerate().skip(old.len()) {
                operations.push(PatchOperation::Add(AddOperation {
                    path: path.with_trailing_token(index),
                    value: parsed(added)?,
                }));
            }
            // Remove from the end, so that earlier indices stay valid.
            for index in (new.len()..old.len()).rev() {
                operations.push(PatchOperation::Remove(RemoveOperation {
                    path: path.with_trailing_token(index),
                }));
            }
        }
        _ => {
            // Scalars, or a change of type: the same value written
            // differently (escapes, spacing) needs no operation; `1.0` and
            // `1` are different values (an integer field refuses `1.0`), so
            // they get one.
            let new_value = parsed(new)?;
            if parsed(old)? != new_value {
                operations.push(PatchOperation::Replace(ReplaceOperation {
                    path: path.clone(),
                    value: new_value,
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies the raw diff and checks the result against `new`.
    fn round_trip(old: &str, new: &str) -> Patch {
        let patch = diff(old, new).unwrap();
        let mut value: Value = serde_json::from_str(old).unwrap();
        json_patch::patch(&mut value, &patch).unwrap();
        assert_eq!(
            value,
            serde_json::from_str::<Value>(new).unwrap(),
            "{patch:?}"
        );
        patch
    }

    #[test]
    fn identical_and_equivalent_texts_give_no_operations() {
        assert!(
            round_trip(r#"{"a":[1,{"b":"c"}]}"#, r#"{"a":[1,{"b":"c"}]}"#)
                .0
                .is_empty()
        );
        assert!(
            round_trip(r#"{"a" : 1.0, "b":"\u00e9"}"#, r#"{"b":"é","a":1.0}"#)
                .0
                .is_empty()
        );
    }

    #[test]
    fn a_number_that_changes_type_gets_an_operation() {
        let patch = round_trip(r#"{"a":1.0,"b":2}"#, r#"{"a":1,"b":2.0}"#);
        assert_eq!(patch.0.len(), 2, "{patch:?}");
        assert!(round_trip(r#"{"a":1e2}"#, r#"{"a":100.0}"#).0.is_empty());
    }

    #[test]
    fn a_float_in_the_patch_is_the_value_the_policy_wrote() {
        // Found by fuzzing: without exact float parsing, printing this value
        // and reading it back moved it by one unit in the last place.
        let patch = round_trip("99999", "99999999999999599999");
        let written = serde_json::to_string(&patch).unwrap();
        let again: Patch = serde_json::from_str(&written).unwrap();
        assert_eq!(again, patch);
        let mut value = json!(99999);
        json_patch::patch(&mut value, &again).unwrap();
        assert_eq!(
            value,
            serde_json::from_str::<Value>("99999999999999599999").unwrap()
        );
    }

    #[test]
    fn additions_removals_and_replacements_apply() {
        let patch = round_trip(
            r#"{"spec":{"containers":[{"name":"a"}],"keep":{"x":1}},"gone":true}"#,
            r#"{"spec":{"containers":[{"name":"a","volumeMounts":[{"m":1}]},{"name":"b"}],"keep":{"x":1},"affinity":{}}}"#,
        );
        let paths: Vec<String> = patch
            .0
            .iter()
            .map(|op| match op {
                PatchOperation::Add(op) => format!("add {}", op.path),
                PatchOperation::Remove(op) => format!("remove {}", op.path),
                PatchOperation::Replace(op) => format!("replace {}", op.path),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            paths,
            [
                "remove /gone",
                "add /spec/containers/0/volumeMounts",
                "add /spec/containers/1",
                "add /spec/affinity",
            ]
        );
        round_trip(r#"[1,2,3,4]"#, r#"[1,9]"#);
        round_trip(r#"{"a":{"b":1}}"#, r#"{"a":[1]}"#);
        round_trip(r#"{"a/b":{"~c":1}}"#, r#"{"a/b":{"~c":2}}"#);
    }

    #[test]
    fn agrees_with_a_full_diff_on_real_objects() {
        let old = json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [
            {"name": "c", "resources": {"limits": {"nvidia.com/gpu": "8"}}}], "tolerations": [{"key": "x"}]}});
        let mut new = old.clone();
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "nvidia.com/gpu", "operator": "Exists"}));
        new["spec"]["affinity"] = json!({"podAffinity": {}});
        new["metadata"]["labels"]["q"] = json!("r");
        round_trip(&old.to_string(), &new.to_string());
    }
}
