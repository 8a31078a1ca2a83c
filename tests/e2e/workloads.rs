//! Every manifest of `../shared/conformance/gpu-workloads/` (real GPU and ML
//! workloads), wrapped as CREATE requests and sent through the default
//! configuration: the mutation patch applies, keeps everything the user
//! wrote, yields valid objects, fills in requests, gives GPU templates the GPU
//! toleration and keeps CPU-only ones off GPU nodes, and is idempotent; the verdict denies exactly the
//! containers whose images break the default registry rules and the pod
//! templates that break the baseline Pod Security Standard.

use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_e2e::{Server, review, shared};

/// Every document of every manifest, with its file name.
fn manifests() -> Vec<(String, Value)> {
    let root = shared("conformance/gpu-workloads");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("reading gpu-workloads")
        .flat_map(|dir| std::fs::read_dir(dir.unwrap().path()).into_iter().flatten())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if value.is_object() {
                documents.push((
                    file.file_name().unwrap().to_string_lossy().into_owned(),
                    value,
                ));
            }
        }
    }
    documents
}

/// Pod specs of an object, found independently of the SDK's helper.
fn pod_specs(object: &Value) -> Vec<&Value> {
    let spec = &object["spec"];
    match object["kind"].as_str().unwrap_or("") {
        "Pod" => vec![spec],
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
            vec![&spec["template"]["spec"]]
        }
        "PyTorchJob" | "TFJob" | "PaddleJob" | "MPIJob" | "XGBoostJob" => spec
            .as_object()
            .into_iter()
            .flat_map(|s| s.iter())
            .filter(|(key, _)| key.ends_with("ReplicaSpecs"))
            .flat_map(|(_, roles)| roles.as_object().into_iter().flat_map(|r| r.values()))
            .map(|role| &role["template"]["spec"])
            .collect(),
        _ => Vec::new(),
    }
}

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers"]
        .into_iter()
        .flat_map(|field| spec[field].as_array().into_iter().flatten())
}

/// Whether `new` keeps everything `old` has: every member of an object,
/// every element of an array in its place (new ones only appended).
fn keeps(old: &Value, new: &Value) -> bool {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => old
            .iter()
            .all(|(key, value)| new.get(key).is_some_and(|now| keeps(value, now))),
        (Value::Array(old), Value::Array(new)) => {
            old.len() <= new.len() && old.iter().zip(new).all(|(a, b)| keeps(a, b))
        }
        _ => old == new,
    }
}

/// Whether a pod spec asks for a GPU (extended resource or DRA claim),
/// checked independently of the policy.
fn asks_for_gpu(spec: &Value) -> bool {
    spec["resourceClaims"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
        || containers(spec).any(|c| {
            ["limits", "requests"].iter().any(|field| {
                c["resources"][field]
                    .as_object()
                    .is_some_and(|r| r.keys().any(|k| k == "nvidia.com/gpu"))
            })
        })
}

/// The mutated object is still a valid object of its kind.
fn assert_typed(file: &str, object: &Value) {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    fn parse<T: serde::de::DeserializeOwned>(file: &str, value: &Value) {
        if let Err(e) = serde_json::from_value::<T>(value.clone()) {
            panic!(
                "{file}: the result is not a valid {}: {e}",
                std::any::type_name::<T>()
            );
        }
    }
    match object["kind"].as_str().unwrap_or("") {
        "Pod" => parse::<core::Pod>(file, object),
        "Deployment" => parse::<apps::Deployment>(file, object),
        "DaemonSet" => parse::<apps::DaemonSet>(file, object),
        "StatefulSet" => parse::<apps::StatefulSet>(file, object),
        "ReplicaSet" => parse::<apps::ReplicaSet>(file, object),
        "Job" => parse::<batch::Job>(file, object),
        _ => {}
    }
    for spec in pod_specs(object) {
        parse::<core::PodSpec>(file, spec);
    }
}

#[tokio::test]
async fn every_gpu_workload_is_mutated_correctly_and_idempotently() {
    let server = Server::start_default().await;
    let documents = manifests();
    assert!(
        documents.len() >= 20,
        "expected the gpu-workloads fixtures, found {}",
        documents.len()
    );
    let (mut gpu_templates, mut cpu_templates) = (0, 0);
    for (file, object) in &documents {
        let response = server.review("/mutate", &review("CREATE", object)).await;
        assert_eq!(response["allowed"], true, "{file}: {response}");
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let Some(patch) = response.get("patch") else {
            // Nothing to add: not a workload, or an excluded namespace.
            assert!(
                pod_specs(object).is_empty() || namespace == "kube-system",
                "{file}: a workload got no patch"
            );
            continue;
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch)
            .unwrap_or_else(|e| panic!("{file}: patch does not apply: {e}"));
        assert!(
            keeps(object, &patched),
            "{file}: something the user wrote was changed or removed:\n{patched}"
        );
        assert_typed(file, &patched);
        for spec in pod_specs(&patched) {
            for container in containers(spec) {
                for resource in ["cpu", "memory"] {
                    let resources = &container["resources"];
                    assert!(
                        resources["requests"].get(resource).is_some()
                            || resources["limits"].get(resource).is_some(),
                        "{file}: {resource} missing after mutation"
                    );
                }
            }
            let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
            let tolerates_gpu = tolerations.iter().any(|t| {
                (t["key"] == "nvidia.com/gpu" || t.get("key").is_none())
                    && t["operator"] == "Exists"
                    && (t.get("effect").is_none() || t["effect"] == "NoSchedule")
            });
            let terms =
                spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                    ["nodeSelectorTerms"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            if asks_for_gpu(spec) {
                gpu_templates += 1;
                assert!(
                    tolerates_gpu,
                    "{file}: a GPU template without the GPU toleration"
                );
            } else {
                cpu_templates += 1;
                let off_gpu = json!({"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"});
                let kept_off = !terms.is_empty()
                    && terms.iter().all(|t| {
                        t["matchExpressions"]
                            .as_array()
                            .is_some_and(|e| e.contains(&off_gpu))
                    });
                // Device plugins run in an exempt namespace: left on GPU nodes.
                let exempt = namespace == "nvidia-device-plugin";
                assert_eq!(
                    kept_off, !exempt,
                    "{file}: CPU-only template in {namespace}: {spec}"
                );
            }
        }
        let again = server.review("/mutate", &review("CREATE", &patched)).await;
        assert!(
            again.get("patch").is_none(),
            "{file}: second pass patched again: {again}"
        );
    }
    assert!(
        gpu_templates >= 15 && cpu_templates >= 1,
        "{gpu_templates} GPU and {cpu_templates} CPU templates"
    );
}

/// Whether a pod spec breaks the baseline Pod Security Standard in one of the
/// ways GPU system workloads do (privileged device plugins, host paths, host
/// namespaces, host ports, extra capabilities), checked independently of the
/// policy.
fn breaks_baseline(spec: &Value) -> bool {
    const DEFAULT_CAPABILITIES: &[&str] = &[
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    let host_namespace = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .any(|field| spec[field] == true);
    let host_path = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|v| v.get("hostPath").is_some());
    let container = containers(spec).any(|c| {
        let context = &c["securityContext"];
        context["privileged"] == true
            || c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["hostPort"].as_u64().unwrap_or(0) != 0)
            || context["capabilities"]["add"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|cap| !DEFAULT_CAPABILITIES.contains(&cap.as_str().unwrap_or("")))
    });
    host_namespace || host_path || container
}

#[tokio::test]
async fn gpu_workloads_are_denied_exactly_for_bad_images_and_baseline_violations() {
    let server = Server::start_default().await;
    let mut denied_by_pod_security = 0;
    for (file, object) in manifests() {
        let response = server.review("/validate", &review("CREATE", &object)).await;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let specs = pod_specs(&object);
        let offending: Vec<String> = specs
            .iter()
            .copied()
            .flat_map(containers)
            .filter(|c| {
                let image = c["image"].as_str().unwrap_or("");
                image.ends_with(":latest") || image.starts_with("registry.baidubce.com/")
            })
            .map(|c| format!("container {}", c["name"]))
            .collect();
        let baseline = specs.iter().any(|spec| breaks_baseline(spec));
        if namespace == "kube-system" || (offending.is_empty() && !baseline) {
            assert_eq!(response["allowed"], true, "{file}: {response}");
            continue;
        }
        assert_eq!(response["allowed"], false, "{file}");
        let message = response["status"]["message"].as_str().unwrap();
        assert_eq!(
            message.contains("image-registries: "),
            !offending.is_empty(),
            "{file}: {message}"
        );
        for container in &offending {
            assert!(
                message.contains(container.as_str()),
                "{file}: {message} does not name {container}"
            );
        }
        assert_eq!(
            message.contains(r#"pod-security-baseline: violates PodSecurity "baseline:latest": "#),
            baseline,
            "{file}: {message}"
        );
        denied_by_pod_security += usize::from(baseline);
    }
    assert!(
        denied_by_pod_security > 0,
        "no GPU system workload broke baseline: the fixtures changed"
    );
}

/// The patch of a `/mutate` answer, if any.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response.get("patch")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn update(old: &Value, new: &Value) -> Value {
    let mut request = review("UPDATE", new);
    request["request"]["oldObject"] = old.clone();
    request
}

#[tokio::test]
async fn updates_of_every_gpu_workload_never_touch_what_kubernetes_fixes_or_start_a_rollout() {
    let server = Server::start_default().await;
    let (mut relabelled, mut reapplied) = (0, 0);
    for (file, object) in manifests() {
        if pod_specs(&object).is_empty() {
            continue;
        }
        let kind = object["kind"].as_str().unwrap_or("").to_owned();
        let created = server.review("/mutate", &review("CREATE", &object)).await;
        let mut stored = object.clone();
        if let Some(patch) = patch_of(&created) {
            json_patch::patch(&mut stored, &patch).unwrap();
        }

        // A label edit of what is stored: no patch, so no rollout.
        let mut edited = stored.clone();
        edited["metadata"]["labels"]["edited"] = json!("yes");
        let answer = server.review("/mutate", &update(&stored, &edited)).await;
        assert_eq!(answer["allowed"], true, "{file}: {answer}");
        assert!(
            answer.get("patch").is_none(),
            "{file} ({kind}): a label edit got a patch: {answer}"
        );
        relabelled += 1;

        // The original manifest applied again over what is stored.
        let answer = server.review("/mutate", &update(&stored, &object)).await;
        assert_eq!(answer["allowed"], true, "{file}: {answer}");
        let patch = patch_of(&answer);
        let templates_may_change = matches!(
            kind.as_str(),
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        );
        if templates_may_change {
            // Our additions come back: the templates end as stored, so the
            // apply starts no rollout.
            let mut result = object.clone();
            if let Some(patch) = &patch {
                json_patch::patch(&mut result, patch).unwrap();
            }
            assert_eq!(
                pod_specs(&result),
                pod_specs(&stored),
                "{file} ({kind}): re-applying the manifest would roll the pods"
            );
        } else if let Some(patch) = &patch {
            // A Pod's spec, a Job's and an ML job's templates are fixed:
            // nothing of ours may touch them.
            let touched: Vec<String> = serde_json::to_value(patch)
                .unwrap()
                .as_array()
                .unwrap()
                .iter()
                .map(|op| op["path"].as_str().unwrap().to_owned())
                .filter(|path| path.starts_with("/spec"))
                .collect();
            assert!(
                touched.is_empty(),
                "{file} ({kind}): an UPDATE patch touches {touched:?}"
            );
        }
        reapplied += 1;
    }
    println!("UPDATE matrix: {relabelled} label edits, {reapplied} re-applied manifests");
    assert!(relabelled >= 15, "{relabelled}");
}
