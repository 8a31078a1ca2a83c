//! `gpu-placement` in the default configuration, over HTTPS.

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_e2e::{Server, review};

fn patched(object: &Value, response: &Value) -> Value {
    assert_eq!(response["allowed"], true, "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut object = object.clone();
    json_patch::patch(&mut object, &patch).expect("the patch applies");
    object
}

#[tokio::test]
async fn gpu_jobs_are_placed_and_cpu_pods_kept_off_gpu_nodes() {
    let server = Server::start_default().await;
    let template = |gpus: u32| {
        json!({"spec": {"containers": [{"name": "pytorch", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
            "resources": {"limits": {"nvidia.com/gpu": gpus, "cpu": "8", "memory": "64Gi"}}}]}})
    };
    let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"replicas": 1, "template": template(1)},
            "Worker": {"replicas": 3, "template": template(8)}}}});
    let response = server.review("/mutate", &review("CREATE", &job)).await;
    let placed = patched(&job, &response);
    for role in ["Master", "Worker"] {
        let spec = &placed["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"];
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])
        );
        assert_eq!(
            spec["containers"][0]["volumeMounts"][0]["mountPath"],
            "/dev/shm"
        );
        assert_eq!(spec["volumes"][0]["emptyDir"]["medium"], "Memory");
    }
    // The pods the operator creates from the placed templates carry their
    // gang label: they get the topology hint, and nothing is added twice.
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "llama-worker-0", "namespace": "ml",
            "labels": {"training.kubeflow.org/job-name": "llama"}},
        "spec": placed["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]});
    let response = server.review("/mutate", &review("CREATE", &pod)).await;
    pod = patched(&pod, &response);
    assert_eq!(
        pod["spec"]["affinity"]["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"]["labelSelector"]["matchLabels"]["training.kubeflow.org/job-name"],
        "llama"
    );
    assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 1);

    let web = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "apps"},
        "spec": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "containers": [{"name": "web", "image": "nvcr.io/web:1"}]}});
    let response = server.review("/mutate", &review("CREATE", &web)).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("gpu-placement: asks for no GPU (nvidia.com/gpu, nvidia.com/mig-*, amd.com/gpu) but tolerates the GPU taint nvidia.com/gpu=*:NoSchedule"),
        "{message}"
    );
}
