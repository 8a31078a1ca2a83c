//! What a policy decides: allow or deny, with warnings, audit annotations and
//! an optional mutated object.

use serde_json::Value;

/// A policy's decision about one request.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The denial's reason: what is wrong and what to change.
    pub message: Option<String>,
    /// HTTP status code of a denial (the host uses 403 when unset).
    pub code: Option<u16>,
    /// Warnings shown to the user.
    pub warnings: Vec<String>,
    /// Audit annotations recorded by the apiserver.
    pub audit_annotations: Vec<(String, String)>,
    /// The object as the policy wants it, as JSON text (mutating policies
    /// only).
    pub mutated_object: Option<String>,
}

impl Verdict {
    /// Allows the request unchanged.
    pub fn allow() -> Self {
        Verdict {
            allowed: true,
            ..Verdict::default()
        }
    }

    /// Denies the request; the message should say what to change.
    pub fn deny(message: impl Into<String>) -> Self {
        Verdict {
            allowed: false,
            message: Some(message.into()),
            ..Verdict::default()
        }
    }

    /// Allows the request with the object replaced by `object`. The host turns
    /// the difference into a JSON Patch; an unchanged object yields none.
    pub fn mutate(object: Value) -> Self {
        // `to_string` would go through `Display`, several times slower.
        Verdict::mutate_json(serde_json::to_string(&object).expect("a Value serializes"))
    }

    /// [`Verdict::mutate`] with the object already written as JSON text
    /// (e.g. by [`crate::edit::Node::to_json`]).
    pub fn mutate_json(object: String) -> Self {
        Verdict {
            allowed: true,
            mutated_object: Some(object),
            ..Verdict::default()
        }
    }

    /// The mutated object parsed, if there is one (for tests).
    pub fn mutated(&self) -> Option<Value> {
        self.mutated_object
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }

    /// Sets the HTTP status code of a denial.
    #[must_use]
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    /// Adds a warning.
    #[must_use]
    pub fn warn(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// The verdict on the problems a policy found in an object named
    /// `subject` (`NetworkPolicy "web"`): the new ones deny, joined; those
    /// the object already had `before` an UPDATE are warnings, so that an
    /// object written before the policy was installed stays editable.
    pub fn on_problems(subject: &str, problems: Vec<String>, before: &[String]) -> Self {
        let (kept, new): (Vec<String>, Vec<String>) =
            problems.into_iter().partition(|p| before.contains(p));
        let mut verdict = if new.is_empty() {
            Verdict::allow()
        } else {
            Verdict::deny(format!("{subject}: {}", new.join("; ")))
        };
        for problem in kept {
            verdict = verdict.warn(format!(
                "{subject}: {problem} (it was so before this update)"
            ));
        }
        verdict
    }

    /// Adds an audit annotation.
    #[must_use]
    pub fn annotate(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.audit_annotations.push((key.into(), value.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_problems_deny_and_old_ones_warn() {
        let problems = vec!["a is open".to_owned(), "b is open".to_owned()];
        let verdict = Verdict::on_problems("Thing \"t\"", problems.clone(), &[]);
        assert_eq!(
            verdict.message.as_deref(),
            Some("Thing \"t\": a is open; b is open")
        );
        let verdict = Verdict::on_problems("Thing \"t\"", problems, &["a is open".into()]);
        assert_eq!(verdict.message.as_deref(), Some("Thing \"t\": b is open"));
        assert_eq!(
            verdict.warnings,
            ["Thing \"t\": a is open (it was so before this update)"]
        );
        assert!(Verdict::on_problems("T", Vec::new(), &[]).allowed);
    }
}
