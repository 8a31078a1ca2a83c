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

/// Found when tried as a new user would: a RayService serving an LLM on
/// GPUs, and a RayJob, a TrainJob and an Argo Workflow, through the default
/// configuration.
#[tokio::test]
async fn ml_kinds_are_placed_and_checked_by_the_default_configuration() {
    let server = Server::start_default().await;
    let group = |gpus: u32| {
        json!({"template": {"spec": {"containers": [{"name": "ray", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
            "resources": {"limits": {"nvidia.com/gpu": gpus, "cpu": "8", "memory": "64Gi"}}}]}}})
    };
    let cluster = json!({"headGroupSpec": group(0), "workerGroupSpecs": [group(1)]});
    let service = json!({"apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "llm", "namespace": "serve"},
        "spec": {"serveConfigV2": "applications: []", "rayClusterConfig": cluster}});
    let job = json!({"apiVersion": "ray.io/v1", "kind": "RayJob",
        "metadata": {"name": "tune", "namespace": "ml"},
        "spec": {"entrypoint": "python tune.py", "rayClusterSpec": cluster}});
    for (object, root) in [(service, "rayClusterConfig"), (job, "rayClusterSpec")] {
        let placed = patched(
            &object,
            &server.review("/mutate", &review("CREATE", &object)).await,
        );
        let worker = &placed["spec"][root]["workerGroupSpecs"][0]["template"]["spec"];
        assert_eq!(worker["tolerations"][0]["key"], "nvidia.com/gpu", "{root}");
        assert_eq!(
            worker["containers"][0]["volumeMounts"][0]["mountPath"],
            "/dev/shm"
        );
        assert_eq!(worker["volumes"][0]["emptyDir"]["medium"], "Memory");
    }
    // An Argo Workflow's templates are checked as the pods Argo makes of
    // them (and left unmutated: they are not pod specs).
    let workflow = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"name": "sweep", "namespace": "ml"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "steps": [[{"name": "t", "template": "train"}]]},
            {"name": "train", "container": {"image": "nvcr.io/nvidia/pytorch:24.05-py3",
                "securityContext": {"privileged": true}, "resources": {"limits": {"nvidia.com/gpu": 1}}}}]}});
    let refused = server
        .review("/validate", &review("CREATE", &workflow))
        .await;
    assert!(
        refused["status"]["message"].as_str().unwrap().starts_with(
            "pod-security-baseline: violates PodSecurity \"baseline:latest\": privileged (container \"main\" must not set securityContext.privileged=true)"
        ),
        "{refused}"
    );
    let mutated = server.review("/mutate", &review("CREATE", &workflow)).await;
    assert!(
        mutated["allowed"] == true && mutated.get("patch").is_none(),
        "{mutated}"
    );
    // A TrainJob's override is checked like any template.
    let train = json!({"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "llama", "namespace": "ml"},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, "podTemplateOverrides": [{"targetJobs": [{"name": "node"}],
            "spec": {"hostPID": true, "containers": [{"name": "node", "image": "nvcr.io/nvidia/pytorch:24.05-py3"}]}}]}});
    let refused = server.review("/validate", &review("CREATE", &train)).await;
    assert_eq!(refused["allowed"], false, "{refused}");
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("pod-security-baseline: violates PodSecurity \"baseline:latest\": host namespaces (hostPID=true)"),
        "{refused}"
    );
}
