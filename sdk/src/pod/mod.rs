//! Helpers every pod-oriented policy needs, written once: the containers of a
//! pod spec (init, regular, ephemeral) and the pod specs inside an object,
//! whether it is a Pod, a workload with a pod template, or an ML job CRD.
//!
//! Pod specs are found through [`TemplatePaths`]: for each API group and kind,
//! the dotted paths from the object's root to its pod specs, where `*` stands
//! for every element of an array or every value of a map
//! (`spec.pytorchReplicaSpecs.*.template.spec`). Policies extend the defaults
//! from their settings with [`TemplatePaths::with`]. [`model`] is the typed
//! Pod policies read them as.

mod argo;
pub mod model;

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::edit::{Node, Shape};

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
    pub const ALL: [ContainerKind; 3] = [
        ContainerKind::Init,
        ContainerKind::Regular,
        ContainerKind::Ephemeral,
    ];

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
pub fn for_each_container_mut(
    pod_spec: &mut Value,
    mut visit: impl FnMut(ContainerKind, &mut Value),
) {
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

/// The three container lists of a pod spec, each container parsed as `C`: a
/// struct of only the fields a policy reads, so the rest is skipped without
/// allocating.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", bound(deserialize = "C: Deserialize<'de>"))]
pub struct ContainerLists<C> {
    /// `initContainers`.
    #[serde(default)]
    pub init_containers: Vec<C>,
    /// `containers`.
    #[serde(default)]
    pub containers: Vec<C>,
    /// `ephemeralContainers`.
    #[serde(default)]
    pub ephemeral_containers: Vec<C>,
}

impl<C> ContainerLists<C> {
    /// Every container with its kind and index in its list, in the order of
    /// [`containers`].
    pub fn iter(&self) -> impl Iterator<Item = (ContainerKind, usize, &C)> {
        [
            (ContainerKind::Init, &self.init_containers),
            (ContainerKind::Regular, &self.containers),
            (ContainerKind::Ephemeral, &self.ephemeral_containers),
        ]
        .into_iter()
        .flat_map(|(kind, list)| {
            list.iter()
                .enumerate()
                .map(move |(index, c)| (kind, index, c))
        })
    }
}

/// A pod template as a policy reads it: its metadata and its spec, each
/// parsed as a struct of only the fields the policy needs.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(bound(deserialize = "M: Deserialize<'de> + Default, S: Deserialize<'de> + Default"))]
pub struct PodTemplate<M, S> {
    /// `metadata` (labels, annotations, …).
    #[serde(default)]
    pub metadata: M,
    /// `spec`, the pod spec.
    #[serde(default)]
    pub spec: S,
}

/// What was found in an object, each with its JSON Pointer (RFC 6901).
pub type Located<T> = Vec<(String, T)>;

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

/// Where the pod specs of each kind live: the built-in table, plus rules
/// from settings that add kinds or replace a kind's paths.
///
/// Built per request in a fresh instance, so it allocates nothing for the
/// built-in kinds.
#[derive(Debug, Clone, Default)]
pub struct TemplatePaths {
    rules: Vec<TemplatePathRule>,
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
    (
        "kubeflow.org",
        "PyTorchJob",
        &["spec.pytorchReplicaSpecs.*.template.spec"],
    ),
    (
        "kubeflow.org",
        "TFJob",
        &["spec.tfReplicaSpecs.*.template.spec"],
    ),
    (
        "kubeflow.org",
        "MPIJob",
        &["spec.mpiReplicaSpecs.*.template.spec"],
    ),
    (
        "kubeflow.org",
        "PaddleJob",
        &["spec.paddleReplicaSpecs.*.template.spec"],
    ),
    (
        "kubeflow.org",
        "XGBoostJob",
        &["spec.xgbReplicaSpecs.*.template.spec"],
    ),
    (
        "jobset.x-k8s.io",
        "JobSet",
        &["spec.replicatedJobs.*.template.spec.template.spec"],
    ),
    (
        "ray.io",
        "RayCluster",
        &[
            "spec.headGroupSpec.template.spec",
            "spec.workerGroupSpecs.*.template.spec",
        ],
    ),
    (
        "ray.io",
        "RayJob",
        &[
            "spec.rayClusterSpec.headGroupSpec.template.spec",
            "spec.rayClusterSpec.workerGroupSpecs.*.template.spec",
            "spec.submitterPodTemplate.spec",
        ],
    ),
    (
        "ray.io",
        "RayService",
        &[
            "spec.rayClusterConfig.headGroupSpec.template.spec",
            "spec.rayClusterConfig.workerGroupSpecs.*.template.spec",
        ],
    ),
    // Kubeflow Trainer v2: the pod specs come from the runtime; what a
    // TrainJob itself carries are the overrides (v2.1's templates, v2.0's
    // spec overrides).
    (
        "trainer.kubeflow.org",
        "TrainJob",
        &[
            "spec.podTemplateOverrides.*.spec",
            "spec.podSpecOverrides.*",
        ],
    ),
    (
        "leaderworkerset.x-k8s.io",
        "LeaderWorkerSet",
        &[
            "spec.leaderWorkerTemplate.leaderTemplate.spec",
            "spec.leaderWorkerTemplate.workerTemplate.spec",
        ],
    ),
    ("batch.volcano.sh", "Job", &["spec.tasks.*.template.spec"]),
];

/// The API group of an `apiVersion` (`apps/v1` → `apps`, `v1` → ``).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether Kubernetes (or the kind's controller) lets the pod templates of
/// `group`/`kind` change after creation, for new pods to get: a Pod's spec,
/// a Job's template and the templates of the ML jobs are fixed, or made
/// into pods once; kinds added by configuration count as fixed.
pub fn templates_may_change(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apps",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        ) | ("", "ReplicationController" | "PodTemplate")
            | ("batch", "CronJob")
            | ("leaderworkerset.x-k8s.io", "LeaderWorkerSet")
            | ("ray.io", "RayCluster" | "RayService")
    )
}

impl TemplatePaths {
    /// Whether a mutating policy may add to the pod templates of an UPDATE
    /// from `old` to `new` (JSON texts) of `group`/`kind`: only where the
    /// templates may change ([`templates_may_change`]) and the user changed
    /// one, so that an edit of labels, replicas or status never starts a
    /// rollout through the policy's patch, and re-applying a manifest
    /// without the policy's additions puts them back.
    ///
    /// # Errors
    ///
    /// Either text is not JSON.
    pub fn may_add_on_update(
        &self,
        group: &str,
        kind: &str,
        old: Option<&str>,
        new: &str,
    ) -> crate::Result<bool> {
        let Some(old) = old else {
            return Ok(false);
        };
        if !templates_may_change(group, kind) {
            return Ok(false);
        }
        let old: Value = serde_json::from_str(old)?;
        let new: Value = serde_json::from_str(new)?;
        Ok(self.templates(&old) != self.templates(&new))
    }

    /// Every pod template of `object` (its metadata and spec), by pointer.
    fn templates<'v>(&self, object: &'v Value) -> Vec<(String, Option<&'v Value>)> {
        self.pod_spec_pointers(object)
            .into_iter()
            .map(|pointer| {
                let template = pointer.strip_suffix("/spec").unwrap_or(&pointer);
                let found = object.pointer(template);
                (pointer, found)
            })
            .collect()
    }

    /// The built-in table with `rules` added; a rule for a kind the table
    /// knows replaces that kind's paths.
    pub fn with(rules: &[TemplatePathRule]) -> Self {
        let rules = rules
            .iter()
            .map(|rule| TemplatePathRule {
                paths: rule.paths.iter().map(|p| p.replace("[*]", ".*")).collect(),
                ..rule.clone()
            })
            .collect();
        TemplatePaths { rules }
    }

    /// Whether objects of this group and kind carry pod specs (a Pod, a
    /// workload, an ML job, or a kind added by a rule).
    pub fn knows(&self, group: &str, kind: &str) -> bool {
        self.rules
            .iter()
            .any(|r| r.group == group && r.kind == kind)
            || DEFAULT_PATHS
                .iter()
                .any(|(g, k, _)| *g == group && *k == kind)
            || argo::workflow_spec(group, kind).is_some()
    }

    /// Whether a mutating policy can edit the pod templates of this kind in
    /// place ([`TemplatePaths::template_pointers`]); Argo workflows'
    /// templates are read as the pod specs Argo makes of them, and are not.
    pub fn editable(&self, group: &str, kind: &str) -> bool {
        argo::workflow_spec(group, kind).is_none()
    }

    /// The paths to the pod specs of this group and kind, split into
    /// segments.
    fn paths<'s>(&'s self, group: &str, kind: &str) -> Vec<Vec<&'s str>> {
        let paths: Vec<&str> = match self
            .rules
            .iter()
            .find(|r| r.group == group && r.kind == kind)
        {
            Some(rule) => rule.paths.iter().map(String::as_str).collect(),
            None => DEFAULT_PATHS
                .iter()
                .find(|(g, k, _)| *g == group && *k == kind)
                .map(|(_, _, paths)| paths.to_vec())
                .unwrap_or_default(),
        };
        paths
            .into_iter()
            .map(|path| path.split('.').filter(|s| !s.is_empty()).collect())
            .collect()
    }

    /// Every pod spec of an object given as JSON text, deserialized as `T`
    /// (a struct of only the fields the policy reads, or a `Value`), with
    /// its JSON Pointer (RFC 6901). One pass over the text: branches off the
    /// paths are skipped without allocating. `group` and `kind` are the
    /// object's (the request's `kind` says them).
    ///
    /// # Errors
    ///
    /// When the text is not JSON or a pod spec does not fit `T`.
    pub fn pod_specs_in<'a, T: Deserialize<'a>>(
        &self,
        group: &str,
        kind: &str,
        object: &'a str,
    ) -> Result<Located<T>, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(object);
        self.pod_specs_seed(group, kind)
            .deserialize(&mut deserializer)
    }

    /// [`TemplatePaths::pod_specs_in`] as a [`DeserializeSeed`], to read the
    /// pod specs of an object while something larger is parsed (e.g. the
    /// whole request, with [`crate::Request::parse_with`]). Every path of
    /// the kind is followed in the same single pass.
    pub fn pod_specs_seed<T>(&self, group: &str, kind: &str) -> PodSpecsSeed<'_, T> {
        PodSpecsSeed {
            paths: self.paths(group, kind),
            workflow: argo::workflow_spec(group, kind),
            read: PhantomData,
        }
    }

    /// Every pod template of an object given as JSON text (the Pod itself for
    /// a Pod), with its JSON Pointer: the object holding each pod spec, read
    /// in one pass as metadata `M` and spec `S`. A path that does not end in
    /// `spec` leads to a bare pod spec; its template gets `M::default()`.
    ///
    /// # Errors
    ///
    /// When the text is not JSON or a template does not fit `M` and `S`.
    pub fn pod_templates_in<'a, M, S>(
        &self,
        group: &str,
        kind: &str,
        object: &'a str,
    ) -> Result<Located<PodTemplate<M, S>>, serde_json::Error>
    where
        M: Deserialize<'a> + Default,
        S: Deserialize<'a> + Default,
    {
        if let Some(workflow) = argo::workflow_spec(group, kind) {
            let object: Value = serde_json::from_str(object)?;
            return argo::views(&object, workflow)
                .into_iter()
                .map(|(pointer, metadata, spec)| {
                    Ok((
                        pointer,
                        PodTemplate {
                            metadata: M::deserialize(metadata)?,
                            spec: S::deserialize(spec)?,
                        },
                    ))
                })
                .collect();
        }
        let mut found = Vec::new();
        for segments in self.paths(group, kind) {
            let mut deserializer = serde_json::Deserializer::from_str(object);
            if let Some((&"spec", parent)) = segments.split_last() {
                Walk {
                    paths: vec![parent],
                    pointer: String::new(),
                    found: &mut found,
                }
                .deserialize(&mut deserializer)?;
            } else {
                let mut specs = Vec::new();
                Walk {
                    paths: vec![&segments[..]],
                    pointer: String::new(),
                    found: &mut specs,
                }
                .deserialize(&mut deserializer)?;
                found.extend(specs.into_iter().map(|(pointer, spec)| {
                    let metadata = M::default();
                    (pointer, PodTemplate { metadata, spec })
                }));
            }
        }
        Ok(found)
    }

    /// The [`Shape`] that reads every pod template of this kind as
    /// `template` (an object shape with `metadata` and `spec` members) and
    /// keeps the rest of the object raw; a path to a bare pod spec reads it
    /// as the template's `spec`.
    pub fn template_shape(&self, group: &str, kind: &str, template: &Shape) -> Shape {
        self.paths(group, kind)
            .into_iter()
            .map(|segments| {
                let (parents, end) = match segments.split_last() {
                    Some((&"spec", parents)) => (parents, template.clone()),
                    _ => (&segments[..], template.member("spec").clone()),
                };
                parents
                    .iter()
                    .rev()
                    .fold(end, |shape, segment| match *segment {
                        "*" => Shape::Each(Box::new(shape)),
                        key => Shape::object([(key, shape)]),
                    })
            })
            .fold(Shape::Raw, Shape::merge)
    }

    /// Every pod template in a [`Node`] read with
    /// [`TemplatePaths::template_shape`], as JSON Pointers for
    /// [`Node::pointer_mut`].
    pub fn template_pointers(
        &self,
        group: &str,
        kind: &str,
        root: &Node<'_>,
    ) -> Vec<TemplatePointer> {
        let mut found = Vec::new();
        for segments in self.paths(group, kind) {
            let (parents, bare) = match segments.split_last() {
                Some((&"spec", parents)) => (parents, false),
                _ => (&segments[..], true),
            };
            collect_nodes(root, parents, String::new(), bare, &mut found);
        }
        found
    }

    /// JSON Pointers to every pod spec in `object`, whose group and kind are
    /// read from its `apiVersion` and `kind`. Empty for kinds without pod
    /// specs.
    pub fn pod_spec_pointers(&self, object: &Value) -> Vec<String> {
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = group_of(
            object
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        let mut found = Vec::new();
        for segments in self.paths(group, kind) {
            collect(object, &segments, String::new(), &mut found);
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
    pub fn for_each_pod_spec_mut(
        &self,
        object: &mut Value,
        mut visit: impl FnMut(&str, &mut Value),
    ) {
        for pointer in self.pod_spec_pointers(object) {
            if let Some(spec) = object.pointer_mut(&pointer) {
                visit(&pointer, spec);
            }
        }
    }
}

/// A JSON Pointer as a field path for messages:
/// `/spec/tasks/0/template` → `spec.tasks[0].template`.
pub fn field_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&segment);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&segment);
        }
    }
    out
}

/// Where a pod template is in a [`Node`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePointer {
    /// JSON Pointer to the template (the object holding `metadata` and
    /// `spec`), or to the pod spec itself when `bare`.
    pub pointer: String,
    /// The path leads to a pod spec without template metadata.
    pub bare: bool,
}

fn collect_nodes(
    node: &Node<'_>,
    path: &[&str],
    pointer: String,
    bare: bool,
    found: &mut Vec<TemplatePointer>,
) {
    let Some((head, rest)) = path.split_first() else {
        if matches!(node, Node::Object(_)) {
            found.push(TemplatePointer { pointer, bare });
        }
        return;
    };
    match (*head, node) {
        ("*", Node::Object(members)) => {
            for (key, child) in members {
                collect_nodes(
                    child,
                    rest,
                    format!("{pointer}/{}", escape(key)),
                    bare,
                    found,
                );
            }
        }
        ("*", Node::Array(elements)) => {
            for (index, child) in elements.iter().enumerate() {
                collect_nodes(child, rest, format!("{pointer}/{index}"), bare, found);
            }
        }
        (key, node) => {
            if let Some(child) = node.get(key) {
                collect_nodes(
                    child,
                    rest,
                    format!("{pointer}/{}", escape(key)),
                    bare,
                    found,
                );
            }
        }
    }
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn collect(value: &Value, path: &[&str], pointer: String, found: &mut Vec<String>) {
    let Some((head, rest)) = path.split_first() else {
        if value.is_object() {
            found.push(pointer);
        }
        return;
    };
    match (*head, value) {
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

/// The pod specs of an object, read as it is deserialized; made by
/// [`TemplatePaths::pod_specs_seed`].
pub struct PodSpecsSeed<'s, T> {
    paths: Vec<Vec<&'s str>>,
    /// For an Argo workflow kind, where its workflow spec is.
    workflow: Option<&'static str>,
    read: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for PodSpecsSeed<'_, T> {
    type Value = Located<T>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Located<T>, D::Error> {
        if let Some(workflow) = self.workflow {
            let object = Value::deserialize(deserializer)?;
            return argo::views(&object, workflow)
                .into_iter()
                .map(|(pointer, _, spec)| {
                    T::deserialize(spec)
                        .map(|spec| (pointer, spec))
                        .map_err(serde::de::Error::custom)
                })
                .collect();
        }
        let mut found = Vec::new();
        Walk {
            paths: self.paths.iter().map(Vec::as_slice).collect(),
            pointer: String::new(),
            found: &mut found,
        }
        .deserialize(deserializer)?;
        Ok(found)
    }
}

/// Follows paths through JSON, deserializing what lies at their ends as `T`
/// and skipping everything else.
struct Walk<'p, 'f, T> {
    paths: Vec<&'p [&'p str]>,
    pointer: String,
    found: &'f mut Vec<(String, T)>,
}

impl<'p, T> Walk<'p, '_, T> {
    /// The rest of every path that continues through `key` (`*` matches
    /// every key and index).
    fn through(&self, key: &str) -> Vec<&'p [&'p str]> {
        self.paths
            .iter()
            .filter_map(|path| match path.split_first() {
                Some((head, rest)) if *head == "*" || *head == key => Some(rest),
                _ => None,
            })
            .collect()
    }
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for Walk<'_, '_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for Walk<'_, '_, T> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.paths.iter().any(|path| path.is_empty()) {
            // The end of a path: read the object as `T` right here, in the
            // same pass over the text.
            let found = T::deserialize(MapAccessDeserializer::new(map))?;
            self.found.push((self.pointer, found));
            return Ok(());
        }
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let paths = self.through(&key);
            if paths.is_empty() {
                map.next_value::<IgnoredAny>()?;
            } else {
                let pointer = format!("{}/{}", self.pointer, escape(&key));
                map.next_value_seed(Walk {
                    paths,
                    pointer,
                    found: &mut *self.found,
                })?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Elements are followed only for a `*`; an array at the end of a
        // path is not a pod spec and is skipped.
        let paths: Vec<&[&str]> = self
            .paths
            .iter()
            .filter_map(|path| match path.split_first() {
                Some((&"*", rest)) => Some(rest),
                _ => None,
            })
            .collect();
        let mut index = 0usize;
        loop {
            let more = if paths.is_empty() {
                seq.next_element::<IgnoredAny>()?.is_some()
            } else {
                let pointer = format!("{}/{index}", self.pointer);
                seq.next_element_seed(Walk {
                    paths: paths.clone(),
                    pointer,
                    found: &mut *self.found,
                })?
                .is_some()
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_the_pod_spec_of_a_pod() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": []}});
        assert_eq!(
            TemplatePaths::default().pod_spec_pointers(&pod),
            vec!["/spec"]
        );
    }

    #[test]
    fn finds_every_replica_template_of_a_pytorch_job() {
        let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {"containers": []}}},
            "Worker": {"template": {"spec": {"containers": []}}},
        }}});
        assert_eq!(
            TemplatePaths::default().pod_spec_pointers(&job),
            vec![
                "/spec/pytorchReplicaSpecs/Master/template/spec",
                "/spec/pytorchReplicaSpecs/Worker/template/spec"
            ]
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
    fn finds_the_templates_of_ray_jobs_ray_services_and_train_jobs() {
        let group = json!({"template": {"spec": {"containers": []}}});
        let cluster = json!({"headGroupSpec": group, "workerGroupSpecs": [group, group]});
        let ray_job = json!({"apiVersion": "ray.io/v1", "kind": "RayJob", "spec": {
            "rayClusterSpec": cluster, "submitterPodTemplate": {"spec": {"containers": []}}}});
        let ray_service = json!({"apiVersion": "ray.io/v1", "kind": "RayService", "spec": {
            "rayClusterConfig": cluster, "serveConfigV2": "applications: []"}});
        let train_job = json!({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob", "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": {"tolerations": []}}],
            "podSpecOverrides": [{"targetJobs": [{"name": "node"}], "nodeSelector": {}}]}});
        let paths = TemplatePaths::default();
        assert_eq!(
            paths.pod_spec_pointers(&ray_job),
            [
                "/spec/rayClusterSpec/headGroupSpec/template/spec",
                "/spec/rayClusterSpec/workerGroupSpecs/0/template/spec",
                "/spec/rayClusterSpec/workerGroupSpecs/1/template/spec",
                "/spec/submitterPodTemplate/spec",
            ]
        );
        assert_eq!(paths.pod_spec_pointers(&ray_service).len(), 3);
        assert_eq!(
            paths.pod_spec_pointers(&train_job),
            [
                "/spec/podTemplateOverrides/0/spec",
                "/spec/podSpecOverrides/0"
            ]
        );
        assert!(paths.knows("ray.io", "RayService") && !paths.knows("ray.io", "RayCronJob"));
        // Gang objects hold no pod spec: left alone.
        assert!(!paths.knows("scheduling.x-k8s.io", "PodGroup"));
        assert!(!paths.knows("scheduling.volcano.sh", "PodGroup"));
        assert!(templates_may_change("ray.io", "RayService"));
        assert!(!templates_may_change("ray.io", "RayJob"));
        assert!(!templates_may_change("trainer.kubeflow.org", "TrainJob"));
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Name {
        #[serde(default)]
        name: String,
    }

    #[test]
    fn templates_carry_their_metadata_and_bare_specs_get_default_metadata() {
        let job = json!({"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {
            "metadata": {"name": "t"}, "spec": {"name": "s"}}}});
        let found: Vec<(String, PodTemplate<Name, Name>)> = TemplatePaths::default()
            .pod_templates_in("batch", "Job", &job.to_string())
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "/spec/template");
        assert_eq!(found[0].1.metadata.name, "t");
        assert_eq!(found[0].1.spec.name, "s");
        let pod = json!({"metadata": {"name": "p"}, "spec": {"name": "s"}}).to_string();
        let found: Vec<(String, PodTemplate<Name, Name>)> = TemplatePaths::default()
            .pod_templates_in("", "Pod", &pod)
            .unwrap();
        assert_eq!(
            (found[0].0.as_str(), found[0].1.metadata.name.as_str()),
            ("", "p")
        );
        let paths = TemplatePaths::with(&[TemplatePathRule {
            group: "example.com".into(),
            kind: "Trainer".into(),
            paths: vec!["spec.pod".into()],
        }]);
        let trainer =
            json!({"metadata": {"name": "x"}, "spec": {"pod": {"name": "s"}}}).to_string();
        let found: Vec<(String, PodTemplate<Name, Name>)> = paths
            .pod_templates_in("example.com", "Trainer", &trainer)
            .unwrap();
        assert_eq!(
            found[0].1,
            PodTemplate {
                metadata: Name::default(),
                spec: Name { name: "s".into() }
            }
        );
    }

    #[test]
    fn field_paths_read_like_kubectl_explain() {
        assert_eq!(
            field_path("/spec/tasks/0/template"),
            "spec.tasks[0].template"
        );
        assert_eq!(field_path("/spec/a~1b/template"), "spec.a/b.template");
        assert_eq!(field_path(""), "");
    }

    #[test]
    fn template_shapes_reach_every_template_and_keep_the_rest_raw() {
        let template = Shape::object([
            ("metadata", Shape::Value),
            ("spec", Shape::object([("tolerations", Shape::Value)])),
        ]);
        let cluster = json!({"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "r"}, "spec": {
            "headGroupSpec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}},
            "workerGroupSpecs": [{"replicas": 2, "template": {"spec": {"tolerations": []}}}]}});
        let text = cluster.to_string();
        let paths = TemplatePaths::default();
        let shape = paths.template_shape("ray.io", "RayCluster", &template);
        let mut root = Node::read(&text, &shape).unwrap();
        let found = paths.template_pointers("ray.io", "RayCluster", &root);
        let pointers: Vec<_> = found.iter().map(|t| t.pointer.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/spec/headGroupSpec/template",
                "/spec/workerGroupSpecs/0/template"
            ]
        );
        let head = root.pointer_mut("/spec/headGroupSpec/template").unwrap();
        assert_eq!(
            head.member_value("metadata"),
            Some(&json!({"labels": {"a": "b"}}))
        );
        let worker = root
            .pointer_mut("/spec/workerGroupSpecs/0/template/spec")
            .unwrap();
        worker
            .entry("tolerations", || Value::Null)
            .unwrap()
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "k"}));
        let mut expected = cluster.clone();
        expected["spec"]["workerGroupSpecs"][0]["template"]["spec"]["tolerations"] =
            json!([{"key": "k"}]);
        assert_eq!(
            serde_json::from_str::<Value>(&root.to_json()).unwrap(),
            expected
        );

        let rules = [TemplatePathRule {
            group: "x".into(),
            kind: "Bare".into(),
            paths: vec!["spec.pod".into()],
        }];
        let paths = TemplatePaths::with(&rules);
        let text = json!({"spec": {"pod": {"tolerations": [1]}}}).to_string();
        let root = Node::read(&text, &paths.template_shape("x", "Bare", &template)).unwrap();
        assert_eq!(
            paths.template_pointers("x", "Bare", &root),
            [TemplatePointer {
                pointer: "/spec/pod".into(),
                bare: true
            }]
        );
        assert_eq!(
            root.get("spec")
                .unwrap()
                .get("pod")
                .unwrap()
                .member_value("tolerations"),
            Some(&json!([1]))
        );
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
    fn raw_lookup_agrees_with_the_value_walk() {
        let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {"containers": [{"name": "m"}]}}},
            "Worker": {"template": {"spec": {"containers": [{"name": "w"}]}}},
        }}});
        let text = job.to_string();
        let paths = TemplatePaths::default();
        let raw: Vec<(String, Value)> = paths
            .pod_specs_in("kubeflow.org", "PyTorchJob", &text)
            .unwrap();
        let walked = paths.pod_specs(&job);
        assert_eq!(raw.len(), 2);
        for ((raw_pointer, raw_spec), (pointer, spec)) in raw.iter().zip(&walked) {
            assert_eq!(raw_pointer, pointer);
            assert_eq!(raw_spec, *spec);
        }
    }

    #[test]
    fn typed_lookup_walks_arrays_and_skips_non_objects() {
        let jobset = json!({"spec": {"replicatedJobs": [
            {"template": {"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}},
            {"template": {"spec": {"template": {"spec": null}}}},
            {"template": {"spec": {"template": {"spec": {"containers": [{"name": "b"}]}}}}},
        ], "other": [1, 2]}});
        let text = jobset.to_string();
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        let found: Vec<(String, ContainerLists<Named>)> = TemplatePaths::default()
            .pod_specs_in("jobset.x-k8s.io", "JobSet", &text)
            .unwrap();
        let names: Vec<_> = found
            .iter()
            .map(|(p, l)| (p.as_str(), l.containers[0].name.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("/spec/replicatedJobs/0/template/spec/template/spec", "a"),
                ("/spec/replicatedJobs/2/template/spec/template/spec", "b")
            ]
        );
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
        let names: Vec<_> = containers(&spec)
            .map(|(kind, c)| (kind, container_name(c)))
            .collect();
        assert_eq!(
            names,
            vec![
                (ContainerKind::Init, "init"),
                (ContainerKind::Regular, "main"),
                (ContainerKind::Ephemeral, "debug")
            ]
        );
    }
}
