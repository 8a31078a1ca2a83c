//! A workload as the policy reads it: its type (training or inference), its
//! pod templates' classes, whether it asks for GPUs, its Kueue queue.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::pod::model::Resources;
use tollgate_sdk::pod::{Located, PodTemplate, TemplatePaths, field_path};

/// Kueue's queue label.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";

/// What a workload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Training and batch: runs to completion.
    Training,
    /// Inference and serving: runs until scaled down.
    Inference,
}

impl Type {
    /// The type a kind is, when the kind says it.
    fn of_kind(group: &str, kind: &str) -> Option<Type> {
        match (group, kind) {
            ("batch", "Job" | "CronJob")
            | ("kubeflow.org", "PyTorchJob" | "TFJob" | "MPIJob" | "PaddleJob" | "XGBoostJob")
            | ("trainer.kubeflow.org", "TrainJob")
            | ("jobset.x-k8s.io", "JobSet")
            | ("ray.io", "RayJob")
            | ("batch.volcano.sh", "Job")
            | (
                "argoproj.io",
                "Workflow" | "CronWorkflow" | "WorkflowTemplate" | "ClusterWorkflowTemplate",
            ) => Some(Type::Training),
            ("apps", "Deployment" | "StatefulSet" | "ReplicaSet")
            | ("ray.io", "RayService")
            | ("leaderworkerset.x-k8s.io", "LeaderWorkerSet")
            | ("serving.kserve.io", "InferenceService") => Some(Type::Inference),
            _ => None,
        }
    }

    /// The type a label value says.
    fn of_label(value: &str) -> Option<Type> {
        match value {
            "training" | "batch" => Some(Type::Training),
            "inference" | "serving" => Some(Type::Inference),
            _ => None,
        }
    }
}

/// The object's own metadata and the fields of its spec that say whether
/// it is suspended.
#[derive(Default, Deserialize)]
struct Top {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    spec: TopSpec,
}

/// An object's or a pod template's metadata: its labels and owners.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    owner_references: Vec<Owner>,
}

#[derive(Deserialize)]
struct Owner {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    controller: bool,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TopSpec {
    /// Job, JobSet, RayJob, TrainJob, RayCluster.
    #[serde(default)]
    suspend: Option<bool>,
    /// Kubeflow's jobs.
    #[serde(default)]
    run_policy: RunPolicy,
}

#[derive(Default, Deserialize)]
struct RunPolicy {
    #[serde(default)]
    suspend: Option<bool>,
}

/// A pod spec's class and what its containers ask.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    /// `priorityClassName`.
    #[serde(default)]
    pub priority_class_name: Option<String>,
    /// `priority`, as the Priority admission plugin set it.
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default, borrow)]
    init_containers: Vec<Container<'a>>,
    #[serde(default, borrow)]
    containers: Vec<Container<'a>>,
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    resources: Resources<'a>,
}

/// One object with pod templates (a Pod is its own template).
pub struct Workload<'a> {
    group: &'a str,
    kind: &'a str,
    /// `None` for a Pod, whose metadata is its template's.
    top: Option<Top>,
    /// The templates, by JSON Pointer.
    pub templates: Located<PodTemplate<Meta, Spec<'a>>>,
}

impl<'a> Workload<'a> {
    /// Reads an object of `group`/`kind` from its JSON text.
    ///
    /// # Errors
    ///
    /// The text is not JSON, or a template does not fit.
    pub fn read(
        group: &'a str,
        kind: &'a str,
        text: &'a str,
        paths: &TemplatePaths,
    ) -> Result<Self, serde_json::Error> {
        // A Pod is its own template: one pass reads it all.
        let pod = group.is_empty() && kind == "Pod";
        Ok(Workload {
            group,
            kind,
            top: if pod {
                None
            } else {
                Some(serde_json::from_str(text)?)
            },
            templates: paths.pod_templates_in(group, kind, text)?,
        })
    }

    /// Whether this is a Pod.
    pub fn is_pod(&self) -> bool {
        self.top.is_none()
    }

    /// The object's metadata.
    fn metadata(&self) -> Option<&Meta> {
        match &self.top {
            Some(top) => Some(&top.metadata),
            None => self.templates.first().map(|(_, pod)| &pod.metadata),
        }
    }

    /// Whether this is a Pod a controller owns (its owner was checked).
    pub fn controlled(&self) -> bool {
        self.is_pod()
            && self
                .metadata()
                .is_some_and(|m| m.owner_references.iter().any(|o| o.controller))
    }

    /// What the workload is for: its label, else its kind, else (a Pod)
    /// its controller's kind.
    pub fn kind_of_work(&self, label: &str) -> Option<Type> {
        let metadata = self.metadata()?;
        if let Some(value) = metadata.labels.get(label) {
            return Type::of_label(value);
        }
        if let Some(found) = Type::of_kind(self.group, self.kind) {
            return Some(found);
        }
        let owner = metadata.owner_references.iter().find(|o| o.controller)?;
        match owner.kind.as_str() {
            "Job" => Some(Type::Training),
            "ReplicaSet" | "StatefulSet" => Some(Type::Inference),
            other => ["kubeflow.org", "ray.io", "leaderworkerset.x-k8s.io"]
                .into_iter()
                .find_map(|group| Type::of_kind(group, other)),
        }
    }

    /// Whether a container of a template asks for a resource of
    /// `prefixes`.
    pub fn asks_gpus(&self, prefixes: &[String]) -> bool {
        self.templates.iter().any(|(_, template)| {
            let spec = &template.spec;
            spec.init_containers
                .iter()
                .chain(&spec.containers)
                .any(|c| c.resources.asks_any(prefixes))
        })
    }

    /// The Kueue queue it names (on the object, or on a template).
    pub fn queue(&self) -> Option<&str> {
        self.metadata()
            .and_then(|m| m.labels.get(QUEUE_LABEL))
            .or_else(|| {
                self.templates
                    .iter()
                    .find_map(|(_, t)| t.metadata.labels.get(QUEUE_LABEL))
            })
            .map(String::as_str)
    }

    /// Whether it is a job that starts unless suspended, and is not
    /// suspended; `None` for kinds that cannot be suspended.
    pub fn runs_unsuspended(&self) -> Option<bool> {
        let spec = &self.top.as_ref()?.spec;
        let suspend = match (self.group, self.kind) {
            ("kubeflow.org", _) => spec.run_policy.suspend,
            ("batch", "Job")
            | ("jobset.x-k8s.io", "JobSet")
            | ("ray.io", "RayJob" | "RayCluster")
            | ("trainer.kubeflow.org", "TrainJob") => spec.suspend,
            _ => return None,
        };
        Some(suspend != Some(true))
    }
}

/// How messages name the pod template at `pointer`: nothing for a Pod,
/// else its path (`spec.pytorchReplicaSpecs.Worker.template: `).
pub fn place(pointer: &str) -> String {
    if pointer.is_empty() {
        String::new()
    } else {
        format!("{}: ", field_path(pointer))
    }
}
