//! `workload-priority` after `gpu-placement` through `tollgate serve` over
//! HTTPS, with the example configuration and its cluster snapshot: classes
//! per namespace, default classes and a Pod's priority in one patch with
//! gpu-placement's own additions, Kueue queues, PriorityClass objects.

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, review, workspace};

async fn start() -> Server {
    let config =
        std::fs::read_to_string(workspace().join("examples/priority/config.yaml")).unwrap();
    let snapshot = workspace().join("examples/priority/cluster.yaml");
    Server::start(Options {
        config: Some(&config),
        args: &["--context", snapshot.to_str().unwrap()],
        ..Options::default()
    })
    .await
}

/// The response's JSON Patch, which must name each path once.
fn patch(response: &Value) -> json_patch::Patch {
    assert_eq!(response["allowed"], true, "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut paths: Vec<String> = patch.0.iter().map(|op| op.path().to_string()).collect();
    let count = paths.len();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), count, "a path patched twice: {patch:?}");
    patch
}

fn patched(object: &Value, response: &Value) -> Value {
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch(response)).expect("the patch applies");
    object
}

fn gpu_spec(class: Option<&str>) -> Value {
    let mut spec = json!({"containers": [{"name": "pytorch", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "resources": {"limits": {"nvidia.com/gpu": "8"}}}]});
    if let Some(class) = class {
        spec["priorityClassName"] = json!(class);
    }
    spec
}

#[tokio::test]
async fn the_example_configuration_composes_with_gpu_placement() {
    let server = start().await;

    // The README's request: a tenant naming the platform team's class.
    let request: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("examples/priority/urgent-training.json"))
            .unwrap(),
    )
    .unwrap();
    let refused = server.review("/mutate", &request).await;
    assert_eq!(
        refused["status"]["message"],
        "workload-priority: PyTorchJob \"vit-pretrain\": spec.pytorchReplicaSpecs.Worker.template: priority class \"urgent\" is not allowed in namespace \"team-vision\": name one of gpu-batch, gpu-serving, gpu-interactive"
    );

    // Without a class: gpu-placement adds the queue, workload-priority the
    // training default, in one patch.
    let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "vit-pretrain", "namespace": "team-vision"},
        "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 4, "template": {"spec": gpu_spec(None)}}}}});
    let placed = patched(
        &job,
        &server.review("/mutate", &review("CREATE", &job)).await,
    );
    assert_eq!(
        placed["metadata"]["labels"]["kueue.x-k8s.io/queue-name"],
        "vision"
    );
    let worker = &placed["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"];
    assert_eq!(worker["priorityClassName"], "gpu-batch");
    assert_eq!(worker["tolerations"][0]["key"], "nvidia.com/gpu");

    // A notebook pod: gpu-placement names its class by label after the
    // Priority plugin gave it 0; workload-priority brings its priority in
    // line, in the same patch.
    let notebook = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "notebook", "namespace": "team-vision", "labels": {"tollgate.dev/workload": "interactive"}},
        "spec": {"priority": 0, "containers": gpu_spec(None)["containers"]}});
    let placed = patched(
        &notebook,
        &server.review("/mutate", &review("CREATE", &notebook)).await,
    );
    assert_eq!(placed["spec"]["priorityClassName"], "gpu-interactive");
    assert_eq!(placed["spec"]["priority"], 5000);
    assert_eq!(placed["spec"]["preemptionPolicy"], "Never");

    // A queue the namespace does not have.
    let mut serving = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "vllm", "namespace": "team-vision", "labels": {"kueue.x-k8s.io/queue-name": "fast"}},
        "spec": {"template": {"spec": gpu_spec(None)}}});
    let refused = server.review("/mutate", &review("CREATE", &serving)).await;
    assert_eq!(
        refused["status"]["message"],
        "workload-priority: Deployment \"vllm\": label kueue.x-k8s.io/queue-name=fast names no LocalQueue of namespace \"team-vision\" (its LocalQueues: vision, vision-spot)"
    );
    serving["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = json!("vision-spot");
    let placed = patched(
        &serving,
        &server.review("/mutate", &review("CREATE", &serving)).await,
    );
    assert_eq!(
        placed["spec"]["template"]["spec"]["priorityClassName"],
        "gpu-serving"
    );

    // PriorityClass objects above the ceiling: admins only.
    let high = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": "mine-first"}, "value": 500_000});
    let mut body = review("CREATE", &high);
    body["request"]["namespace"] = json!("");
    let refused = server.review("/mutate", &body).await;
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("workload-priority: PriorityClass \"mine-first\": value 500000 is above the ceiling 100000; only members of system:masters, platform-admins may create or change such a class"),
        "{refused}"
    );
    body["request"]["userInfo"]["groups"] = json!(["system:authenticated", "platform-admins"]);
    assert_eq!(server.review("/mutate", &body).await["allowed"], true);
}
