//! The policy's settings; every one is optional, with defaults that suit a
//! cluster running NVIDIA's GPU operator.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_sdk::pod::TemplatePathRule;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// Resource names that make a container a GPU container; `*` matches any
    /// run of characters (`nvidia.com/mig-*`).
    pub gpu_resources: Vec<String>,
    /// A pod with `spec.resourceClaims` (Dynamic Resource Allocation) counts
    /// as a GPU pod.
    pub dynamic_resource_claims: bool,
    /// Tolerations every GPU pod gets, unless an equal or broader one is
    /// there.
    pub tolerations: Vec<Toleration>,
    /// GPU class name → node selector requirements ANDed into the pod's
    /// required node affinity.
    pub classes: BTreeMap<String, Vec<Value>>,
    /// Per namespace: the default GPU class and Kueue queue.
    pub namespace_defaults: BTreeMap<String, NamespaceDefaults>,
    /// Give pods that ask for no GPU a required node affinity away from GPU
    /// nodes, and refuse them a GPU toleration.
    pub keep_cpu_pods_off_gpu_nodes: bool,
    /// The node label GPU nodes carry.
    pub gpu_node_label: String,
    /// Namespaces whose CPU-only pods may run on GPU nodes (device plugins,
    /// monitoring agents).
    pub exempt_namespaces: Vec<String>,
    /// Topology hints for the pods of one distributed job.
    pub topology: Topology,
    /// The `/dev/shm` volume for GPU containers; `false` turns it off.
    pub shm: Shm,
    /// Priority classes by workload label, for pods without one.
    pub priority_classes: Vec<PriorityClassRule>,
    /// Where pod templates live in kinds the SDK does not know.
    pub template_paths: Vec<TemplatePathRule>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            gpu_resources: ["nvidia.com/gpu", "nvidia.com/mig-*", "amd.com/gpu"]
                .map(String::from)
                .to_vec(),
            dynamic_resource_claims: true,
            tolerations: vec![Toleration {
                key: "nvidia.com/gpu".into(),
                operator: "Exists".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            }],
            classes: BTreeMap::new(),
            namespace_defaults: BTreeMap::new(),
            keep_cpu_pods_off_gpu_nodes: true,
            gpu_node_label: "nvidia.com/gpu.present".into(),
            exempt_namespaces: [
                "kube-system",
                "gpu-operator",
                "nvidia-gpu-operator",
                "nvidia-device-plugin",
                "nvidia-dra-driver-gpu",
            ]
            .map(String::from)
            .to_vec(),
            topology: Topology::default(),
            shm: Shm::default(),
            priority_classes: Vec::new(),
            template_paths: Vec::new(),
        }
    }
}

/// A toleration, as in a pod spec.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Toleration {
    /// Taint key; empty with `Exists` tolerates every taint.
    pub key: String,
    /// `Exists` or `Equal` (empty means `Equal`).
    pub operator: String,
    /// Taint value, for `Equal`.
    pub value: String,
    /// `NoSchedule`, `PreferNoSchedule`, `NoExecute`; empty means all.
    pub effect: String,
}

impl Toleration {
    /// Reads a toleration from a pod spec's JSON.
    pub fn from_value(value: &Value) -> Toleration {
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        Toleration {
            key: field("key"),
            operator: field("operator"),
            value: field("value"),
            effect: field("effect"),
        }
    }

    /// The toleration as a pod spec writes it.
    pub fn to_value(&self) -> Value {
        let mut out = serde_json::Map::new();
        for (name, field) in [
            ("key", &self.key),
            ("operator", &self.operator),
            ("value", &self.value),
            ("effect", &self.effect),
        ] {
            if !field.is_empty() {
                out.insert(name.into(), field.as_str().into());
            }
        }
        Value::Object(out)
    }

    fn exists(&self) -> bool {
        self.operator == "Exists"
    }

    /// Whether this toleration tolerates every taint `other` tolerates.
    pub fn covers(&self, other: &Toleration) -> bool {
        let effect = self.effect.is_empty() || self.effect == other.effect;
        if !effect {
            return false;
        }
        if self.key.is_empty() && self.exists() {
            return true;
        }
        self.key == other.key && (self.exists() || (!other.exists() && self.value == other.value))
    }

    /// `key=value:Effect`, as `kubectl describe` shows taints.
    pub fn describe(&self) -> String {
        let value = if self.exists() { "*" } else { &self.value };
        let effect = if self.effect.is_empty() {
            "*"
        } else {
            &self.effect
        };
        format!("{}={value}:{effect}", self.key)
    }
}

/// A namespace's defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NamespaceDefaults {
    /// GPU class for pods without the class annotation.
    pub class: Option<String>,
    /// Kueue queue for workloads without the queue-name label.
    pub queue_name: Option<String>,
}

/// Whether the topology hint is a preference or a requirement.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TopologyMode {
    /// Preferred pod affinity / `podset-preferred-topology`.
    #[default]
    Preferred,
    /// Required pod affinity / `podset-required-topology`.
    Required,
}

/// Topology hints for training gangs.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Topology {
    /// Labels naming a pod's job; the first one present groups the pod.
    pub group_labels: Vec<String>,
    /// Node label of the domain to pack a gang into.
    pub topology_key: String,
    /// Preferred or required.
    pub mode: TopologyMode,
    /// Weight of a preferred pod affinity term (1–100).
    pub weight: u8,
    /// Topology level for Kueue's podset topology annotation.
    pub kueue_level: String,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            group_labels: [
                "training.kubeflow.org/job-name",
                "jobset.sigs.k8s.io/jobset-name",
                "leaderworkerset.sigs.k8s.io/name",
                "volcano.sh/job-name",
                "batch.kubernetes.io/job-name",
            ]
            .map(String::from)
            .to_vec(),
            topology_key: "nvidia.com/gpu.clique".into(),
            mode: TopologyMode::Preferred,
            weight: 100,
            kueue_level: "nvidia.com/gpu.clique".into(),
        }
    }
}

/// The `/dev/shm` default: `false`, or the emptyDir's size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shm {
    /// No `/dev/shm` volume is added.
    Off,
    /// A memory-backed emptyDir, with this size limit if set.
    On {
        /// `sizeLimit` of the emptyDir, e.g. `16Gi`.
        size_limit: Option<String>,
    },
}

impl Default for Shm {
    fn default() -> Self {
        Shm::On { size_limit: None }
    }
}

impl<'de> Deserialize<'de> for Shm {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Switch(bool),
            Options {
                #[serde(rename = "sizeLimit")]
                size_limit: Option<String>,
            },
        }
        match Wire::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom("shm must be false, true, or {sizeLimit: <quantity>}")
        })? {
            Wire::Switch(false) => Ok(Shm::Off),
            Wire::Switch(true) => Ok(Shm::default()),
            Wire::Options { size_limit } => Ok(Shm::On { size_limit }),
        }
    }
}

impl Shm {
    /// The volume source.
    pub fn empty_dir(&self) -> Option<Value> {
        match self {
            Shm::Off => None,
            Shm::On { size_limit: None } => Some(json!({"medium": "Memory"})),
            Shm::On {
                size_limit: Some(limit),
            } => Some(json!({"medium": "Memory", "sizeLimit": limit})),
        }
    }
}

/// Pods labelled `label: value` get `className` as their priority class.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityClassRule {
    /// Label key, e.g. `tollgate.dev/workload`.
    pub label: String,
    /// Label value, e.g. `training`.
    pub value: String,
    /// PriorityClass name, e.g. `gpu-training`.
    pub class_name: String,
}

impl Settings {
    /// Checks what deserialization cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.gpu_resources.is_empty() && !self.dynamic_resource_claims {
            return Err("gpuResources is empty and dynamicResourceClaims is false: no pod could count as a GPU pod".into());
        }
        for (class, requirements) in &self.classes {
            if requirements.is_empty() {
                return Err(format!(
                    "classes.{class}: a class needs at least one node selector requirement"
                ));
            }
            for requirement in requirements {
                let operator = requirement["operator"].as_str().unwrap_or_default();
                if requirement["key"].as_str().is_none_or(str::is_empty)
                    || !["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"].contains(&operator)
                {
                    return Err(format!(
                        "classes.{class}: {requirement} is not a node selector requirement ({{key, operator: In|NotIn|Exists|DoesNotExist|Gt|Lt, values}})"
                    ));
                }
            }
        }
        for (namespace, defaults) in &self.namespace_defaults {
            if let Some(class) = &defaults.class
                && !self.classes.contains_key(class)
            {
                return Err(format!(
                    "namespaceDefaults.{namespace}.class: unknown class {class:?} (known: {})",
                    self.known_classes()
                ));
            }
        }
        if !(1..=100).contains(&self.topology.weight) {
            return Err(format!(
                "topology.weight must be 1 to 100, not {}",
                self.topology.weight
            ));
        }
        if self.keep_cpu_pods_off_gpu_nodes && self.gpu_node_label.is_empty() {
            return Err("gpuNodeLabel must not be empty while keepCpuPodsOffGpuNodes is on".into());
        }
        Ok(())
    }

    /// The known classes, for messages.
    pub fn known_classes(&self) -> String {
        if self.classes.is_empty() {
            "none configured".into()
        } else {
            self.classes.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}
