//! Every manifest of `../shared/conformance/gpu-workloads/` (real GPU and ML
//! workloads), wrapped as CREATE requests and sent through the default
//! configuration: the mutation patch applies, keeps what the user wrote,
//! fills in requests, and is idempotent; the verdict denies exactly the
//! containers whose images break the default registry rules and the pod
//! templates that break the baseline Pod Security Standard.

use std::path::PathBuf;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
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

#[tokio::test]
async fn every_gpu_workload_is_mutated_correctly_and_idempotently() {
    let server = Server::start_default().await;
    let documents = manifests();
    assert!(
        documents.len() >= 20,
        "expected the gpu-workloads fixtures, found {}",
        documents.len()
    );
    let mut with_templates = 0;
    for (file, object) in &documents {
        let response = server.review("/mutate", &review("CREATE", object)).await;
        assert_eq!(response["allowed"], true, "{file}: {response}");
        let specs = pod_specs(object);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default");
        let Some(patch) = response.get("patch") else {
            // Nothing to add: every container already has both requests, or
            // the namespace is excluded, or there are no containers.
            for spec in &specs {
                for container in containers(spec) {
                    let resources = &container["resources"];
                    let complete = ["cpu", "memory"].iter().all(|r| {
                        resources["requests"].get(r).is_some()
                            || resources["limits"].get(r).is_some()
                    });
                    assert!(
                        complete || namespace == "kube-system",
                        "{file}: {container} was not given defaults"
                    );
                }
            }
            continue;
        };
        with_templates += 1;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch.as_str().unwrap())
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch)
            .unwrap_or_else(|e| panic!("{file}: patch does not apply: {e}"));
        let patched_specs = pod_specs(&patched);
        assert_eq!(specs.len(), patched_specs.len());
        for (before, after) in specs.iter().zip(&patched_specs) {
            // Only resources changed; everything else the user wrote stays.
            let mut stripped = (*after).clone();
            let mut original = (*before).clone();
            for spec in [&mut stripped, &mut original] {
                for field in ["initContainers", "containers"] {
                    for container in spec[field].as_array_mut().into_iter().flatten() {
                        container.as_object_mut().unwrap().remove("resources");
                    }
                }
            }
            assert_eq!(
                stripped, original,
                "{file}: something besides resources changed"
            );
            for (old, new) in containers(before).zip(containers(after)) {
                for (field, values) in old["resources"].as_object().into_iter().flatten() {
                    for (resource, amount) in values.as_object().into_iter().flatten() {
                        assert_eq!(
                            &new["resources"][field][resource], amount,
                            "{file}: user value overwritten"
                        );
                    }
                }
                for resource in ["cpu", "memory"] {
                    let resources = &new["resources"];
                    assert!(
                        resources["requests"].get(resource).is_some()
                            || resources["limits"].get(resource).is_some(),
                        "{file}: {resource} missing after mutation"
                    );
                }
            }
        }
        let again = server.review("/mutate", &review("CREATE", &patched)).await;
        assert!(
            again.get("patch").is_none(),
            "{file}: second pass patched again: {again}"
        );
    }
    assert!(
        with_templates >= 10,
        "only {with_templates} manifests were mutated"
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
