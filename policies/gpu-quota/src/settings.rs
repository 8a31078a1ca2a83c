//! The policy's settings and their checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::selector::Selector;

/// The policy's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// The quota scopes; a pod is checked against every scope its namespace
    /// is in.
    #[serde(default)]
    pub scopes: Vec<Scope>,
    /// Containers must set GPU limits, and GPU requests (if set) equal to
    /// them.
    #[serde(default)]
    pub require_limits_equal_requests: bool,
    /// Resources counted, by name prefix: GPUs, MIG slices and shared GPUs
    /// of the NVIDIA device plugin by default.
    #[serde(default = "default_resource_prefixes")]
    pub resource_prefixes: Vec<String>,
    /// The node label naming a GPU product.
    #[serde(default = "default_product_label")]
    pub product_label: String,
    /// The pod annotation naming a GPU class (as gpu-placement reads it).
    #[serde(default = "default_class_annotation")]
    pub class_annotation: String,
    /// GPU class → product, for pods that name a class instead of a product.
    #[serde(default)]
    pub classes: BTreeMap<String, String>,
}

fn default_resource_prefixes() -> Vec<String> {
    vec!["nvidia.com/".into()]
}

fn default_product_label() -> String {
    "nvidia.com/gpu.product".into()
}

fn default_class_annotation() -> String {
    "gpu.tollgate.dev/class".into()
}

/// How a scope sums usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Each namespace has the limits on its own.
    #[default]
    Namespace,
    /// Namespaces sharing a team label's value share the limits.
    Team,
}

fn default_team_label() -> String {
    "team".into()
}

/// One quota scope.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scope {
    /// A name for messages and reservations; `scopes[N]` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// The namespaces in the scope, by name.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The namespaces in the scope, by label.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// Per namespace, or per team.
    #[serde(default)]
    pub aggregate: Aggregate,
    /// The namespace label whose value names the team.
    #[serde(default = "default_team_label")]
    pub team_label: String,
    /// Limits per resource (`nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`).
    #[serde(default)]
    pub limits: BTreeMap<String, u64>,
    /// Limits per GPU product (the `nvidia.com/gpu.product` value), then
    /// per resource.
    #[serde(default)]
    pub per_product: BTreeMap<String, BTreeMap<String, u64>>,
    /// The most one pod may ask, per resource.
    #[serde(default)]
    pub max_per_pod: BTreeMap<String, u64>,
}

impl Settings {
    /// Checks what deserialization cannot.
    ///
    /// # Errors
    ///
    /// The first problem, naming the scope and field.
    pub fn check(&self) -> Result<(), String> {
        if self.scopes.is_empty() && !self.require_limits_equal_requests {
            return Err("no scopes and requireLimitsEqualRequests is false, so the policy checks nothing: add a scope with limits".into());
        }
        if self.resource_prefixes.is_empty() {
            return Err("resourcePrefixes is empty: no resource would be counted (the default is [\"nvidia.com/\"])".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, scope) in self.scopes.iter().enumerate() {
            let name = self.scope_name(i);
            if !names.insert(name.clone()) {
                return Err(format!("scopes: two scopes are named {name:?}"));
            }
            let at = |field: &str| format!("scope {name:?}: {field}");
            match (scope.namespaces.is_empty(), &scope.namespace_selector) {
                (true, None) => {
                    return Err(format!(
                        "{}: select namespaces with namespaces (names) or namespaceSelector (labels)",
                        at("namespaces")
                    ));
                }
                (false, Some(_)) => {
                    return Err(format!(
                        "{}: use namespaces or namespaceSelector, not both",
                        at("namespaces")
                    ));
                }
                _ => {}
            }
            if scope.limits.is_empty()
                && scope.per_product.is_empty()
                && scope.max_per_pod.is_empty()
            {
                return Err(format!(
                    "{}: the scope sets no limits, perProduct or maxPerPod",
                    at("limits")
                ));
            }
            let resources = scope
                .limits
                .keys()
                .chain(scope.max_per_pod.keys())
                .chain(scope.per_product.values().flat_map(BTreeMap::keys));
            for resource in resources {
                if !self.counts(resource) {
                    return Err(format!(
                        "{}: {resource:?} is not counted (resourcePrefixes is {:?}); a limit on it would never apply",
                        at("limits"),
                        self.resource_prefixes
                    ));
                }
            }
            if scope.aggregate == Aggregate::Team && scope.team_label.is_empty() {
                return Err(format!("{}: is empty", at("teamLabel")));
            }
        }
        Ok(())
    }

    /// Whether a resource is counted.
    pub fn counts(&self, resource: &str) -> bool {
        self.resource_prefixes
            .iter()
            .any(|p| resource.starts_with(p.as_str()))
    }

    /// The name of scope `i`.
    pub fn scope_name(&self, i: usize) -> String {
        self.scopes[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("scopes[{i}]"))
    }
}
