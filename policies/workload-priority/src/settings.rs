//! The policy's settings and their checks.

use serde::Deserialize;
use tollgate_sdk::pod::TemplatePathRule;
use tollgate_sdk::selector::Selector;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Namespaces where the system classes may be named and nothing else is
    /// checked.
    #[serde(default = "default_exempt")]
    pub exempt_namespaces: Vec<String>,
    /// Which classes workloads may name, per namespace; the first rule
    /// whose namespaces hold the request's applies.
    #[serde(default)]
    pub classes: Vec<ClassRule>,
    /// Training and batch workloads must use a class with
    /// `preemptionPolicy: Never`.
    #[serde(default)]
    pub training_must_not_preempt: bool,
    /// The class set on pods and templates that name none, per workload
    /// type (needs `mutating: true`).
    #[serde(default)]
    pub default_classes: Defaults,
    /// The label that says a workload's type (`training` or `inference`),
    /// where its kind does not.
    #[serde(default = "default_workload_label")]
    pub workload_label: String,
    /// Who may create or change PriorityClass objects above a ceiling, or
    /// global defaults.
    #[serde(default)]
    pub priority_classes: PriorityClassRules,
    /// Kueue queues in queued namespaces.
    #[serde(default)]
    pub queues: Option<Queues>,
    /// Resources that make a workload a GPU workload, by name prefix.
    #[serde(default = "default_gpu_resource_prefixes")]
    pub gpu_resource_prefixes: Vec<String>,
    /// Where pod specs live in kinds the SDK does not know.
    #[serde(default)]
    pub template_paths: Vec<TemplatePathRule>,
}

fn default_exempt() -> Vec<String> {
    vec!["kube-system".into()]
}

fn default_workload_label() -> String {
    "tollgate.dev/workload".into()
}

fn default_gpu_resource_prefixes() -> Vec<String> {
    vec!["nvidia.com/".into()]
}

/// The classes a namespace's workloads may name.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClassRule {
    /// The namespaces, by name.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The namespaces, by label.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// Classes allowed by name.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Classes allowed by value: any class whose value is at most this.
    #[serde(default)]
    pub max_value: Option<i64>,
}

/// Default classes by workload type.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// For training and batch workloads.
    #[serde(default)]
    pub training: Option<String>,
    /// For inference and serving workloads.
    #[serde(default)]
    pub inference: Option<String>,
}

/// Who may create high or global-default PriorityClasses.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityClassRules {
    /// A class above this value needs an allowed user or group.
    #[serde(default)]
    pub max_value: Option<i64>,
    /// Whether `globalDefault: true` needs an allowed user or group.
    #[serde(default = "yes")]
    pub restrict_global_default: bool,
    /// Users who may.
    #[serde(default)]
    pub allowed_users: Vec<String>,
    /// Groups whose members may.
    #[serde(default = "default_admin_groups")]
    pub allowed_groups: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_admin_groups() -> Vec<String> {
    vec!["system:masters".into()]
}

/// Kueue queues.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Queues {
    /// The queued namespaces, by name.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The queued namespaces, by label.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// GPU workloads must name one of the namespace's LocalQueues.
    #[serde(default = "yes")]
    pub require_queue: bool,
    /// GPU jobs that name no queue must be created suspended.
    #[serde(default = "yes")]
    pub refuse_unsuspended_without_queue: bool,
    /// The LocalQueue API version the cluster serves.
    #[serde(default = "default_local_queue_api_version")]
    pub local_queue_api_version: String,
}

fn default_local_queue_api_version() -> String {
    "kueue.x-k8s.io/v1beta1".into()
}

/// Checks what deserialization cannot.
pub fn validate(settings: &Settings) -> Result<(), String> {
    for (i, rule) in settings.classes.iter().enumerate() {
        if rule.namespaces.is_empty() == rule.namespace_selector.is_none() {
            return Err(format!(
                "classes[{i}] needs exactly one of namespaces (names) and namespaceSelector (labels)"
            ));
        }
        if rule.allowed.is_empty() && rule.max_value.is_none() {
            return Err(format!(
                "classes[{i}] allows no class: list classes in allowed, or set maxValue"
            ));
        }
    }
    if let Some(queues) = &settings.queues
        && queues.namespaces.is_empty() == queues.namespace_selector.is_none()
    {
        return Err(
            "queues needs exactly one of namespaces (names) and namespaceSelector (labels)".into(),
        );
    }
    if settings.workload_label.is_empty() {
        return Err("workloadLabel is empty: name a label, e.g. tollgate.dev/workload".into());
    }
    for name in [
        &settings.default_classes.training,
        &settings.default_classes.inference,
    ]
    .into_iter()
    .flatten()
    {
        if name.starts_with("system-") {
            return Err(format!(
                "defaultClasses: {name:?} is a system class, reserved for the cluster's own components"
            ));
        }
    }
    Ok(())
}
