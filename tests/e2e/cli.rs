//! The command line: `tollgate run` offline, configuration errors, restart
//! with a warm module cache, and graceful shutdown.

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tollgate_e2e::{Server, binary, review, shared, workspace};

/// `tollgate SUBCOMMAND` (with the tests' module cache) and its arguments;
/// (success, stdout, stderr).
fn tollgate(subcommand: &str, args: &[&str]) -> (bool, String, String) {
    let _turn = tollgate_e2e::STARTUP.blocking_lock();
    let output = Command::new(binary())
        .arg(subcommand)
        .arg("--cache-dir")
        .arg(workspace().join("target/e2e-module-cache"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running tollgate {subcommand}: {e}"));
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// `tollgate run` with its arguments; (success, stdout, stderr).
pub(crate) fn run(args: &[&str]) -> (bool, String, String) {
    tollgate("run", args)
}

#[test]
fn the_examples_get_the_verdicts_their_readme_promises() {
    let example = |name: &str| workspace().join("examples").join(name);
    let (ok, stdout, stderr) = run(&[
        "--request",
        example("gpu-pod-create.json").to_str().unwrap(),
        "--request",
        example("gpu-pod-latest-image.json").to_str().unwrap(),
        "--request",
        example("gpu-pod-privileged.json").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let responses: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["response"].clone())
        .collect();
    assert_eq!(responses[0]["allowed"], true);
    assert!(responses[0].get("warnings").is_none());
    let patch = base64::engine::general_purpose::STANDARD
        .decode(responses[0]["patch"].as_str().unwrap())
        .unwrap();
    assert!(
        String::from_utf8(patch)
            .unwrap()
            .starts_with(r#"[{"op":"add","path":"/spec/affinity","value":{"podAffinity""#),
        "only the gang's topology hint is added"
    );
    assert_eq!(responses[1]["allowed"], false);
    assert!(
        responses[1]["status"]["message"]
            .as_str()
            .unwrap()
            .contains(":latest")
    );
    assert_eq!(responses[2]["allowed"], false);
    assert!(
        responses[2]["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with(
                r#"pod-security-baseline: violates PodSecurity "baseline:latest": privileged ("#
            ),
        "{}",
        responses[2]
    );
    // The example configuration loads: every policy in it is valid.
    let (ok, stdout, stderr) = run(&[
        "--config",
        example("config.yaml").to_str().unwrap(),
        "--request",
        example("gpu-pod-privileged.json").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(r#"violates PodSecurity \"restricted:v1.33\""#),
        "{stdout}"
    );
    // gpu-quota against the example cluster snapshot.
    let (ok, stdout, stderr) = run(&[
        "--config",
        example("quota/config.yaml").to_str().unwrap(),
        "--context",
        example("quota/cluster.yaml").to_str().unwrap(),
        "--request",
        example("gpu-pod-create.json").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        response["response"]["status"]["message"],
        "gpu-quota: team \"vision\" would use 12 nvidia.com/gpu on NVIDIA-H100-80GB-HBM3, limit 8: 4 in use by 1 pod in namespace ml-training; this pod asks 8 (quota scope \"teams\")"
    );
    // network-guard against its example snapshot: every rule named.
    let (ok, stdout, stderr) = run(&[
        "--config",
        example("network/config.yaml").to_str().unwrap(),
        "--context",
        example("network/cluster.yaml").to_str().unwrap(),
        "--request",
        example("network/open-ingress.json").to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let response: Value = serde_json::from_str(stdout.trim()).unwrap();
    let message = response["response"]["status"]["message"].as_str().unwrap();
    for field in [
        "spec.ingress[0].from[0].namespaceSelector is {}",
        "spec.egress[0].to[0].ipBlock.cidr 0.0.0.0/0 is outside the networks tenant pods may reach",
        "spec.egress[0].to[0].ipBlock 0.0.0.0/0 contains the cloud metadata service",
    ] {
        assert!(message.contains(field), "{message}");
    }
}

#[test]
fn run_evaluates_reviews_offline_as_mutate_then_validate() {
    let dir = tempfile::tempdir().unwrap();
    let bare = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "image": "nvcr.io/x:1"}]}});
    let latest = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "namespace": "ml"},
        "spec": {"containers": [{"name": "c", "image": "nvcr.io/x:latest"}]}});
    std::fs::write(
        dir.path().join("1-bare.json"),
        review("CREATE", &bare).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("2-latest.json"),
        review("CREATE", &latest).to_string(),
    )
    .unwrap();
    let standard = shared("bench/pod-gpu-create.json");
    let (ok, stdout, stderr) = run(&[
        "--request",
        dir.path().to_str().unwrap(),
        "--request",
        standard.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let first = &lines[0]["response"];
    assert_eq!(first["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(first["patch"].as_str().unwrap())
        .unwrap();
    let mut paths: Vec<String> = serde_json::from_slice::<Vec<Value>>(&patch)
        .unwrap()
        .iter()
        .map(|op| {
            format!(
                "{} {}",
                op["op"].as_str().unwrap(),
                op["path"].as_str().unwrap()
            )
        })
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        ["add /spec/affinity", "add /spec/containers/0/resources"],
        "resource defaults, and the node affinity of a CPU-only pod"
    );
    assert_eq!(lines[1]["response"]["allowed"], false);
    assert!(
        lines[1]["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("the tag latest is not allowed")
    );
    assert_eq!(lines[2]["response"]["allowed"], true);
}

#[test]
fn a_bad_configuration_is_refused_naming_file_policy_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "policies:\n  - name: regs\n    module: builtin:image-registries\n    failurePolicy: sometimes\n")
        .unwrap();
    let standard = shared("bench/pod-gpu-create.json");
    let (ok, _, stderr) = run(&[
        "--config",
        config.to_str().unwrap(),
        "--request",
        standard.to_str().unwrap(),
    ]);
    assert!(!ok);
    let expected = format!(
        "error: {}: policy \"regs\": failurePolicy: unknown variant `sometimes`",
        config.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}

#[test]
fn run_reports_a_file_that_is_not_a_review() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.json");
    std::fs::write(&path, "{\"apiVersion\":\"v1\"}").unwrap();
    let (ok, stdout, stderr) = run(&["--request", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.is_empty());
    assert!(stderr.contains("unsupported apiVersion \"v1\""), "{stderr}");
}

#[tokio::test]
async fn a_restart_reuses_the_certificate_and_the_compiled_modules() {
    let cache = workspace().join("target/e2e-module-cache");
    let mut first = Server::start_default().await;
    let artifacts = || {
        let mut names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = artifacts();
    let ca = std::fs::read(first.dir.path().join("certs/ca.crt")).unwrap();
    let port = first.url.rsplit(':').next().unwrap().to_owned();
    let dir = first.dir.path().to_owned();
    assert!(first.terminate().success());
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--cert-dir",
        ])
        .arg(dir.join("certs"))
        .arg("--cache-dir")
        .arg(&cache)
        .stderr(std::fs::File::create(dir.join("restart.log")).unwrap())
        .spawn()
        .unwrap();
    let client = tollgate_e2e::client(&dir.join("certs/ca.crt"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = client
            .get(format!("https://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && response.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "restart never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read(dir.join("certs/ca.crt")).unwrap(),
        ca,
        "the CA changed across restarts"
    );
    assert_eq!(
        artifacts(),
        before,
        "a restart with unchanged policies compiled something"
    );
    let log = std::fs::read_to_string(dir.join("restart.log")).unwrap();
    assert!(log.contains("reusing the self-made certificate"), "{log}");
    // Asked for a name the certificate lacks, the same CA issues a new one:
    // a client that trusts the CA it had reaches the server by that name.
    let name = "tollgate.tollgate-system.svc";
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--cert-dir",
        ])
        .arg(dir.join("certs"))
        .arg("--cache-dir")
        .arg(&cache)
        .args(["--tls-san", name])
        .stderr(std::fs::File::create(dir.join("renamed.log")).unwrap())
        .spawn()
        .unwrap();
    let by_name = tollgate_e2e::client_builder(&dir.join("certs/ca.crt"))
        .resolve(name, format!("127.0.0.1:{port}").parse().unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = by_name
            .get(format!("https://{name}:{port}/healthz"))
            .send()
            .await
            && response.status() == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never served {name}: {}",
            std::fs::read_to_string(dir.join("renamed.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(std::fs::read(dir.join("certs/ca.crt")).unwrap(), ca);
    let log = std::fs::read_to_string(dir.join("renamed.log")).unwrap();
    assert!(
        log.contains("issued a new self-made certificate with the same CA (the serving certificate does not name tollgate.tollgate-system.svc)"),
        "{log}"
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let mut server = Server::start_default().await;
    assert_eq!(
        server
            .review(
                "/validate",
                &review(
                    "CREATE",
                    &json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c"}})
                )
            )
            .await["allowed"],
        true
    );
    let status = server.terminate();
    assert!(status.success(), "{status}");
    assert!(
        server
            .log()
            .contains("shutting down: draining in-flight requests")
    );
}

/// `tollgate test` with its arguments; (success, stdout, stderr).
pub(crate) fn test_command(args: &[&str]) -> (bool, String, String) {
    tollgate("test", args)
}

#[test]
fn every_builtin_policy_passes_its_own_suite() {
    let policies = workspace().join("policies");
    let (ok, stdout, stderr) = test_command(&[policies.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    for name in std::fs::read_dir(&policies).unwrap() {
        let suite = name.unwrap().path().join("tollgate-test.yaml");
        assert!(suite.is_file(), "{} has no suite", suite.display());
    }
    let summary = stdout.lines().last().unwrap();
    assert!(summary.ends_with(", 0 failed (8 suites)"), "{stdout}");
    println!("tollgate test policies/: {summary}");
}

#[test]
fn a_failing_case_fails_the_command_and_the_junit_report_says_why() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tollgate-test.yaml"),
        r#"
policy:
  module: builtin:image-registries
  settings: {allowedRegistries: [nvcr.io/]}
cases:
  - name: passes
    object: {apiVersion: v1, kind: Pod, metadata: {name: a}, spec: {containers: [{name: c, image: "nvcr.io/x:1"}]}}
    expect: {allowed: true}
  - name: expects the wrong verdict
    object: {apiVersion: v1, kind: Pod, metadata: {name: b}, spec: {containers: [{name: c, image: "quay.io/x:1"}]}}
    expect: {allowed: true}
"#,
    )
    .unwrap();
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("tollgate-test.yaml"),
        "policy: {module: builtin:nope}\ncases: []\n",
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let (ok, stdout, stderr) = test_command(&[
        dir.path().to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("2 case(s) failed"), "{stderr}");
    assert!(stdout.contains("  ok    passes"), "{stdout}");
    assert!(
        stdout.contains("  FAIL  expects the wrong verdict: expected it allowed, but it was denied: image-registries: container \"c\" uses image \"quay.io/x:1\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("  FAIL  (suite): ") && stdout.contains("no built-in policy \"nope\""),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("1 passed, 2 failed (2 suites)\n"),
        "{stdout}"
    );
    let report = std::fs::read_to_string(junit).unwrap();
    assert!(
        report.contains(r#"<testsuites name="tollgate test" tests="3" failures="2">"#),
        "{report}"
    );
    assert!(
        report.contains(
            r#"<testcase name="expects the wrong verdict" classname="image-registries">"#
        )
    );
    assert!(report.contains("<failure message=\"expected it allowed, but it was denied"));
}

#[test]
fn bench_measures_saves_and_fails_a_comparison_past_the_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("before.json");
    let bench = |extra: &[&str]| {
        let request = workspace().join("examples/gpu-pod-create.json");
        let mut args = vec![
            "--policy",
            "builtin:image-registries",
            "--settings",
            r#"{"allowedRegistries":["nvcr.io/"]}"#,
            "--request",
            request.to_str().unwrap(),
            "--warmup",
            "10",
            "--samples",
            "100",
        ];
        args.extend_from_slice(extra);
        let _turn = tollgate_e2e::STARTUP.blocking_lock();
        let output = Command::new(binary())
            .arg("bench")
            .arg("--cache-dir")
            .arg(workspace().join("target/e2e-module-cache"))
            .args(&args)
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (ok, stdout, stderr) = bench(&["--save", saved.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("100 samples after 10 warm-up"), "{stdout}");
    assert!(
        stdout.contains("per evaluation (decode, policy in a fresh instance, encode): p50 "),
        "{stdout}"
    );
    assert!(stdout.contains("making a fresh instance"), "{stdout}");
    let figures: Value = serde_json::from_str(&std::fs::read_to_string(&saved).unwrap()).unwrap();
    assert!(figures["p50_us"].as_f64().unwrap() > 0.0 && figures["samples"] == 100);

    // Against itself, with room to spare: passes and prints the change.
    let (ok, stdout, stderr) =
        bench(&["--compare", saved.to_str().unwrap(), "--threshold", "1000"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("against {}: p50 ", saved.display())),
        "{stdout}"
    );
    // Against figures no machine reaches: fails, saying by how much.
    let mut impossible = figures.clone();
    impossible["p50_us"] = json!(0.001);
    std::fs::write(&saved, impossible.to_string()).unwrap();
    let (ok, _, stderr) = bench(&["--compare", saved.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("p50 per evaluation regressed by")
            && stderr.contains("more than the threshold of 10 %"),
        "{stderr}"
    );
}
