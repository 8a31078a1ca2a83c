//! What a policy's verdict may say, checked before the chain acts on it.
//!
//! The engine bounds the output's size; this module checks its meaning as
//! the apiserver will read it: audit annotation keys become
//! `<webhook>/<policy>.<key>` and must be a valid qualified name, unique
//! within the answer; a denial's code is an HTTP error status; a mutated
//! object is a JSON object that is still the object the request names
//! (apiVersion, kind, name, namespace). A verdict that fails a check is the
//! policy's failure, and its `failurePolicy` applies.

use std::borrow::Cow;

use serde::Deserialize;

use crate::engine::Verdict;

/// Annotation keys the chain itself writes for a policy (`mode: audit` and
/// `warn`), which the policy may not use.
pub const RESERVED_KEYS: [&str; 2] = ["violation", "would-mutate"];

/// Longest name part of a qualified name (Kubernetes' limit).
const MAX_NAME: usize = 63;

/// Why a verdict was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// An audit annotation key that is not a valid name.
    #[error(
        "audit annotation key {key:?} is invalid: {policy}.{key} must be at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    AnnotationKey {
        /// The policy's name (the key's prefix).
        policy: String,
        /// The key as returned.
        key: String,
    },
    /// The same audit annotation key twice.
    #[error("audit annotation key {0:?} is returned twice")]
    DuplicateAnnotation(String),
    /// A key the host writes itself.
    #[error("audit annotation key {0:?} is reserved for the host's own annotations")]
    ReservedAnnotation(String),
    /// A denial whose code is not an HTTP error status.
    #[error("status code {0} for a denial: use 400 to 599 (or none, for 403)")]
    Code(u16),
    /// A mutation from a policy not configured to mutate.
    #[error("the policy returned a mutation but is not configured with mutating: true")]
    NotMutating,
    /// A mutated object that is not a JSON object.
    #[error("the mutated object is not a JSON object: {0}")]
    NotAnObject(String),
    /// A mutation that changes what the object is.
    #[error(
        "the mutation changes {0}, which a mutating webhook may not change; return the object with it as it was"
    )]
    Identity(&'static str),
}

/// Which object a request is about, as its envelope says: what a mutated
/// object must still be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity<'a> {
    /// `group/version`, or `version` for the core group.
    pub api_version: Cow<'a, str>,
    /// The kind.
    pub kind: &'a str,
    /// The name (empty on a CREATE with `generateName`).
    pub name: &'a str,
    /// The namespace (empty for cluster-scoped objects).
    pub namespace: &'a str,
}

/// The identity fields of an object, as read from its JSON text.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fields<'a> {
    #[serde(borrow, default)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<Names<'a>>,
}

#[derive(Debug, Default, Deserialize)]
struct Names<'a> {
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    namespace: Option<Cow<'a, str>>,
}

impl Identity<'_> {
    /// The first identity field `object` (JSON text) does not keep, checking
    /// on the way that it is one JSON object.
    fn changed_in(&self, object: &str) -> Result<Option<&'static str>, Invalid> {
        if !object.trim_start().starts_with('{') {
            return Err(Invalid::NotAnObject("it does not start with '{'".into()));
        }
        let fields: Fields<'_> =
            serde_json::from_str(object).map_err(|e| Invalid::NotAnObject(e.to_string()))?;
        let names = fields.metadata.unwrap_or_default();
        let changed = if fields.api_version.as_deref() != Some(&*self.api_version) {
            Some("apiVersion")
        } else if fields.kind.as_deref() != Some(self.kind) {
            Some("kind")
        } else if names.name.as_deref().unwrap_or_default() != self.name {
            Some("metadata.name")
        } else if names
            .namespace
            .as_deref()
            .is_some_and(|namespace| !namespace.is_empty() && namespace != self.namespace)
        {
            Some("metadata.namespace")
        } else {
            None
        };
        Ok(changed)
    }
}

/// Whether `policy.key` is a valid name part of a qualified name.
fn valid_key(policy: &str, key: &str) -> bool {
    let full = policy.len() + 1 + key.len();
    let alphanumeric = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    full <= MAX_NAME
        && alphanumeric(key.chars().last())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a verdict's warnings, annotations and code.
///
/// # Errors
///
/// The first thing found wrong.
pub fn check(policy: &str, verdict: &Verdict) -> Result<(), Invalid> {
    for (index, (key, _)) in verdict.audit_annotations.iter().enumerate() {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Invalid::ReservedAnnotation(key.clone()));
        }
        if !valid_key(policy, key) {
            return Err(Invalid::AnnotationKey {
                policy: policy.to_owned(),
                key: key.clone(),
            });
        }
        if verdict.audit_annotations[..index]
            .iter()
            .any(|(other, _)| other == key)
        {
            return Err(Invalid::DuplicateAnnotation(key.clone()));
        }
    }
    if !verdict.allowed
        && let Some(code) = verdict.code
        && !(400..=599).contains(&code)
    {
        return Err(Invalid::Code(code));
    }
    Ok(())
}

/// Checks that a mutated object (JSON text) is a JSON object that is still
/// the request's object.
///
/// # Errors
///
/// Not a JSON object, or a changed identity.
pub fn check_mutation(request: &Identity<'_>, mutated: &str) -> Result<(), Invalid> {
    match request.changed_in(mutated)? {
        Some(field) => Err(Invalid::Identity(field)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(annotations: &[(&str, &str)]) -> Verdict {
        Verdict {
            allowed: true,
            audit_annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Verdict::default()
        }
    }

    #[test]
    fn annotation_keys_must_be_valid_unique_and_not_reserved() {
        assert_eq!(check("gpu-quota", &verdict(&[("usage", "1/8")])), Ok(()));
        assert_eq!(
            check("gpu-quota", &verdict(&[("usage", "1"), ("usage", "2")])),
            Err(Invalid::DuplicateAnnotation("usage".into()))
        );
        assert_eq!(
            check("p", &verdict(&[("violation", "x")])),
            Err(Invalid::ReservedAnnotation("violation".into()))
        );
        for bad in ["", "a b", "a/b", "ends-", &"k".repeat(62), "naïve"] {
            assert!(
                matches!(
                    check("p", &verdict(&[(bad, "x")])),
                    Err(Invalid::AnnotationKey { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(check("p", &verdict(&[(&"k".repeat(61), "x")])), Ok(()));
    }

    #[test]
    fn a_denial_code_must_be_an_http_error_status() {
        let denial = |code| Verdict {
            allowed: false,
            code: Some(code),
            ..Verdict::default()
        };
        assert_eq!(check("p", &denial(403)), Ok(()));
        assert_eq!(check("p", &denial(599)), Ok(()));
        assert_eq!(check("p", &denial(200)), Err(Invalid::Code(200)));
        assert_eq!(check("p", &denial(0)), Err(Invalid::Code(0)));
    }

    #[test]
    fn mutations_keep_the_objects_identity() {
        let original = Identity {
            api_version: "v1".into(),
            kind: "Pod",
            name: "p",
            namespace: "ml",
        };
        assert_eq!(
            check_mutation(
                &original,
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#
            ),
            Ok(()),
            "the apiserver fills in a missing namespace"
        );
        assert_eq!(
            check_mutation(
                &original,
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"other"}}"#
            ),
            Err(Invalid::Identity("metadata.namespace"))
        );
        assert_eq!(
            check_mutation(
                &original,
                r#"{"apiVersion":"apps/v1","kind":"Pod","metadata":{"name":"p"}}"#
            ),
            Err(Invalid::Identity("apiVersion"))
        );
        assert_eq!(
            check_mutation(
                &original,
                r#"{"kind":"Pod","apiVersion":"v1","metadata":{"namespace":"ml","name":"p","labels":{"a":"b"}}}"#
            ),
            Ok(())
        );
        assert_eq!(
            check_mutation(
                &original,
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"q","namespace":"ml"}}"#
            ),
            Err(Invalid::Identity("metadata.name"))
        );
        assert_eq!(
            check_mutation(&original, r#"{"apiVersion":"v1","kind":"Pod"}"#),
            Err(Invalid::Identity("metadata.name"))
        );
        for bad in ["[1]", "\"text\"", "{\"a\":", "{} {}", "null"] {
            assert!(
                matches!(check_mutation(&original, bad), Err(Invalid::NotAnObject(_))),
                "{bad}"
            );
        }
    }
}
