//! Which policies apply to a request.
//!
//! An [`Index`] maps (API group, kind) to the policies that name them, so a
//! request only looks at its candidates, never at every policy; the
//! remaining conditions (operation, namespace, selectors) are checked per
//! candidate by [`matches`].

use std::collections::{BTreeMap, HashMap};

use super::config::Match;
use super::request::Request;

/// Labels of namespaces, for namespace selectors. Served from cluster
/// context where there is one.
pub trait NamespaceLabels: Send + Sync {
    /// The labels of `namespace`, if known.
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

/// Policy positions by the (group, kind) they match.
#[derive(Debug, Default)]
pub struct Index {
    exact: HashMap<(String, String), Vec<usize>>,
    any_group: HashMap<String, Vec<usize>>,
    any_kind: HashMap<String, Vec<usize>>,
    any: Vec<usize>,
}

impl Index {
    /// Indexes `(position, match)` pairs; positions keep configuration order.
    pub fn build<'m>(entries: impl IntoIterator<Item = (usize, &'m Match)>) -> Self {
        let mut index = Index::default();
        for (position, matches) in entries {
            for group in &matches.api_groups {
                for kind in &matches.kinds {
                    let list = match (group.as_str(), kind.as_str()) {
                        ("*", "*") => &mut index.any,
                        ("*", kind) => index.any_group.entry(kind.to_owned()).or_default(),
                        (group, "*") => index.any_kind.entry(group.to_owned()).or_default(),
                        (group, kind) => index
                            .exact
                            .entry((group.to_owned(), kind.to_owned()))
                            .or_default(),
                    };
                    if list.last() != Some(&position) {
                        list.push(position);
                    }
                }
            }
        }
        index
    }

    /// Positions of the policies naming this group and kind, in
    /// configuration order.
    pub fn candidates(&self, group: &str, kind: &str) -> Vec<usize> {
        let mut found = Vec::new();
        // Look-ups by borrowed (group, kind) need an owned key for the tuple
        // map; the common case hits a kind-only or exact entry.
        if let Some(list) = self.exact.get(&(group.to_owned(), kind.to_owned())) {
            found.extend_from_slice(list);
        }
        for list in [
            self.any_group.get(kind),
            self.any_kind.get(group),
            Some(&self.any),
        ]
        .into_iter()
        .flatten()
        {
            found.extend_from_slice(list);
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// Whether a candidate's remaining conditions hold for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// They hold.
    Yes,
    /// They do not.
    No,
    /// They hold but for the namespace selector, and the namespace's labels
    /// are not cached: read them, then ask [`matches_with_labels`].
    NeedsNamespace,
}

/// Whether a candidate's remaining conditions hold for `request`, with the
/// namespace labels `namespaces` has cached.
pub fn matches(rule: &Match, request: &Request<'_>, namespaces: &dyn NamespaceLabels) -> Matched {
    let selects_namespace = rule.namespace_selector.is_some() && namespaced(request);
    let labels = if !selects_namespace {
        None
    } else if is_namespace(request) {
        Some(request.labels().clone())
    } else {
        match namespaces.labels(&request.namespace) {
            Some(labels) => Some(labels),
            None => {
                return if matches_with_labels(rule, request, None) {
                    Matched::NeedsNamespace
                } else {
                    Matched::No
                };
            }
        }
    };
    if matches_with_labels(rule, request, labels.as_ref()) {
        Matched::Yes
    } else {
        Matched::No
    }
}

/// Whether the namespace selector applies: Kubernetes leaves cluster-scoped
/// objects to it only when they are Namespaces (matched by their own
/// labels).
fn namespaced(request: &Request<'_>) -> bool {
    !request.namespace.is_empty() || is_namespace(request)
}

fn is_namespace(request: &Request<'_>) -> bool {
    request.kind == "Namespace" && request.group.is_empty()
}

/// Whether the conditions hold with `labels` as the namespace's (`None`:
/// the namespace selector is not checked).
pub fn matches_with_labels(
    rule: &Match,
    request: &Request<'_>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    if !rule.operations.contains(&request.operation) {
        return false;
    }
    let namespace = request.namespace.as_ref();
    if !rule.namespaces.is_empty() && !rule.namespaces.iter().any(|n| n == namespace) {
        return false;
    }
    if rule.exclude_namespaces.iter().any(|n| n == namespace) {
        return false;
    }
    if let (Some(selector), Some(labels)) = (&rule.namespace_selector, labels)
        && !selector.matches_labels(labels)
    {
        return false;
    }
    if !request.subresource.is_empty()
        && !rule
            .subresources
            .iter()
            .any(|s| s == "*" || *s == request.subresource)
    {
        return false;
    }
    if let Some(selector) = &rule.object_selector
        && !selector.matches_labels(request.labels())
        && (request.old_object.is_none() || !selector.matches_labels(request.old_labels()))
    {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use tollgate_sdk::selector::Selector;

    use super::*;
    use crate::policy::config::Operation;

    /// No namespace's labels are known.
    struct Unknown;

    impl NamespaceLabels for Unknown {
        fn labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
            None
        }
    }

    fn rule(groups: &[&str], kinds: &[&str]) -> Match {
        Match {
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
            ..Match::default()
        }
    }

    /// Whether `rule` matches a Pod request for `object` (JSON text).
    fn admits(
        rule: &Match,
        object: &str,
        namespace: &str,
        operation: &str,
        namespaces: &dyn NamespaceLabels,
    ) -> bool {
        let text = format!(
            r#"{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"{operation}","namespace":"{namespace}","name":"p","object":{object}}}"#
        );
        matches(rule, &Request::parse(&text).unwrap(), namespaces) == Matched::Yes
    }

    #[test]
    fn candidates_come_from_exact_and_wildcard_entries_in_order() {
        let rules = [
            rule(&["apps"], &["Deployment"]),
            rule(&["*"], &["*"]),
            rule(&[""], &["Pod"]),
            rule(&["*"], &["Pod"]),
        ];
        let index = Index::build(rules.iter().enumerate());
        assert_eq!(index.candidates("", "Pod"), vec![1, 2, 3]);
        assert_eq!(index.candidates("apps", "Deployment"), vec![0, 1]);
        assert_eq!(index.candidates("batch", "Job"), vec![1]);
    }

    #[test]
    fn operations_namespaces_and_object_selectors_filter() {
        let text = r#"{"metadata":{"labels":{"gpu":"yes"}}}"#;
        let mut rule = rule(&[""], &["Pod"]);
        assert!(admits(&rule, text, "ml", "CREATE", &Unknown));
        assert!(!admits(&rule, text, "ml", "DELETE", &Unknown));
        rule.exclude_namespaces = vec!["kube-system".into()];
        assert!(!admits(&rule, text, "kube-system", "CREATE", &Unknown));
        rule.namespaces = vec!["ml".into()];
        assert!(!admits(&rule, text, "web", "CREATE", &Unknown));
        rule.object_selector = Some(Selector::parse("gpu=no").unwrap());
        assert!(!admits(&rule, text, "ml", "CREATE", &Unknown));
    }

    #[test]
    fn an_object_selector_matches_the_old_object_or_the_new_one() {
        let mut rule = rule(&[""], &["Pod"]);
        rule.operations = vec![Operation::Update];
        rule.object_selector = Some(Selector::parse("gpu=yes").unwrap());
        let update = |new: &str, old: &str| {
            let text = format!(
                r#"{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"UPDATE","namespace":"ml","name":"p","object":{new},"oldObject":{old}}}"#
            );
            matches(&rule, &Request::parse(&text).unwrap(), &Unknown) == Matched::Yes
        };
        let labelled = r#"{"metadata":{"labels":{"gpu":"yes"}}}"#;
        let bare = r#"{"metadata":{}}"#;
        assert!(update(labelled, bare), "the new object matches");
        assert!(
            update(bare, labelled),
            "the label is being removed: the old one matches"
        );
        assert!(!update(bare, bare));
    }

    #[test]
    fn subresources_are_seen_only_when_asked_for() {
        let mut rule = rule(&[""], &["Pod"]);
        let request = |subresource: &str| {
            format!(
                r#"{{"uid":"u","kind":{{"group":"","version":"v1","kind":"Pod"}},"operation":"UPDATE","subResource":"{subresource}","namespace":"ml","name":"p","object":{{}}}}"#
            )
        };
        rule.operations = vec![Operation::Update];
        let sees = |rule: &Match, subresource: &str| {
            let text = request(subresource);
            matches(rule, &Request::parse(&text).unwrap(), &Unknown) == Matched::Yes
        };
        assert!(sees(&rule, ""));
        assert!(!sees(&rule, "status"));
        rule.subresources = vec!["ephemeralcontainers".into()];
        assert!(sees(&rule, "ephemeralcontainers"));
        assert!(!sees(&rule, "status"));
        rule.subresources = vec!["*".into()];
        assert!(sees(&rule, "status"));
    }

    #[test]
    fn namespace_selectors_use_the_namespace_labels_provider() {
        struct Teams;
        impl NamespaceLabels for Teams {
            fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
                (namespace == "ml").then(|| [("team".to_string(), "vision".to_string())].into())
            }
        }
        let mut rule = rule(&[""], &["Pod"]);
        rule.namespace_selector = Some(Selector::parse("team=vision").unwrap());
        let text = "{}";
        assert!(admits(&rule, text, "ml", "CREATE", &Teams));
        assert!(!admits(&rule, text, "web", "CREATE", &Teams));
        // Unknown labels are never taken as none: they are to be read.
        let text = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ml","name":"p","object":{}}"#;
        let request = Request::parse(text).unwrap();
        assert_eq!(matches(&rule, &request, &Unknown), Matched::NeedsNamespace);
        // A cluster-scoped object is not excluded by a namespace selector.
        let node = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Node"},"operation":"CREATE","namespace":"","name":"n","object":{}}"#;
        rule.kinds = vec!["*".into()];
        assert_eq!(
            matches(&rule, &Request::parse(node).unwrap(), &Unknown),
            Matched::Yes
        );
    }
}
