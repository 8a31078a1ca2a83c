//! Kubewarden policies unchanged (`module: kubewarden:PATH`): two policies
//! written with Kubewarden's own SDK from crates.io and built for
//! `wasm32-wasip1` as its template builds them (`tests/kubewarden-policies/`),
//! through `tollgate test` (their suites, read in place) and `tollgate serve`
//! over HTTPS.

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, review, test_policy, workspace};

fn pod(namespace: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "train", "namespace": namespace, "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "nvcr.io/nvidia/pytorch:24.05-py3"}]}})
}

#[test]
fn the_kubewarden_policies_pass_their_suites() {
    let suites = workspace().join("tests/kubewarden-policies");
    let (ok, stdout, stderr) = crate::cli::test_command(&[suites.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("7 passed, 0 failed (2 suites)\n"),
        "{stdout}"
    );
}

#[tokio::test]
async fn kubewarden_policies_validate_and_mutate_over_https() {
    let config = format!(
        r#"policies:
  - name: default-labels
    module: kubewarden:{default_labels}
    mutating: true
    match: {{kinds: [Pod]}}
    settings: {{labels: {{tier: batch}}}}
  - name: require-labels
    module: kubewarden:{require_labels}
    match: {{kinds: [Pod]}}
    settings: {{requiredLabels: [team, tier]}}
"#,
        default_labels = test_policy("kw-default-labels").display(),
        require_labels = test_policy("kw-require-labels").display(),
    );
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    // The mutating policy adds `tier`; the validating one then sees it.
    let response = server
        .review(
            "/mutate",
            &review("CREATE", &pod("ml", json!({"team": "a"}))),
        )
        .await;
    assert_eq!(response["allowed"], true, "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/labels/tier", "value": "batch"}])
    );
    let response = server
        .review(
            "/validate",
            &review("CREATE", &pod("ml", json!({"tier": "gpu"}))),
        )
        .await;
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        "require-labels: missing required labels: team"
    );
    assert_eq!(
        response["warnings"],
        json!(["require-labels: labels are required by kw-require-labels"])
    );
    let (status, ready) = server.get("/readyz?verbose").await;
    assert_eq!(status, 200, "{ready}");
}
