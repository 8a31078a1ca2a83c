//! `gpu-placement`: makes GPU workloads land where they belong without
//! scheduling boilerplate, and keeps everything else off GPU nodes.
//!
//! For every pod template of an object (the Pod itself, or the templates of
//! workloads and ML jobs): GPU pods get the GPU tolerations, the node
//! affinity of their GPU class, a topology hint for their training gang
//! (pod affinity, or Kueue's podset topology annotation when queued by
//! Kueue), a memory-backed `/dev/shm`, and a priority class by workload
//! label; CPU-only pods get a node affinity away from GPU nodes and may not
//! tolerate the GPU taint. It only adds: what the user wrote stays, and the
//! policy applied to its own output changes nothing.
//!
//! The object is read once as a [`Node`]: only labels, annotations,
//! owners, tolerations and container resources are parsed up front (affinity,
//! volumes and mounts when a rule edits them); the rest is written back byte
//! for byte.

mod affinity;
mod gpu;
mod json;
mod settings;
mod template;

use serde_json::Value;
use tollgate_sdk::edit::{Node, NodeSeed, Shape};
use tollgate_sdk::pod::{TemplatePaths, field_path};
use tollgate_sdk::request::GroupVersionKind;
use tollgate_sdk::{Policy, Request, Verdict};

pub use settings::Settings;
use template::{QUEUE_LABEL, Scope};

/// The policy.
pub struct GpuPlacement;

impl Policy for GpuPlacement {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings.validate()
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let paths = TemplatePaths::with(&settings.template_paths);
        let Some(object) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        let root = Node::read(object, &object_shape(&paths, &request.kind))?;
        place_object(request, root, &paths, settings)
    }

    fn evaluate_text(request: &str, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let paths = TemplatePaths::with(&settings.template_paths);
        let (request, root) =
            Request::parse_with(request, |kind| NodeSeed(object_shape(&paths, kind)))?;
        match root {
            Some(root) => place_object(&request, root, &paths, settings),
            None => Ok(Verdict::allow()),
        }
    }
}

/// What is read of an object of this kind: its pod templates' parts the
/// rules use, and its own metadata.
fn object_shape(paths: &TemplatePaths, kind: &GroupVersionKind) -> Shape {
    paths
        .template_shape(&kind.group, &kind.kind, &template::shape())
        .merge(Shape::object([("metadata", template::metadata_shape())]))
}

/// Applies the rules to every pod template of the object read into `root`.
fn place_object(
    request: &Request<'_>,
    mut root: Node<'_>,
    paths: &TemplatePaths,
    settings: &Settings,
) -> tollgate_sdk::Result<Verdict> {
    let kind = &request.kind;
    let is_pod = kind.is_pod();
    // A subresource is never placed: settle that before reading an
    // UPDATE's objects.
    let placing = request.sub_resource.is_empty()
        && match request.operation.as_str() {
            "CREATE" => true,
            "UPDATE" => paths.may_add_on_update(
                &kind.group,
                &kind.kind,
                request.raw_old_object(),
                &root.to_json(),
            )?,
            _ => false,
        };
    if !placing {
        return Ok(Verdict::allow());
    }
    let templates = paths.template_pointers(&kind.group, &kind.kind, &root);
    let object_metadata = template::metadata_of(&root);
    let scope = Scope {
        namespace: &request.namespace,
        object_metadata: &object_metadata,
    };
    let mut changed = false;
    let mut gpu = false;
    let mut denials = Vec::new();
    for found in &templates {
        let node = root
            .pointer_mut(&found.pointer)
            .expect("template pointers come from this node");
        let placement = template::place(node, found.bare, &scope, settings)?;
        changed |= placement.changed;
        gpu |= placement.gpu;
        denials.extend(placement.denials.into_iter().map(|denial| {
            if templates.len() > 1 {
                format!("{}: {denial}", field_path(&found.pointer))
            } else {
                denial
            }
        }));
    }
    if !denials.is_empty() {
        return Ok(Verdict::deny(denials.join("; ")));
    }
    if gpu
        && add_queue(
            &mut root,
            &object_metadata,
            is_pod,
            &request.namespace,
            settings,
        )?
    {
        changed = true;
    }
    Ok(if changed {
        Verdict::mutate_json(root.to_json())
    } else {
        Verdict::allow()
    })
}

tollgate_sdk::export!(GpuPlacement);

/// Adds the namespace's default Kueue queue to a GPU object without one.
/// Pods owned by a controller are left alone: Kueue queues their owner, and
/// a queue label on the pod would have Kueue gate it a second time.
fn add_queue(
    root: &mut Node<'_>,
    metadata: &Value,
    is_pod: bool,
    namespace: &str,
    settings: &Settings,
) -> Result<bool, String> {
    let Some(queue) = settings
        .namespace_defaults
        .get(namespace)
        .and_then(|d| d.queue_name.as_deref())
    else {
        return Ok(false);
    };
    let controlled = metadata["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|owner| owner["controller"] == true);
    if json::meta(metadata, "labels", QUEUE_LABEL).is_some() || (is_pod && controlled) {
        return Ok(false);
    }
    let labels = template::metadata_field(root, "labels")?;
    *json::member(labels, QUEUE_LABEL)? = Value::from(queue);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tollgate_sdk::k8s_openapi::api::core::v1::Pod;
    use tollgate_sdk::testing;

    use super::*;

    fn gpu_pod(extra_spec: Value) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train-0", "namespace": "ml", "labels": {}},
        "spec": {"containers": [
            {"name": "trainer", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
             "resources": {"limits": {"nvidia.com/gpu": "8"}}},
            {"name": "sidecar", "image": "busybox:1"},
        ]}});
        for (key, value) in extra_spec.as_object().unwrap() {
            pod["spec"][key] = value.clone();
        }
        pod
    }

    fn cpu_pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1", "resources": {"limits": {"cpu": "1"}}}]}})
    }

    /// Evaluates a CREATE; the mutated object (the input if unchanged).
    fn apply(object: &Value, settings: Value) -> Value {
        let verdict = testing::evaluate::<GpuPlacement>(
            &testing::review(object.clone()),
            &settings.to_string(),
        )
        .unwrap();
        assert!(verdict.allowed, "{:?}", verdict.message);
        verdict.mutated().unwrap_or_else(|| object.clone())
    }

    fn denial(object: &Value, settings: Value) -> String {
        let verdict = testing::evaluate::<GpuPlacement>(
            &testing::review(object.clone()),
            &settings.to_string(),
        )
        .unwrap();
        assert!(!verdict.allowed);
        verdict.message.unwrap()
    }

    /// Applies twice: the second pass must change nothing, and the result
    /// must be a valid Pod.
    fn apply_idempotently(object: &Value, settings: Value) -> Value {
        let once = apply(object, settings.clone());
        let verdict = testing::evaluate::<GpuPlacement>(
            &testing::review(once.clone()),
            &settings.to_string(),
        )
        .unwrap();
        assert_eq!(verdict.mutated_object, None, "second pass changed {once}");
        if once["kind"] == "Pod" {
            serde_json::from_value::<Pod>(once.clone()).expect("a valid Pod");
        }
        once
    }

    #[test]
    fn gpu_pods_get_the_gpu_toleration_shm_and_nothing_else_by_default() {
        let pod = apply_idempotently(&gpu_pod(json!({})), json!({}));
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        );
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "tollgate-shm", "mountPath": "/dev/shm"}])
        );
        assert!(
            pod["spec"]["containers"][1].get("volumeMounts").is_none(),
            "not a GPU container"
        );
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "tollgate-shm", "emptyDir": {"medium": "Memory"}}])
        );
        assert!(pod["spec"].get("affinity").is_none());
    }

    #[test]
    fn an_equal_or_broader_toleration_is_never_duplicated() {
        for existing in [
            json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
            json!({"key": "nvidia.com/gpu", "operator": "Exists"}),
            json!({"operator": "Exists"}),
        ] {
            let pod = apply(
                &gpu_pod(json!({"tolerations": [existing.clone()]})),
                json!({"shm": false}),
            );
            assert_eq!(pod["spec"]["tolerations"], json!([existing]));
        }
        // An Equal toleration is narrower than the configured Exists one.
        let equal = json!({"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"});
        let pod = apply(
            &gpu_pod(json!({"tolerations": [equal.clone()]})),
            json!({"shm": false}),
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(pod["spec"]["tolerations"][0], equal);
    }

    #[test]
    fn a_gpu_class_is_anded_into_every_node_selector_term() {
        let settings = json!({"classes": {"h100": [
            {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3", "NVIDIA-H100-SXM5-80GB"]}]}});
        let mut pod = gpu_pod(
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}),
        );
        pod["metadata"]["annotations"] = json!({"gpu.tollgate.dev/class": "h100"});
        let pod = apply_idempotently(&pod, settings.clone());
        let terms = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"];
        for (term, zone) in terms.as_array().unwrap().iter().zip(["a", "b"]) {
            assert_eq!(term["matchExpressions"][0]["values"], json!([zone]));
            assert_eq!(term["matchExpressions"][1]["key"], "nvidia.com/gpu.product");
        }
        // The namespace default applies without the annotation.
        let mut defaults = settings.clone();
        defaults["namespaceDefaults"] = json!({"ml": {"class": "h100"}});
        let pod = apply(&gpu_pod(json!({})), defaults);
        assert_eq!(
            pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"][0]["key"],
            "nvidia.com/gpu.product"
        );
    }

    #[test]
    fn an_unknown_class_is_denied_with_the_known_ones() {
        let mut pod = gpu_pod(json!({}));
        pod["metadata"]["annotations"] = json!({"gpu.tollgate.dev/class": "b300"});
        let settings = json!({"classes": {"a100": [{"key": "k", "operator": "Exists"}], "h100": [{"key": "k", "operator": "Exists"}]}});
        assert_eq!(
            denial(&pod, settings),
            r#"unknown GPU class "b300" (annotation gpu.tollgate.dev/class); known classes: a100, h100"#
        );
    }

    #[test]
    fn cpu_pods_are_kept_off_gpu_nodes_and_may_not_tolerate_the_gpu_taint() {
        let pod = apply_idempotently(&cpu_pod(), json!({}));
        assert_eq!(
            pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"],
            json!([{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}])
        );
        assert!(pod["spec"].get("tolerations").is_none());
        assert!(pod["spec"].get("volumes").is_none());

        let mut tolerating = cpu_pod();
        tolerating["spec"]["tolerations"] = json!([{"operator": "Exists"}]);
        let message = denial(&tolerating, json!({}));
        assert!(message.starts_with("asks for no GPU (nvidia.com/gpu, nvidia.com/mig-*, amd.com/gpu) but tolerates the GPU taint nvidia.com/gpu=*:NoSchedule"), "{message}");
        assert!(message.contains("gpu.tollgate.dev/allow-gpu-nodes=true"));

        // Exempt by namespace or label, or with the rule off: left alone.
        let mut exempt = tolerating.clone();
        exempt["metadata"]["namespace"] = json!("gpu-operator");
        assert_eq!(apply(&exempt, json!({})), exempt);
        let mut labelled = tolerating.clone();
        labelled["metadata"]["labels"] = json!({"gpu.tollgate.dev/allow-gpu-nodes": "true"});
        assert_eq!(apply(&labelled, json!({})), labelled);
        assert_eq!(
            apply(&tolerating, json!({"keepCpuPodsOffGpuNodes": false})),
            tolerating
        );
    }

    #[test]
    fn training_gangs_get_pod_affinity_or_a_kueue_annotation() {
        let mut pod = gpu_pod(json!({}));
        pod["metadata"]["labels"] =
            json!({"training.kubeflow.org/job-name": "llama", "batch.kubernetes.io/job-name": "x"});
        let placed = apply_idempotently(&pod, json!({"shm": false}));
        assert_eq!(
            placed["spec"]["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"],
            json!([{"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"training.kubeflow.org/job-name": "llama"}},
                "topologyKey": "nvidia.com/gpu.clique"}}])
        );
        let required = apply(
            &pod,
            json!({"shm": false, "topology": {"mode": "required", "topologyKey": "rack"}}),
        );
        assert_eq!(
            required["spec"]["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                [0]["topologyKey"],
            "rack"
        );

        pod["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = json!("team-a");
        let queued = apply_idempotently(
            &pod,
            json!({"shm": false, "topology": {"kueueLevel": "cloud.example.com/block"}}),
        );
        assert_eq!(
            queued["metadata"]["annotations"]["kueue.x-k8s.io/podset-preferred-topology"],
            "cloud.example.com/block"
        );
        assert!(queued["spec"].get("affinity").is_none());
        pod["metadata"]["annotations"] =
            json!({"kueue.x-k8s.io/podset-unconstrained-topology": "true"});
        let told = apply(&pod, json!({"shm": false}));
        assert_eq!(
            told["metadata"]["annotations"],
            pod["metadata"]["annotations"]
        );
    }

    #[test]
    fn shm_respects_an_existing_mount_and_the_size_setting() {
        let mut pod =
            gpu_pod(json!({"volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]}));
        pod["spec"]["containers"][0]["volumeMounts"] =
            json!([{"name": "dshm", "mountPath": "/dev/shm"}]);
        let placed = apply(&pod, json!({}));
        assert_eq!(placed["spec"]["volumes"], pod["spec"]["volumes"]);
        let sized = apply(&gpu_pod(json!({})), json!({"shm": {"sizeLimit": "16Gi"}}));
        assert_eq!(
            sized["spec"]["volumes"][0]["emptyDir"],
            json!({"medium": "Memory", "sizeLimit": "16Gi"})
        );
    }

    #[test]
    fn priority_classes_and_default_queues() {
        let settings = json!({"shm": false,
            "priorityClasses": [{"label": "tollgate.dev/workload", "value": "training", "className": "gpu-training"}],
            "namespaceDefaults": {"ml": {"queueName": "ml-queue"}}});
        let mut pod = gpu_pod(json!({}));
        pod["metadata"]["labels"] = json!({"tollgate.dev/workload": "training"});
        let placed = apply_idempotently(&pod, settings.clone());
        assert_eq!(placed["spec"]["priorityClassName"], "gpu-training");
        assert_eq!(
            placed["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
            "ml-queue"
        );
        // Set by the user: kept.
        pod["spec"]["priorityClassName"] = json!("urgent");
        assert_eq!(
            apply(&pod, settings.clone())["spec"]["priorityClassName"],
            "urgent"
        );
        // A Job's pod is queued through its Job: no queue label on the pod.
        pod["metadata"]["ownerReferences"] = json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u", "controller": true}]);
        assert!(
            apply(&pod, settings)
                .pointer("/metadata/labels/kueue.x-k8s.io~1queue-name")
                .is_none()
        );
    }

    /// What an UPDATE of `old` into `new` gets: the mutated object, or
    /// `None` for no patch.
    fn update(old: &Value, new: &Value) -> Option<Value> {
        let verdict =
            testing::evaluate::<GpuPlacement>(&testing::update(old.clone(), new.clone()), "{}")
                .unwrap();
        assert!(verdict.allowed, "{:?}", verdict.message);
        verdict.mutated()
    }

    fn workload(api_version: &str, kind: &str, template_path: &str) -> Value {
        let mut object = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": "w", "namespace": "ml"}, "spec": {}});
        let template = json!({"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [
            {"name": "c", "image": "nvcr.io/x:1", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}});
        let mut slot = &mut object;
        for segment in template_path.split('.') {
            slot = &mut slot[segment];
        }
        *slot = template;
        object
    }

    #[test]
    fn updates_touch_templates_only_where_they_may_change_and_changed() {
        let pointer = |path: &str| format!("/{}", path.replace('.', "/"));
        for (api_version, kind, path, may_change) in [
            ("apps/v1", "Deployment", "spec.template", true),
            ("apps/v1", "StatefulSet", "spec.template", true),
            ("apps/v1", "DaemonSet", "spec.template", true),
            (
                "batch/v1",
                "CronJob",
                "spec.jobTemplate.spec.template",
                true,
            ),
            ("batch/v1", "Job", "spec.template", false),
            (
                "kubeflow.org/v1",
                "PyTorchJob",
                "spec.pytorchReplicaSpecs.Worker.template",
                false,
            ),
            (
                "jobset.x-k8s.io/v1alpha2",
                "JobSet",
                "spec.replicatedJobs",
                false,
            ),
        ] {
            let created = workload(api_version, kind, path);
            let stored = apply(&created, json!({}));
            // A label-only edit of what is stored: no patch, no rollout.
            let mut relabelled = stored.clone();
            relabelled["metadata"]["labels"] = json!({"team": "a"});
            assert_eq!(update(&stored, &relabelled), None, "{kind}: label edit");
            // The original manifest applied again (our additions missing):
            // put back where templates may change, so nothing rolls.
            let reapplied = update(&stored, &created);
            if may_change {
                let placed = reapplied.unwrap_or_else(|| panic!("{kind}: re-apply"));
                assert_eq!(
                    placed.pointer(&pointer(path)),
                    stored.pointer(&pointer(path))
                );
            } else {
                assert_eq!(reapplied, None, "{kind}: its template is immutable");
            }
        }
    }

    #[test]
    fn templates_of_ml_jobs_are_placed_and_the_rest_is_kept_byte_for_byte() {
        let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "llama", "namespace": "ml", "annotations": {"gpu.tollgate.dev/class": "h100"}},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "pytorch", "image": "i:1", "args": ["--x=\"y\""], "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}},
            "Worker": {"replicas": 3, "template": {"metadata": {"labels": {"role": "w"}}, "spec": {"containers": [
                {"name": "pytorch", "image": "i:1", "resources": {"limits": {"nvidia.com/gpu": 8}}}]}}},
        }}});
        let settings = json!({"classes": {"h100": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["H100"]}]}});
        let placed = apply_idempotently(&job, settings);
        for role in ["Master", "Worker"] {
            let spec = &placed["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"];
            assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu");
            assert_eq!(
                spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
                json!(["H100"])
            );
        }
        assert_eq!(placed["spec"]["runPolicy"], job["spec"]["runPolicy"]);
        assert_eq!(
            placed["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["args"],
            json!(["--x=\"y\""])
        );
    }

    #[test]
    fn a_ray_service_serving_on_gpus_and_a_ray_job_get_tolerations_and_shm() {
        let group = |gpus: u32| {
            json!({"template": {"spec": {"containers": [{"name": "ray", "image": "rayproject/ray-llm:2.9",
                "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}})
        };
        let cluster = json!({"headGroupSpec": group(0), "workerGroupSpecs": [group(1)]});
        let service = json!({"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": "llm", "namespace": "serve"},
            "spec": {"serveConfigV2": "applications: []", "rayClusterConfig": cluster}});
        let job = json!({"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": "tune", "namespace": "ml"},
            "spec": {"entrypoint": "python tune.py", "rayClusterSpec": cluster}});
        for (object, root) in [(service, "rayClusterConfig"), (job, "rayClusterSpec")] {
            let placed = apply_idempotently(&object, json!({}));
            let worker = &placed["spec"][root]["workerGroupSpecs"][0]["template"]["spec"];
            assert_eq!(worker["tolerations"][0]["key"], "nvidia.com/gpu", "{root}");
            assert_eq!(
                worker["containers"][0]["volumeMounts"],
                json!([{"name": "tollgate-shm", "mountPath": "/dev/shm"}])
            );
            let head = &placed["spec"][root]["headGroupSpec"]["template"]["spec"];
            assert!(
                head.get("tolerations").is_none(),
                "{root}: the head asks no GPU"
            );
            assert_eq!(
                placed["spec"]["serveConfigV2"],
                object["spec"]["serveConfigV2"]
            );
        }
    }

    #[test]
    fn objects_without_templates_and_pod_updates_are_left_alone() {
        let namespace =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}});
        assert_eq!(apply(&namespace, json!({})), namespace);
        let update = testing::request("UPDATE", gpu_pod(json!({})));
        let verdict = testing::evaluate::<GpuPlacement>(&update, "{}").unwrap();
        assert!(verdict.allowed && verdict.mutated_object.is_none());
    }

    #[test]
    fn bad_settings_are_refused() {
        let error = |settings: Value| {
            testing::validate_settings::<GpuPlacement>(&settings.to_string()).unwrap_err()
        };
        assert!(error(json!({"gpuResource": []})).contains("unknown field `gpuResource`"));
        assert!(error(json!({"classes": {"h100": []}})).contains("classes.h100: a class needs"));
        assert!(
            error(json!({"classes": {"h100": [{"key": "k", "operator": "Maybe"}]}}))
                .contains("is not a node selector requirement")
        );
        assert!(
            error(json!({"namespaceDefaults": {"ml": {"class": "x"}}}))
                .contains(r#"unknown class "x" (known: none configured)"#)
        );
        assert!(
            error(json!({"topology": {"weight": 0}})).contains("topology.weight must be 1 to 100")
        );
        assert!(error(json!({"shm": "big"})).contains("shm must be false, true, or {sizeLimit"));
        assert!(error(json!({"topology": {"mode": "maybe"}})).contains("unknown variant `maybe`"));
    }
}
