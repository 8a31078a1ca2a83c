//! `network-guard` through `tollgate serve` over HTTPS: the Kubernetes
//! documentation's NetworkPolicy examples get the verdicts written beside
//! them, and the example configuration isolates tenants and guards GPU
//! endpoints with context from a manifest snapshot.

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, review, workspace};

/// `policies/network-guard/fixtures/kubernetes-docs.yaml`.
fn fixtures() -> Value {
    let path = workspace().join("policies/network-guard/fixtures/kubernetes-docs.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn the_documentations_examples_get_their_verdicts_over_https() {
    let fixtures = fixtures();
    let snapshot = tempfile::tempdir().unwrap();
    let namespaces: Vec<String> = fixtures["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| serde_yaml::to_string(n).unwrap())
        .collect();
    std::fs::write(
        snapshot.path().join("namespaces.yaml"),
        namespaces.join("---\n"),
    )
    .unwrap();
    let config = format!(
        "policies:\n  - name: network-guard\n    module: builtin:network-guard\n    match: {{kinds: [NetworkPolicy]}}\n    context: [{{apiVersion: v1, kind: Namespace}}, {{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy}}]\n    settings: {}\n",
        fixtures["settings"]
    );
    let server = Server::start(Options {
        config: Some(&config),
        args: &["--context", snapshot.path().to_str().unwrap()],
        ..Options::default()
    })
    .await;

    let cases = fixtures["cases"].as_array().unwrap();
    let mut agreed = 0;
    for case in cases {
        let mut object = case["object"].clone();
        object["metadata"]["namespace"] = case["namespace"].clone();
        let response = server.review("/validate", &review("CREATE", &object)).await;
        let message = response["status"]["message"].as_str().unwrap_or_default();
        assert_eq!(
            response["allowed"], case["allowed"],
            "{}: expected because {}; got {message}",
            case["name"], case["why"]
        );
        if let Some(expected) = case["contains"].as_str() {
            assert!(message.contains(expected), "{}: {message}", case["name"]);
        }
        agreed += 1;
    }
    println!(
        "network-guard: {agreed}/{} documentation examples agree over HTTPS",
        cases.len()
    );
}

#[tokio::test]
async fn the_example_configuration_isolates_tenants_and_guards_gpu_endpoints() {
    let server = Server::start(Options {
        config: Some(
            &std::fs::read_to_string(workspace().join("examples/network/config.yaml")).unwrap(),
        ),
        args: &[
            "--context",
            workspace()
                .join("examples/network/cluster.yaml")
                .to_str()
                .unwrap(),
        ],
        ..Options::default()
    })
    .await;
    let validate = |object: &Value, operation: &str| {
        let mut body = review(operation, object);
        if operation == "DELETE" {
            body["request"]["oldObject"] = body["request"]["object"].take();
        }
        let server = &server;
        async move { server.review("/validate", &body).await }
    };

    // A tenant with its default-deny policies runs pods; one without is
    // told what to apply, for Pods and for every ML kind alike.
    let pod = |namespace: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "nvcr.io/nvidia/pytorch:24.05-py3"}]}})
    };
    assert_eq!(
        validate(&pod("team-vision"), "CREATE").await["allowed"],
        true
    );
    let refused = validate(&pod("team-nlp"), "CREATE").await;
    assert_eq!(
        refused["status"]["message"],
        "network-guard: namespace \"team-nlp\" is a tenant namespace without a default-deny ingress and egress NetworkPolicy, \
         so this Pod's pods would accept traffic from every pod of the cluster and reach every destination: apply one first \
         (kubectl apply -f - with {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: default-deny, namespace: team-nlp}, \
         spec: {podSelector: {}, policyTypes: [Ingress, Egress]}})"
    );
    let ray_service = json!({"apiVersion": "ray.io/v1", "kind": "RayService",
        "metadata": {"name": "llm", "namespace": "team-nlp"},
        "spec": {"rayClusterConfig": {"headGroupSpec": {"template": {"spec": {"containers": [{"name": "head", "image": "rayproject/ray:2.9"}]}}}}}});
    let refused = validate(&ray_service, "CREATE").await;
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .contains("so this RayService's pods would accept traffic"),
        "{refused}"
    );

    // The last default-deny policy stays.
    let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny", "namespace": "team-vision"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
    let refused = validate(&deny, "DELETE").await;
    assert!(
        refused["status"]["message"].as_str().unwrap().contains(
            "NetworkPolicy \"default-deny\" is the last default-deny ingress and egress policy of tenant namespace \"team-vision\""
        ),
        "{refused}"
    );

    // The vLLM Deployment's GPU pods serve on 8000 and 443 only; load
    // balancers only in the gateway namespace.
    let service = |ports: Value, kind: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "llm", "namespace": "team-vision"},
            "spec": {"type": kind, "selector": {"app": "vllm"}, "ports": ports}})
    };
    let allowed = validate(&service(json!([{"port": 8000}]), "ClusterIP"), "CREATE").await;
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let refused = validate(
        &service(json!([{"port": 8000}, {"port": 8265}]), "ClusterIP"),
        "CREATE",
    )
    .await;
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.ports[1] (8265/TCP) exposes GPU pods on a port not allowed for them: serve them on 8000/TCP, 443/TCP"),
        "{refused}"
    );
    let refused = validate(&service(json!([{"port": 443}]), "LoadBalancer"), "CREATE").await;
    assert!(
        refused["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.type LoadBalancer exposes it outside the cluster, which is allowed only in gateway"),
        "{refused}"
    );

    // The example request of the README.
    let request: Value = serde_json::from_str(
        &std::fs::read_to_string(workspace().join("examples/network/open-ingress.json")).unwrap(),
    )
    .unwrap();
    let refused = server.review("/validate", &request).await;
    assert_eq!(refused["allowed"], false);
}
