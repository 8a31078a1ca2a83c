//! Constraints as Gatekeeper reads them: which requests a constraint's
//! `spec.match` selects, and what its enforcement action does at the
//! admission webhook.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::selector::Selector;

/// One Constraint of the template, as the host prepared it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Constraint {
    /// `metadata.name`: named in messages (`[psp-privileged] …`).
    pub name: String,
    /// `spec.match`.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// `spec.enforcementAction`.
    #[serde(default)]
    pub enforcement_action: Action,
    /// `spec.scopedEnforcementActions`, for `enforcementAction: scoped`.
    #[serde(default)]
    pub scoped_enforcement_actions: Vec<ScopedAction>,
    /// `spec.parameters`, checked against the template's schema, as Rego
    /// values (`null` when absent).
    #[serde(default = "null")]
    pub parameters: regorus::Value,
}

fn null() -> regorus::Value {
    regorus::Value::Null
}

/// What a violation does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Recorded only (an audit annotation).
    Dryrun,
    /// Admitted with a warning.
    Warn,
    /// Refused.
    #[default]
    Deny,
    /// As `scopedEnforcementActions` say per enforcement point.
    Scoped,
}

/// An action at some enforcement points.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopedAction {
    /// The action.
    pub action: Action,
    /// Where it applies.
    #[serde(default)]
    pub enforcement_points: Vec<EnforcementPoint>,
}

/// An enforcement point, by name.
#[derive(Debug, Deserialize)]
pub struct EnforcementPoint {
    /// `validation.gatekeeper.sh` (the admission webhook), `audit.gatekeeper.sh`,
    /// `gator.gatekeeper.sh` or `*`.
    pub name: String,
}

/// The admission webhook's enforcement point.
const WEBHOOK: &str = "validation.gatekeeper.sh";

impl Constraint {
    /// The strongest action a violation takes at the admission webhook;
    /// `None` when the constraint is scoped to other points only.
    pub fn webhook_action(&self) -> Option<Action> {
        match self.enforcement_action {
            Action::Scoped => self
                .scoped_enforcement_actions
                .iter()
                .filter(|s| {
                    s.enforcement_points
                        .iter()
                        .any(|p| p.name == WEBHOOK || p.name == "*")
                })
                .map(|s| s.action)
                .max(),
            action => Some(action),
        }
    }
}

/// `spec.match` of a Constraint.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Groups and kinds; none: every kind.
    #[serde(default)]
    pub kinds: Vec<Kinds>,
    /// `*`, `Cluster` or `Namespaced`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Namespaces (a trailing `*` is a prefix); none: every namespace.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Namespaces left out (a trailing `*` is a prefix).
    #[serde(default)]
    pub excluded_namespaces: Vec<String>,
    /// Labels of the object (or, on UPDATE and DELETE, its old version).
    #[serde(default)]
    pub label_selector: Option<Selector>,
    /// Labels of the object's namespace.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// The object's name (a trailing `*` is a prefix).
    #[serde(default)]
    pub name: Option<String>,
}

/// One entry of `match.kinds`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Kinds {
    /// API groups (`""` is the core group, `*` any).
    #[serde(default)]
    pub api_groups: Vec<String>,
    /// Kinds (`*` any).
    #[serde(default)]
    pub kinds: Vec<String>,
}

/// What matching reads of a request.
pub struct Subject<'a> {
    /// The object's API group.
    pub group: &'a str,
    /// Its kind.
    pub kind: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its namespace (a Namespace's own name); empty when cluster-scoped.
    pub namespace: &'a str,
    /// Whether the object is namespaced.
    pub namespaced: bool,
    /// Labels of the object and of its old version.
    pub labels: [Option<&'a BTreeMap<String, String>>; 2],
}

/// `name`, or a prefix when it ends in `*`.
fn glob(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl Match {
    /// Whether the constraint selects `subject`; `namespace_labels` is
    /// called only when a namespace selector needs them.
    pub fn selects(
        &self,
        subject: &Subject<'_>,
        namespace_labels: impl FnOnce() -> tollgate_sdk::Result<BTreeMap<String, String>>,
    ) -> tollgate_sdk::Result<bool> {
        let any = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        if !self.kinds.is_empty()
            && !self
                .kinds
                .iter()
                .any(|k| any(&k.api_groups, subject.group) && any(&k.kinds, subject.kind))
        {
            return Ok(false);
        }
        match self.scope.as_deref() {
            Some("Cluster") if subject.namespaced => return Ok(false),
            Some("Namespaced") if !subject.namespaced => return Ok(false),
            _ => {}
        }
        let namespace = subject.namespace;
        if !self.namespaces.is_empty()
            && (namespace.is_empty() || !self.namespaces.iter().any(|p| glob(p, namespace)))
        {
            return Ok(false);
        }
        if !namespace.is_empty() && self.excluded_namespaces.iter().any(|p| glob(p, namespace)) {
            return Ok(false);
        }
        if let Some(name) = &self.name
            && !glob(name, subject.name)
        {
            return Ok(false);
        }
        if let Some(selector) = &self.label_selector {
            let empty = BTreeMap::new();
            let mut labels = subject.labels.iter().flatten().peekable();
            let matched = if labels.peek().is_none() {
                selector.matches_labels(&empty)
            } else {
                labels.any(|labels| selector.matches_labels(labels))
            };
            if !matched {
                return Ok(false);
            }
        }
        if let Some(selector) = &self.namespace_selector {
            // Cluster-scoped objects have no namespace to select by.
            if namespace.is_empty() || !selector.matches_labels(&namespace_labels()?) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(
        kind: &'a str,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Subject<'a> {
        Subject {
            group: "",
            kind,
            name: "web-1",
            namespace,
            namespaced: !namespace.is_empty(),
            labels: [Some(labels), None],
        }
    }

    fn selects(matches: serde_json::Value, subject: &Subject<'_>) -> bool {
        let matches: Match = serde_json::from_value(matches).unwrap();
        matches
            .selects(subject, || {
                Ok(BTreeMap::from([("env".to_owned(), "prod".to_owned())]))
            })
            .unwrap()
    }

    #[test]
    fn every_field_of_match_narrows_as_gatekeeper_reads_it() {
        let labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let pod = subject("Pod", "team-a", &labels);
        assert!(selects(serde_json::json!({}), &pod));
        assert!(selects(
            serde_json::json!({"kinds": [{"apiGroups": [""], "kinds": ["Pod"]}]}),
            &pod
        ));
        assert!(!selects(
            serde_json::json!({"kinds": [{"apiGroups": ["apps"], "kinds": ["*"]}]}),
            &pod
        ));
        assert!(selects(serde_json::json!({"namespaces": ["team-*"]}), &pod));
        assert!(!selects(
            serde_json::json!({"excludedNamespaces": ["team-a"]}),
            &pod
        ));
        assert!(!selects(serde_json::json!({"scope": "Cluster"}), &pod));
        assert!(selects(serde_json::json!({"name": "web-*"}), &pod));
        assert!(!selects(serde_json::json!({"name": "db"}), &pod));
        assert!(selects(
            serde_json::json!({"labelSelector": {"matchLabels": {"app": "web"}}}),
            &pod
        ));
        assert!(!selects(
            serde_json::json!({"labelSelector": {"matchLabels": {"app": "db"}}}),
            &pod
        ));
        assert!(selects(
            serde_json::json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}),
            &pod
        ));
        assert!(!selects(
            serde_json::json!({"namespaceSelector": {"matchLabels": {"env": "dev"}}}),
            &pod
        ));
        let node = subject("Node", "", &labels);
        assert!(!selects(
            serde_json::json!({"namespaces": ["team-a"]}),
            &node
        ));
        assert!(!selects(
            serde_json::json!({"namespaceSelector": {}}),
            &node
        ));
        assert!(selects(serde_json::json!({"scope": "Cluster"}), &node));
    }

    #[test]
    fn scoped_actions_apply_where_they_name_the_webhook() {
        let constraint = |value: serde_json::Value| -> Constraint {
            serde_json::from_value(
                serde_json::json!({"name": "c"})
                    .as_object()
                    .unwrap()
                    .clone()
                    .into_iter()
                    .chain(value.as_object().unwrap().clone())
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
            )
            .unwrap()
        };
        assert_eq!(
            constraint(serde_json::json!({})).webhook_action(),
            Some(Action::Deny)
        );
        assert_eq!(
            constraint(serde_json::json!({"enforcementAction": "warn"})).webhook_action(),
            Some(Action::Warn)
        );
        let scoped = constraint(
            serde_json::json!({"enforcementAction": "scoped", "scopedEnforcementActions": [
            {"action": "warn", "enforcementPoints": [{"name": "validation.gatekeeper.sh"}]},
            {"action": "deny", "enforcementPoints": [{"name": "audit.gatekeeper.sh"}]}]}),
        );
        assert_eq!(scoped.webhook_action(), Some(Action::Warn));
        let elsewhere = constraint(
            serde_json::json!({"enforcementAction": "scoped", "scopedEnforcementActions": [
            {"action": "deny", "enforcementPoints": [{"name": "gator.gatekeeper.sh"}]}]}),
        );
        assert_eq!(elsewhere.webhook_action(), None);
        let everywhere = constraint(
            serde_json::json!({"enforcementAction": "scoped", "scopedEnforcementActions": [
            {"action": "deny", "enforcementPoints": [{"name": "*"}]}]}),
        );
        assert_eq!(everywhere.webhook_action(), Some(Action::Deny));
    }
}
