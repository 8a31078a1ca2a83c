//! The rules, applied to one pod template (or a Pod): what to add, and what
//! to refuse.

use serde_json::{Value, json};
use tollgate_sdk::edit::{Node, Shape};

use crate::affinity::{attract_pods, require_nodes};
use crate::gpu::is_gpu_container;
use crate::json::{array, member, meta, str_of};
use crate::settings::{Settings, Toleration, TopologyMode};

/// Annotation choosing a GPU class.
pub const CLASS_ANNOTATION: &str = "gpu.tollgate.dev/class";
/// Label letting a CPU-only pod run on GPU nodes.
pub const ALLOW_GPU_NODES_LABEL: &str = "gpu.tollgate.dev/allow-gpu-nodes";
/// Kueue's queue label.
pub const QUEUE_LABEL: &str = "kueue.x-k8s.io/queue-name";
/// Kueue's topology annotations; any one present means Kueue was told.
const KUEUE_TOPOLOGY_ANNOTATIONS: &[&str] = &[
    "kueue.x-k8s.io/podset-required-topology",
    "kueue.x-k8s.io/podset-preferred-topology",
    "kueue.x-k8s.io/podset-unconstrained-topology",
];
/// Name of the `/dev/shm` volume this policy adds.
pub const SHM_VOLUME: &str = "tollgate-shm";
const CONTAINER_LISTS: [&str; 2] = ["initContainers", "containers"];

/// The parts of a template the rules read and write; the rest of the object
/// is never parsed.
pub fn shape() -> Shape {
    let container = Shape::Each(Box::new(Shape::object([("resources", Shape::Value)])));
    Shape::object([
        ("metadata", metadata_shape()),
        (
            "spec",
            Shape::object([
                ("initContainers", container.clone()),
                ("containers", container),
                ("tolerations", Shape::Value),
                ("priorityClassName", Shape::Value),
                ("resourceClaims", Shape::Value),
            ]),
        ),
    ])
}

/// The metadata members the rules read (never `managedFields`).
pub fn metadata_shape() -> Shape {
    Shape::object([
        ("labels", Shape::Value),
        ("annotations", Shape::Value),
        ("ownerReferences", Shape::Value),
    ])
}

/// The labels, annotations and owners of a node's `metadata`, as one value.
pub fn metadata_of(node: &Node<'_>) -> Value {
    let mut metadata = serde_json::Map::new();
    if let Some(members) = node.get("metadata") {
        for key in ["labels", "annotations", "ownerReferences"] {
            if let Some(value) = members.member_value(key) {
                metadata.insert(key.into(), value.clone());
            }
        }
    }
    Value::Object(metadata)
}

/// Member `field` (`labels`, `annotations`) of a node's `metadata`, to edit.
///
/// # Errors
///
/// When the metadata is malformed.
pub fn metadata_field<'n>(node: &'n mut Node<'_>, field: &str) -> Result<&'n mut Value, String> {
    if matches!(node.get("metadata"), Some(Node::Object(_))) {
        let metadata = node.get_mut("metadata").expect("just seen");
        return entry(metadata, field);
    }
    member(entry(node, "metadata")?, field)
}

/// Where the template is: its namespace and the object around it.
pub struct Scope<'r> {
    /// The request's namespace.
    pub namespace: &'r str,
    /// The object's own metadata (the workload's, or the Pod's).
    pub object_metadata: &'r Value,
}

/// What the rules did to one template.
#[derive(Debug, Default)]
pub struct Placement {
    /// The template asks for GPUs.
    pub gpu: bool,
    /// Something was added.
    pub changed: bool,
    /// Reasons to refuse the object.
    pub denials: Vec<String>,
    /// A Kueue topology annotation due on the template's metadata.
    kueue_annotation: Option<(&'static str, String)>,
}

/// Applies every rule to one template: `template` holds `metadata` and
/// `spec`, or is the pod spec itself when `bare`.
///
/// # Errors
///
/// When what the user wrote is malformed where a rule must add to it.
pub fn place(
    template: &mut Node<'_>,
    bare: bool,
    scope: &Scope<'_>,
    settings: &Settings,
) -> Result<Placement, String> {
    let metadata = if bare {
        Value::Null
    } else {
        metadata_of(template)
    };
    let spec = if bare {
        &mut *template
    } else {
        match template.get_mut("spec") {
            Some(spec) => spec,
            None => return Ok(Placement::default()),
        }
    };
    let mut placement = place_spec(spec, &metadata, bare, scope, settings)?;
    if let Some((key, value)) = placement.kueue_annotation.take() {
        *member(metadata_field(template, "annotations")?, key)? = Value::from(value);
        placement.changed = true;
    }
    Ok(placement)
}

/// The rules on the pod spec (a Kueue annotation for the template's
/// metadata is left in the placement, for the caller to write).
fn place_spec(
    spec: &mut Node<'_>,
    metadata: &Value,
    bare: bool,
    scope: &Scope<'_>,
    settings: &Settings,
) -> Result<Placement, String> {
    let label = |key: &str| meta(metadata, "labels", key);
    let object_label =
        |key: &str| label(key).or_else(|| meta(scope.object_metadata, "labels", key));

    let gpu_containers = gpu_containers(spec, settings);
    let claims = settings.dynamic_resource_claims
        && spec
            .member_value("resourceClaims")
            .and_then(Value::as_array)
            .is_some_and(|claims| !claims.is_empty());
    let mut placement = Placement {
        gpu: !gpu_containers.is_empty() || claims,
        ..Placement::default()
    };
    let tolerations: Vec<Toleration> = spec
        .member_value("tolerations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(Toleration::from_value)
        .collect();

    if placement.gpu {
        let missing: Vec<&Toleration> = settings
            .tolerations
            .iter()
            .filter(|wanted| !tolerations.iter().any(|t| t.covers(wanted)))
            .collect();
        if !missing.is_empty() {
            let list = array(entry(spec, "tolerations")?)?;
            list.extend(missing.iter().map(|t| t.to_value()));
            placement.changed = true;
        }

        let class = meta(metadata, "annotations", CLASS_ANNOTATION)
            .or_else(|| meta(scope.object_metadata, "annotations", CLASS_ANNOTATION))
            .map(str::to_owned)
            .or_else(|| {
                settings
                    .namespace_defaults
                    .get(scope.namespace)
                    .and_then(|d| d.class.clone())
            });
        if let Some(class) = class {
            match settings.classes.get(&class) {
                Some(requirements) => {
                    placement.changed |= require_nodes(entry(spec, "affinity")?, requirements)?;
                }
                None => placement.denials.push(format!(
                    "unknown GPU class {class:?} (annotation {CLASS_ANNOTATION}); known classes: {}",
                    settings.known_classes()
                )),
            }
        }

        let topology = &settings.topology;
        if let Some((key, value)) = topology
            .group_labels
            .iter()
            .find_map(|key| label(key).map(|value| (key, value)))
        {
            let told_kueue = KUEUE_TOPOLOGY_ANNOTATIONS
                .iter()
                .any(|a| meta(metadata, "annotations", a).is_some());
            if object_label(QUEUE_LABEL).is_some() && !bare {
                if !told_kueue {
                    let annotation = match topology.mode {
                        TopologyMode::Preferred => "kueue.x-k8s.io/podset-preferred-topology",
                        TopologyMode::Required => "kueue.x-k8s.io/podset-required-topology",
                    };
                    placement.kueue_annotation = Some((annotation, topology.kueue_level.clone()));
                }
            } else {
                let term = json!({
                    "labelSelector": {"matchLabels": {key: value}},
                    "topologyKey": topology.topology_key,
                });
                placement.changed |= attract_pods(
                    entry(spec, "affinity")?,
                    term,
                    topology.mode,
                    topology.weight,
                )?;
            }
        }

        if let Some(source) = settings.shm.empty_dir() {
            placement.changed |= mount_shm(spec, &gpu_containers, source)?;
        }
    } else if settings.keep_cpu_pods_off_gpu_nodes
        && !settings
            .exempt_namespaces
            .iter()
            .any(|n| n == scope.namespace)
        && object_label(ALLOW_GPU_NODES_LABEL) != Some("true")
    {
        let gpu_toleration = settings
            .tolerations
            .iter()
            .find(|gpu| tolerations.iter().any(|t| t.covers(gpu)));
        match gpu_toleration {
            Some(gpu) => placement.denials.push(format!(
                "asks for no GPU ({}) but tolerates the GPU taint {}: remove that toleration or request a GPU; node agents belong in an exempt namespace ({}) or carry the label {ALLOW_GPU_NODES_LABEL}=true",
                settings.gpu_resources.join(", "),
                gpu.describe(),
                settings.exempt_namespaces.join(", "),
            )),
            None => {
                let off_gpu_nodes = [json!({"key": settings.gpu_node_label, "operator": "DoesNotExist"})];
                placement.changed |= require_nodes(entry(spec, "affinity")?, &off_gpu_nodes)?;
            }
        }
    }

    if spec
        .member_value("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
        && let Some(rule) = settings
            .priority_classes
            .iter()
            .find(|rule| label(&rule.label) == Some(rule.value.as_str()))
    {
        *entry(spec, "priorityClassName")? = Value::from(rule.class_name.as_str());
        placement.changed = true;
    }
    Ok(placement)
}

/// Member `key` of an object node, to edit.
fn entry<'n>(node: &'n mut Node<'_>, key: &str) -> Result<&'n mut Value, String> {
    node.entry(key, || Value::Null)
        .ok_or_else(|| format!("cannot add {key:?}: its parent is not an object"))
}

/// The GPU containers of a pod spec, as (list, index).
fn gpu_containers(spec: &Node<'_>, settings: &Settings) -> Vec<(&'static str, usize)> {
    CONTAINER_LISTS
        .into_iter()
        .flat_map(|list| {
            spec.get(list)
                .map(Node::elements)
                .unwrap_or_default()
                .iter()
                .enumerate()
                .filter(|(_, container)| {
                    is_gpu_container(
                        container.member_value("resources").unwrap_or(&Value::Null),
                        &settings.gpu_resources,
                        settings.dynamic_resource_claims,
                    )
                })
                .map(move |(index, _)| (list, index))
        })
        .collect()
}

/// Mounts a memory-backed emptyDir at `/dev/shm` in every GPU container
/// that has nothing mounted there. Returns whether anything was added.
fn mount_shm(
    spec: &mut Node<'_>,
    gpu_containers: &[(&str, usize)],
    source: Value,
) -> Result<bool, String> {
    let mut mounted_any = false;
    for (list, index) in gpu_containers {
        let Some(container) = spec
            .get_mut(list)
            .and_then(|containers| containers.elements_mut().get_mut(*index))
        else {
            continue;
        };
        let has_shm = container
            .parse_member("volumeMounts")
            .and_then(Value::as_array)
            .is_some_and(|mounts| mounts.iter().any(|m| str_of(m, "mountPath") == "/dev/shm"));
        if !has_shm {
            array(entry(container, "volumeMounts")?)?
                .push(json!({"name": SHM_VOLUME, "mountPath": "/dev/shm"}));
            mounted_any = true;
        }
    }
    if mounted_any {
        let volumes = array(entry(spec, "volumes")?)?;
        if !volumes.iter().any(|v| str_of(v, "name") == SHM_VOLUME) {
            volumes.push(json!({"name": SHM_VOLUME, "emptyDir": source}));
        }
    }
    Ok(mounted_any)
}
