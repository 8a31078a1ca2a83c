//! The default configuration over HTTPS: verdicts, patches, health, metrics.

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_e2e::{Server, review, standard_request};

fn decode_patch(response: &Value) -> json_patch::Patch {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("patch"))
        .unwrap();
    serde_json::from_slice(&bytes).expect("patch is a JSON Patch")
}

#[tokio::test]
async fn the_standard_gpu_pod_is_allowed_and_only_given_its_gang_topology_hint() {
    let server = Server::start_default().await;
    let request = standard_request();
    let validated = server.review("/validate", &request).await;
    assert_eq!(validated["allowed"], true, "{validated}");
    assert!(validated.get("warnings").is_none(), "{validated}");
    let mutated = server.review("/mutate", &request).await;
    assert_eq!(mutated["allowed"], true);
    // It has requests, the GPU toleration and /dev/shm already; what it lacks
    // is the pod affinity that packs its job onto one NVLink domain.
    let patch = serde_json::to_value(decode_patch(&mutated)).unwrap();
    assert_eq!(
        patch,
        json!([{"op": "add", "path": "/spec/affinity", "value": {"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
                "labelSelector": {"matchLabels": {"batch.kubernetes.io/job-name": "llm-finetune-7b"}},
                "topologyKey": "nvidia.com/gpu.clique"}}]}}}])
    );
}

#[tokio::test]
async fn a_pod_from_an_unknown_registry_is_denied_naming_container_and_image() {
    let server = Server::start_default().await;
    let mut request = standard_request();
    request["request"]["object"]["spec"]["containers"][0]["image"] =
        json!("evil.example.com/miner:1.0");
    let response = server.review("/validate", &request).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "image-registries: container \"trainer\" uses image \"evil.example.com/miner:1.0\", which is not from an allowed registry"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn mutate_returns_a_patch_that_applies_and_is_idempotent() {
    let server = Server::start_default().await;
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
    "spec": {"containers": [
        {"name": "bare", "image": "nvcr.io/nvidia/pytorch:24.05-py3"},
        {"name": "limited", "image": "nvcr.io/x:1", "resources": {"limits": {"cpu": "2"}}},
    ]}});
    let response = server.review("/mutate", &review("CREATE", &object)).await;
    assert_eq!(response["allowed"], true);
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &decode_patch(&response)).expect("the patch applies");
    let mut expected = object.clone();
    expected["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}});
    expected["spec"]["containers"][1]["resources"] =
        json!({"limits": {"cpu": "2"}, "requests": {"memory": "128Mi"}});
    // A CPU-only pod is kept off GPU nodes.
    expected["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "DoesNotExist"}]}]}}});
    assert_eq!(patched, expected);
    let again = server.review("/mutate", &review("CREATE", &patched)).await;
    assert_eq!(again["allowed"], true);
    assert!(
        again.get("patch").is_none(),
        "second pass must not patch: {again}"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let server = Server::start_default().await;
    assert_eq!(server.get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(
        server.get("/readyz").await,
        (200, "ready: 5 policies loaded\n".to_string())
    );
    server.review("/validate", &standard_request()).await;
    server.review("/mutate", &standard_request()).await;
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for expected in [
        "tollgate_admission_requests_total{endpoint=\"validate\",result=\"allowed\"} 1",
        "tollgate_admission_requests_total{endpoint=\"mutate\",result=\"allowed\"} 1",
        "tollgate_policy_evaluations_total{policy=\"image-registries\",result=\"allowed\"} 1",
        "tollgate_policy_evaluations_total{policy=\"resource-defaults\",result=\"allowed\"} 1",
        "tollgate_admission_request_duration_seconds_bucket{le=\"0.0001\",endpoint=\"validate\"}",
        "tollgate_policy_evaluation_duration_seconds_count{policy=\"image-registries\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected:?} in:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn one_call_evaluates_every_matching_policy() {
    let server = Server::start(tollgate_e2e::Options {
        config: Some(
            r#"
policies:
  - {name: nvcr-only, module: builtin:image-registries, settings: {allowedRegistries: [nvcr.io/]}}
  - {name: no-latest, module: builtin:image-registries, settings: {denyLatest: true}}
  - {name: quay-only, module: builtin:image-registries, settings: {allowedRegistries: [quay.io/]}, match: {kinds: [Deployment]}}
"#,
        ),
        ..Default::default()
    })
    .await;
    let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "docker.io/library/busybox:latest"}]}});
    let response = server.review("/validate", &review("CREATE", &object)).await;
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("nvcr-only: container \"c\""),
        "{message}"
    );
    assert!(message.contains("; no-latest: container \"c\" uses image \"docker.io/library/busybox:latest\": the tag latest"));
    assert!(
        !message.contains("quay-only"),
        "quay-only matches only Deployments: {message}"
    );
}
