//! An OPA module's settings (`entrypoint`, `data`, `inputShape`,
//! `parameters`), bound to the module once, and its result set read as a
//! verdict.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

use crate::engine::Verdict;

/// What the policy's `input` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
enum InputShape {
    /// The AdmissionReview (`input.request.object`), as OPA's Kubernetes
    /// admission examples read it.
    #[default]
    AdmissionReview,
    /// Gatekeeper's: `input.review` (the AdmissionRequest) and
    /// `input.parameters`.
    Gatekeeper,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    entrypoint: Option<String>,
    data: Option<Json>,
    #[serde(default)]
    input_shape: InputShape,
    parameters: Option<Json>,
}

/// Settings checked against one module.
#[derive(Debug)]
pub struct Bound {
    /// The module's id of the entrypoint.
    pub entrypoint: i32,
    name: String,
    /// `data` as JSON text: the bundle's, with the settings' over it.
    pub data: String,
    /// The input's text before and after the AdmissionRequest.
    before: String,
    after: String,
}

impl Bound {
    /// Binds `settings` (JSON text) to a module with `entrypoints`, over a
    /// bundle's own data.
    ///
    /// # Errors
    ///
    /// Unknown fields, an entrypoint the module lacks (or none named when it
    /// has several), data that is not an object, or parameters without
    /// Gatekeeper's input shape.
    pub fn new(
        settings: &str,
        entrypoints: &BTreeMap<String, i32>,
        bundle_data: Option<&Json>,
    ) -> Result<Bound, String> {
        let settings: Settings =
            serde_json::from_str(settings).map_err(|e| format!("settings: {e}"))?;
        let listed = || entrypoints.keys().cloned().collect::<Vec<_>>().join(", ");
        let name = match settings.entrypoint {
            // `data.a.b` is OPA's reference to entrypoint `a/b`.
            Some(name) => match name.strip_prefix("data.") {
                Some(reference) => reference.replace('.', "/"),
                None => name,
            },
            None if entrypoints.len() == 1 => {
                entrypoints.keys().next().cloned().unwrap_or_default()
            }
            None => {
                return Err(format!(
                    "entrypoint: the module has several, name one of: {}",
                    listed()
                ));
            }
        };
        let entrypoint = *entrypoints.get(&name).ok_or_else(|| {
            format!(
                "entrypoint: the module has no {name:?}; it has: {}",
                listed()
            )
        })?;
        let mut data = bundle_data
            .cloned()
            .unwrap_or_else(|| Json::Object(Default::default()));
        match settings.data {
            Some(over @ Json::Object(_)) => merge(&mut data, over),
            Some(_) => return Err("data: must be an object".into()),
            None => {}
        }
        let (before, after) = match (settings.input_shape, settings.parameters) {
            (InputShape::AdmissionReview, None) => (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":"#
                    .to_owned(),
                "}".to_owned(),
            ),
            (InputShape::AdmissionReview, Some(_)) => {
                return Err("parameters: only with inputShape: gatekeeper".into());
            }
            (InputShape::Gatekeeper, parameters) => (
                r#"{"review":"#.to_owned(),
                format!(
                    r#","parameters":{}}}"#,
                    parameters.unwrap_or_else(|| Json::Object(Default::default()))
                ),
            ),
        };
        Ok(Bound {
            entrypoint,
            name,
            data: data.to_string(),
            before,
            after,
        })
    }

    /// The input's text before and after the AdmissionRequest.
    pub fn input_around(&self) -> (&str, &str) {
        (&self.before, &self.after)
    }

    /// The verdict a result set (`[{"result": …}, …]`) gives: the members of
    /// every result deny.
    ///
    /// # Errors
    ///
    /// Text that is not a result set.
    pub fn verdict(&self, results: &str) -> Result<Verdict, String> {
        let results: Vec<Json> = serde_json::from_str(results)
            .map_err(|e| format!("opa_eval gave no result set: {e}"))?;
        let mut messages = Vec::new();
        for result in &results {
            match result.get("result") {
                Some(value) => self.messages(value, &mut messages),
                None => {
                    return Err(format!(
                        "opa_eval gave a result without \"result\": {result}"
                    ));
                }
            }
        }
        Ok(if messages.is_empty() {
            Verdict {
                allowed: true,
                ..Verdict::default()
            }
        } else {
            Verdict {
                allowed: false,
                message: Some(messages.join("\n")),
                code: Some(403),
                ..Verdict::default()
            }
        })
    }

    fn messages(&self, value: &Json, out: &mut Vec<String>) {
        match value {
            Json::Null | Json::Bool(false) => {}
            Json::Bool(true) => out.push(format!("denied by OPA entrypoint {}", self.name)),
            Json::Array(members) => out.extend(members.iter().map(message)),
            Json::Object(members) if members.is_empty() => {}
            other => out.push(message(other)),
        }
    }
}

/// One member's message: itself when a string, its `msg` when it has one,
/// else its JSON.
fn message(member: &Json) -> String {
    match member {
        Json::String(text) => text.clone(),
        Json::Object(fields) => match fields.get("msg") {
            Some(Json::String(msg)) => msg.clone(),
            _ => member.to_string(),
        },
        other => other.to_string(),
    }
}

/// Merges `over` into `base`: objects member by member, anything else
/// replaced.
fn merge(base: &mut Json, over: Json) {
    match (base, over) {
        (Json::Object(base), Json::Object(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entrypoints() -> BTreeMap<String, i32> {
        [("a/deny".to_owned(), 0), ("b/violation".to_owned(), 1)].into()
    }

    #[test]
    fn settings_name_an_entrypoint_and_shape_the_input() {
        let bound = Bound::new(
            r#"{"entrypoint":"data.b.violation","inputShape":"gatekeeper","parameters":{"x":1}}"#,
            &entrypoints(),
            None,
        )
        .unwrap();
        assert_eq!(bound.entrypoint, 1);
        assert_eq!(
            bound.input_around(),
            (r#"{"review":"#, r#","parameters":{"x":1}}"#)
        );
        let bound = Bound::new(r#"{"entrypoint":"a/deny"}"#, &entrypoints(), None).unwrap();
        assert_eq!(bound.entrypoint, 0);
        assert!(bound.input_around().0.ends_with(r#""request":"#));
        let one: BTreeMap<String, i32> = [("only/deny".to_owned(), 7)].into();
        assert_eq!(Bound::new("{}", &one, None).unwrap().entrypoint, 7);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        for (settings, expected) in [
            (
                "{}",
                "entrypoint: the module has several, name one of: a/deny, b/violation",
            ),
            (
                r#"{"entrypoint":"c/x"}"#,
                "entrypoint: the module has no \"c/x\"; it has: a/deny, b/violation",
            ),
            (
                r#"{"entrypoint":"a/deny","data":[1]}"#,
                "data: must be an object",
            ),
            (
                r#"{"entrypoint":"a/deny","parameters":{}}"#,
                "parameters: only with inputShape: gatekeeper",
            ),
            (
                r#"{"entrypoint":"a/deny","inputShape":"rego"}"#,
                "settings: unknown variant `rego`",
            ),
            (
                r#"{"entrypoint":"a/deny","extra":1}"#,
                "settings: unknown field `extra`",
            ),
        ] {
            let error = Bound::new(settings, &entrypoints(), None).unwrap_err();
            assert!(error.starts_with(expected), "{settings}: {error}");
        }
    }

    #[test]
    fn settings_data_lies_over_the_bundles() {
        let bundle = serde_json::json!({"a": {"keep": 1, "over": 1}, "b": [1]});
        let bound = Bound::new(
            r#"{"entrypoint":"a/deny","data":{"a":{"over":2},"b":[2]}}"#,
            &entrypoints(),
            Some(&bundle),
        )
        .unwrap();
        let data: Json = serde_json::from_str(&bound.data).unwrap();
        assert_eq!(
            data,
            serde_json::json!({"a": {"keep": 1, "over": 2}, "b": [2]})
        );
    }

    #[test]
    fn result_sets_become_verdicts() {
        let bound = Bound::new(r#"{"entrypoint":"a/deny"}"#, &entrypoints(), None).unwrap();
        let verdict = |results: &str| bound.verdict(results).unwrap();
        assert!(verdict("[]").allowed, "undefined");
        assert!(verdict(r#"[{"result":[]}]"#).allowed, "empty set");
        assert!(verdict(r#"[{"result":false}]"#).allowed);
        let denied = verdict(r#"[{"result":["one",{"msg":"two","details":{}},{"x":1}]}]"#);
        assert!(!denied.allowed);
        assert_eq!(denied.message.as_deref(), Some("one\ntwo\n{\"x\":1}"));
        assert_eq!(
            verdict(r#"[{"result":true}]"#).message.as_deref(),
            Some("denied by OPA entrypoint a/deny")
        );
        assert!(
            bound
                .verdict("{}")
                .unwrap_err()
                .starts_with("opa_eval gave no result set")
        );
        assert!(
            bound
                .verdict(r#"[{"x":1}]"#)
                .unwrap_err()
                .contains("without \"result\"")
        );
    }
}
