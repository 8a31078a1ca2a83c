//! Helpers every pod-oriented policy needs, written once: the containers of a
//! pod spec (init, regular, ephemeral) and the pod specs inside an object,
//! whether it is a Pod, a workload with a pod template, or an ML job CRD.
//!
//! Pod specs are found through [`TemplatePaths`]: for each API group and kind,
//! the dotted paths from the object's root to its pod specs, where `*` stands
//! for every element of an array or every value of a map
//! (`spec.pytorchReplicaSpecs.*.template.spec`). Policies extend the defaults
//! from their settings with [`TemplatePaths::with`].

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

/// Which list of a pod spec a container comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerKind {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    Regular,
    /// `spec.ephemeralContainers`.
    Ephemeral,
}

impl ContainerKind {
    /// All kinds, in the order PSA reports them.
    pub const ALL: [ContainerKind; 3] = [ContainerKind::Init, ContainerKind::Regular, ContainerKind::Ephemeral];

    /// The pod spec field holding this list.
    pub fn field(self) -> &'static str {
        match self {
            ContainerKind::Init => "initContainers",
            ContainerKind::Regular => "containers",
            ContainerKind::Ephemeral => "ephemeralContainers",
        }
    }

    /// How messages name a container of this kind, e.g. `init container`.
    pub fn noun(self) -> &'static str {
        match self {
            ContainerKind::Init => "init container",
            ContainerKind::Regular => "container",
            ContainerKind::Ephemeral => "ephemeral container",
        }
    }
}

/// Every container of a pod spec, init containers first, then regular, then
/// ephemeral ones.
pub fn containers(pod_spec: &Value) -> impl Iterator<Item = (ContainerKind, &Value)> {
    ContainerKind::ALL.into_iter().flat_map(move |kind| {
        pod_spec
            .get(kind.field())
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(move |container| (kind, container))
    })
}

/// Calls `visit` on every container of a pod spec, mutably, in the order of
/// [`containers`].
pub fn for_each_container_mut(pod_spec: &mut Value, mut visit: impl FnMut(ContainerKind, &mut Value)) {
    for kind in ContainerKind::ALL {
        if let Some(list) = pod_spec.get_mut(kind.field()).and_then(Value::as_array_mut) {
            for container in list {
                visit(kind, container);
            }
        }
    }
}

/// The name of a container, or `""`.
pub fn container_name(container: &Value) -> &str {
    container.get("name").and_then(Value::as_str).unwrap_or("")
}

/// One kind's template paths, as written in settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplatePathRule {
    /// API group, e.g. `kubeflow.org` (empty or absent for the core group).
    #[serde(default)]
    pub group: String,
    /// Kind, e.g. `PyTorchJob`.
    pub kind: String,
    /// Dotted paths to pod specs, `*` for every element; `[*]` is accepted as
    /// a synonym (`spec.replicatedJobs[*].template`).
    pub paths: Vec<String>,
}

/// Where the pod specs of each kind live.
#[derive(Debug, Clone)]
pub struct TemplatePaths {
    by_kind: HashMap<(String, String), Vec<Vec<String>>>,
}

/// Built-in kinds: (group, kind, paths to pod specs).
const DEFAULT_PATHS: &[(&str, &str, &[&str])] = &[
    ("", "Pod", &["spec"]),
    ("", "PodTemplate", &["template.spec"]),
    ("", "ReplicationController", &["spec.template.spec"]),
    ("apps", "Deployment", &["spec.template.spec"]),
    ("apps", "ReplicaSet", &["spec.template.spec"]),
    ("apps", "StatefulSet", &["spec.template.spec"]),
    ("apps", "DaemonSet", &["spec.template.spec"]),
    ("batch", "Job", &["spec.template.spec"]),
    ("batch", "CronJob", &["spec.jobTemplate.spec.template.spec"]),
    ("kubeflow.org", "PyTorchJob", &["spec.pytorchReplicaSpecs.*.template.spec"]),
    ("kubeflow.org", "TFJob", &["spec.tfReplicaSpecs.*.template.spec"]),
    ("kubeflow.org", "MPIJob", &["spec.mpiReplicaSpecs.*.template.spec"]),
    ("kubeflow.org", "PaddleJob", &["spec.paddleReplicaSpecs.*.template.spec"]),
    ("kubeflow.org", "XGBoostJob", &["spec.xgbReplicaSpecs.*.template.spec"]),
    ("jobset.x-k8s.io", "JobSet", &["spec.replicatedJobs.*.template.spec.template.spec"]),
    ("ray.io", "RayCluster", &["spec.headGroupSpec.template.spec", "spec.workerGroupSpecs.*.template.spec"]),
    (
        "leaderworkerset.x-k8s.io",
        "LeaderWorkerSet",
        &["spec.leaderWorkerTemplate.leaderTemplate.spec", "spec.leaderWorkerTemplate.workerTemplate.spec"],
    ),
    ("batch.volcano.sh", "Job", &["spec.tasks.*.template.spec"]),
];

fn split_path(path: &str) -> Vec<String> {
    path.replace("[*]", ".*")
        .split('.')
        .filter(|segment| !segment.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Default for TemplatePaths {
    fn default() -> Self {
        let by_kind = DEFAULT_PATHS
            .iter()
            .map(|(group, kind, paths)| {
                ((group.to_string(), kind.to_string()), paths.iter().map(|p| split_path(p)).collect())
            })
            .collect();
        TemplatePaths { by_kind }
    }
}

impl TemplatePaths {
    /// The defaults with `rules` added; a rule for a kind the defaults know
    /// replaces the default paths of that kind.
    pub fn with(rules: &[TemplatePathRule]) -> Self {
        let mut paths = TemplatePaths::default();
        for rule in rules {
            paths.by_kind.insert(
                (rule.group.clone(), rule.kind.clone()),
                rule.paths.iter().map(|p| split_path(p)).collect(),
            );
        }
        paths
    }

    /// Whether objects of this group and kind carry pod specs.
    pub fn knows(&self, group: &str, kind: &str) -> bool {
        self.by_kind.contains_key(&(group.to_owned(), kind.to_owned()))
    }

    /// JSON Pointers (RFC 6901) to every pod spec in `object`, whose group and
    /// kind are read from its `apiVersion` and `kind`. Empty for kinds without
    /// pod specs.
    pub fn pod_spec_pointers(&self, object: &Value) -> Vec<String> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        let Some(paths) = self.by_kind.get(&(group.to_owned(), kind.to_owned())) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for path in paths {
            collect(object, path, String::new(), &mut found);
        }
        found
    }

    /// Every pod spec in `object`, with its JSON Pointer.
    pub fn pod_specs<'a>(&self, object: &'a Value) -> Vec<(String, &'a Value)> {
        self.pod_spec_pointers(object)
            .into_iter()
            .filter_map(|pointer| object.pointer(&pointer).map(|spec| (pointer, spec)))
            .collect()
    }

    /// Calls `visit` on every pod spec in `object`, mutably.
    pub fn for_each_pod_spec_mut(&self, object: &mut Value, mut visit: impl FnMut(&str, &mut Value)) {
        for pointer in self.pod_spec_pointers(object) {
            if let Some(spec) = object.pointer_mut(&pointer) {
                visit(&pointer, spec);
            }
        }
    }
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn collect(value: &Value, path: &[String], pointer: String, found: &mut Vec<String>) {
    let Some((head, rest)) = path.split_first() else {
        if value.is_object() {
            found.push(pointer);
        }
        return;
    };
    match (head.as_str(), value) {
        ("*", Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                collect(item, rest, format!("{pointer}/{index}"), found);
            }
        }
        ("*", Value::Object(map)) => {
            for (key, item) in map {
                collect(item, rest, format!("{pointer}/{}", escape(key)), found);
            }
        }
        (key, Value::Object(map)) => {
            if let Some(item) = map.get(key) {
                collect(item, rest, format!("{pointer}/{}", escape(key)), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_pod_spec_of_a_pod() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}});
        assert_eq!(TemplatePaths::default().pod_spec_pointers(&pod), vec!["/spec"]);
    }

    #[test]
    fn finds_every_replica_template_of_a_pytorch_job() {
        let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {"containers": []}}},
            "Worker": {"template": {"spec": {"containers": []}}},
        }}});
        assert_eq!(
            TemplatePaths::default().pod_spec_pointers(&job),
            vec!["/spec/pytorchReplicaSpecs/Master/template/spec", "/spec/pytorchReplicaSpecs/Worker/template/spec"]
        );
    }

    #[test]
    fn finds_templates_inside_arrays_of_a_jobset() {
        let jobset = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "spec": {"replicatedJobs": [
            {"template": {"spec": {"template": {"spec": {"containers": []}}}}},
            {"template": {"spec": {"template": {"spec": {"containers": []}}}}},
        ]}});
        assert_eq!(TemplatePaths::default().pod_spec_pointers(&jobset).len(), 2);
    }

    #[test]
    fn settings_rules_add_kinds_and_accept_bracket_wildcards() {
        let paths = TemplatePaths::with(&[TemplatePathRule {
            group: "example.com".into(),
            kind: "Trainer".into(),
            paths: vec!["spec.roles[*].pod".into()],
        }]);
        let trainer = json!({"apiVersion": "example.com/v1", "kind": "Trainer", "spec": {"roles": [{"pod": {}}]}});
        assert_eq!(paths.pod_spec_pointers(&trainer), vec!["/spec/roles/0/pod"]);
    }

    #[test]
    fn unknown_kinds_have_no_pod_specs() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {}});
        assert!(TemplatePaths::default().pod_spec_pointers(&cm).is_empty());
    }

    #[test]
    fn visits_init_regular_and_ephemeral_containers_in_order() {
        let spec = json!({
            "containers": [{"name": "main"}],
            "initContainers": [{"name": "init"}],
            "ephemeralContainers": [{"name": "debug"}],
        });
        let names: Vec<_> = containers(&spec).map(|(kind, c)| (kind, container_name(c))).collect();
        assert_eq!(
            names,
            vec![(ContainerKind::Init, "init"), (ContainerKind::Regular, "main"), (ContainerKind::Ephemeral, "debug")]
        );
    }
}
