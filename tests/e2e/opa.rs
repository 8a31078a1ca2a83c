//! OPA Wasm modules and bundles (`module: opa:PATH`) through `tollgate run`,
//! `tollgate test` and `tollgate serve` over HTTPS. No `opa` binary can be
//! had here, so the module is `opa-sample` (`tests/opa-modules/`), written
//! to OPA's Wasm ABI as `opa build -t wasm` output is; the bundle is packed
//! with `tar` as `opa build` packs one.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, review, test_policy};

fn pod(name: &str, namespace: &str, privileged: bool, image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "main", "image": image,
            "securityContext": {"privileged": privileged}}]}})
}

const ALLOWED_IMAGE: &str = "registry.example.com/team/train:1";

/// A folder with the module, a bundle of it with data, and a configuration
/// using both.
fn setup(dir: &Path) -> String {
    let module = dir.join("policy.wasm");
    std::fs::copy(test_policy("opa-sample"), &module).unwrap();
    std::fs::write(
        dir.join("data.json"),
        r#"{"deny": ["namespace blocked by the bundle's data"]}"#,
    )
    .unwrap();
    let status = Command::new("tar")
        .arg("czf")
        .arg(dir.join("bundle.tar.gz"))
        .arg("-C")
        .arg(dir)
        .args(["policy.wasm", "data.json"])
        .status()
        .unwrap();
    assert!(status.success());
    format!(
        r#"policies:
  - name: privileged
    module: opa:{dir}/policy.wasm
    match: {{kinds: [Pod], namespaces: [ml]}}
    settings:
      entrypoint: k8sprivileged/violation
      inputShape: gatekeeper
      parameters: {{}}
  - name: registries
    module: opa:{dir}/policy.wasm
    match: {{kinds: [Pod], namespaces: [ml]}}
    settings: {{entrypoint: data.admission.deny}}
  - name: blocked
    module: opa:{dir}/bundle.tar.gz
    match: {{kinds: [Pod], namespaces: [blocked]}}
    settings: {{entrypoint: tollgate/data}}
"#,
        dir = dir.display()
    )
}

#[test]
fn an_opa_module_judges_requests_through_tollgate_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, setup(dir.path())).unwrap();
    let request = dir.path().join("request.json");
    let privileged = review("CREATE", &pod("p", "ml", true, ALLOWED_IMAGE));
    std::fs::write(&request, privileged.to_string()).unwrap();
    let (_, stdout, stderr) = crate::cli::run(&[
        "--config",
        config.to_str().unwrap(),
        "--request",
        request.to_str().unwrap(),
    ]);
    assert!(!stderr.contains("failed to load"), "{stderr}");
    let response: Value = serde_json::from_str(&stdout).unwrap();
    let response = &response["response"];
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(
        response["status"]["message"],
        r#"privileged: Privileged container is not allowed: main, securityContext: {"privileged": true}"#
    );
}

#[tokio::test]
async fn opa_modules_and_bundles_serve_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    let validate = |object: Value| {
        let server = &server;
        async move { server.review("/validate", &review("CREATE", &object)).await }
    };
    let response = validate(pod("ok", "ml", false, ALLOWED_IMAGE)).await;
    assert_eq!(response["allowed"], true, "{response}");
    let response = validate(pod("p", "ml", true, "docker.io/nginx")).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(r#"privileged: Privileged container is not allowed: main, securityContext: {"privileged": true}"#),
        "{message}"
    );
    assert!(
        message.contains("registries: container main uses image docker.io/nginx from outside registry.example.com"),
        "{message}"
    );
    let response = validate(pod("b", "blocked", false, ALLOWED_IMAGE)).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "blocked: namespace blocked by the bundle's data"
    );
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
}

#[test]
fn a_suite_runs_an_opa_module() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    std::fs::write(
        dir.path().join("tollgate-test.yaml"),
        format!(
            r#"
policy:
  module: opa:policy.wasm
  settings: {{entrypoint: admission/deny}}
cases:
  - name: an image from the registry passes
    object: {object_ok}
    expect: {{allowed: true}}
  - name: an image from elsewhere is refused
    object: {object_bad}
    expect: {{allowed: false, message: "uses image docker.io/nginx from outside registry.example.com"}}
"#,
            object_ok = pod("a", "ml", false, ALLOWED_IMAGE),
            object_bad = pod("b", "ml", false, "docker.io/nginx"),
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = crate::cli::test_command(&[dir.path().to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("2 passed, 0 failed (1 suites)\n"),
        "{stdout}"
    );
}
