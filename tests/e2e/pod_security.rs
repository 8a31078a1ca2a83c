//! `pod-security` against Kubernetes' own Pod Security Admission fixtures
//! (`../shared/conformance/psa/`), over HTTPS through the built Wasm module,
//! and in the default configuration (enforce baseline, warn restricted).

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, review, shared, standard_request};

/// One fixture of `cases.tsv`.
struct Case {
    file: String,
    level: String,
    version: String,
    pass: bool,
    check: String,
}

fn cases() -> Vec<Case> {
    let manifest = std::fs::read_to_string(shared("conformance/psa/cases.tsv"))
        .expect("reading ../shared/conformance/psa/cases.tsv");
    let mut lines = manifest.lines();
    assert_eq!(
        lines.next(),
        Some("file\tlevel\tversion\texpected\tcheck_id\tindex")
    );
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            Case {
                file: fields[0].to_owned(),
                level: fields[1].to_owned(),
                version: fields[2].to_owned(),
                pass: match fields[3] {
                    "pass" => true,
                    "fail" => false,
                    other => panic!("{}: expected {other:?}", fields[0]),
                },
                check: fields[4].to_owned(),
            }
        })
        .collect()
}

/// The namespace that the configuration below maps to a level and version.
fn namespace(level: &str, version: &str) -> String {
    format!("{level}-{}", version.replace('.', "-"))
}

/// What a denial must contain to name the fixture's check: PSA's own
/// `expectErrorSubstring` per fixture generator (the check ID by default).
fn expected_substring(check: &str) -> &str {
    match check {
        "appArmorProfile" => "forbidden AppArmor profile",
        "capabilities_baseline" => "capabilities",
        "capabilities_restricted" => "unrestricted capabilities",
        "hostNamespaces" => "host namespaces",
        "hostPathVolumes" => "hostPath",
        "hostPorts" => "hostPort",
        "hostProbesAndHostLifecycle" => "probe or lifecycle host",
        "procMount" | "procMount_restricted" => "procMount",
        "restrictedVolumes" => "restricted volume types",
        "seccompProfile_baseline" | "seccompProfile_restricted" => "seccompProfile",
        "sysctls" => "forbidden sysctl",
        "windowsHostProcess" => "hostProcess",
        other => other,
    }
}

/// The fixture as a Pod, and wrapped in a Deployment's pod template (as
/// PSA's own test run does), both in the namespace of its level and version.
fn objects(case: &Case) -> [Value; 2] {
    let path = shared(&format!("conformance/psa/{}", case.file));
    let text = std::fs::read_to_string(&path).expect("reading a fixture");
    let mut pod: Value = serde_yaml::from_str(&text).expect("fixture is YAML");
    let namespace = namespace(&case.level, &case.version);
    pod["metadata"]["namespace"] = json!(namespace);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": pod["metadata"]["name"], "namespace": namespace},
        "spec": {"selector": {"matchLabels": {"test": "true"}}, "template": {
            "metadata": {"labels": {"test": "true"}, "annotations": pod["metadata"]["annotations"]},
            "spec": pod["spec"],
        }},
    });
    [pod, deployment]
}

/// Every fixture, as a Pod and as a Deployment in the namespace of its
/// level and version, through `server`: how many evaluations, and those
/// that disagree with PSA.
async fn conform(server: Arc<Server>, cases: Arc<Vec<Case>>) -> (usize, Vec<String>) {
    let workers = 8;
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (server, cases) = (server.clone(), cases.clone());
        tasks.push(tokio::spawn(async move {
            let mut evaluated = 0usize;
            let mut disagreements = Vec::new();
            for case in cases.iter().skip(worker).step_by(workers) {
                for object in objects(case) {
                    let response = server.review("/validate", &review("CREATE", &object)).await;
                    evaluated += 1;
                    let message = response["status"]["message"].as_str().unwrap_or("");
                    let agrees = match (case.pass, response["allowed"].as_bool()) {
                        (true, Some(true)) => true,
                        (false, Some(false)) => message.contains(expected_substring(&case.check)),
                        _ => false,
                    };
                    if !agrees {
                        disagreements.push(format!(
                            "{} as {}: expected {}, got {response}",
                            case.file,
                            object["kind"],
                            if case.pass { "pass" } else { "fail" }
                        ));
                    }
                }
            }
            (evaluated, disagreements)
        }));
    }
    let mut evaluated = 0;
    let mut disagreements = Vec::new();
    for task in tasks {
        let (count, wrong) = task.await.expect("worker");
        evaluated += count;
        disagreements.extend(wrong);
    }
    (evaluated, disagreements)
}

fn assert_agrees(
    how: &str,
    cases: usize,
    levels: usize,
    (evaluated, disagreements): (usize, Vec<String>),
) {
    assert!(
        disagreements.is_empty(),
        "{how}: {} of {evaluated} evaluations disagree with PSA, e.g.:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(20)].join("\n")
    );
    println!(
        "pod-security conformance ({how}): {evaluated} evaluations ({cases} fixtures × Pod and Deployment, {levels} level/version pairs) agree with PSA"
    );
    assert_eq!(evaluated, 9_074, "the fixture set changed");
}

fn level_pairs(cases: &[Case]) -> BTreeSet<(String, String)> {
    cases
        .iter()
        .map(|c| (c.level.clone(), c.version.clone()))
        .collect()
}

#[tokio::test]
async fn every_psa_fixture_agrees_as_a_pod_and_as_a_deployment() {
    let cases = cases();
    let levels = level_pairs(&cases);
    let mut config = String::from(
        "policies:\n  - name: psa\n    module: builtin:pod-security\n    match: {apiGroups: [\"\", apps], kinds: [Pod, Deployment]}\n    settings:\n      level: privileged\n      namespaceOverrides:\n",
    );
    for (level, version) in &levels {
        config.push_str(&format!(
            "        {}: {{level: {level}, version: {version}}}\n",
            namespace(level, version)
        ));
    }
    let server = Arc::new(
        Server::start(Options {
            config: Some(&config),
            ..Options::default()
        })
        .await,
    );
    let count = cases.len();
    let result = conform(server, Arc::new(cases)).await;
    assert_agrees("settings", count, levels.len(), result);
}

#[tokio::test]
async fn every_psa_fixture_agrees_when_levels_come_from_namespace_labels() {
    let cases = cases();
    let levels = level_pairs(&cases);
    // The namespaces, labelled as PSA reads them, as the cluster context.
    let namespaces: Vec<Value> = levels
        .iter()
        .map(|(level, version)| {
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": namespace(level, version),
            "labels": {
                "pod-security.kubernetes.io/enforce": level,
                "pod-security.kubernetes.io/enforce-version": version,
            }}})
        })
        .collect();
    let scratch = tempfile::tempdir().unwrap();
    let snapshot = scratch.path().join("namespaces.json");
    std::fs::write(
        &snapshot,
        serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": namespaces}))
            .unwrap(),
    )
    .unwrap();
    let config = "policies:\n  - name: psa\n    module: builtin:pod-security\n    context: [{apiVersion: v1, kind: Namespace}]\n    match: {apiGroups: [\"\", apps], kinds: [Pod, Deployment]}\n    settings: {level: privileged, namespaceLabels: true}\n";
    let server = Arc::new(
        Server::start(Options {
            config: Some(config),
            args: &["--context", snapshot.to_str().unwrap()],
            ..Options::default()
        })
        .await,
    );
    let count = cases.len();
    let result = conform(server, Arc::new(cases)).await;
    assert_agrees("namespace labels", count, levels.len(), result);
}

#[tokio::test]
async fn default_configuration_enforces_baseline_and_warns_restricted() {
    let server = Server::start_default().await;

    let mut privileged = standard_request();
    privileged["request"]["object"]["spec"]["containers"][1]["securityContext"]["privileged"] =
        json!(true);
    let response = server.review("/validate", &privileged).await;
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(
        response["status"]["message"],
        r#"pod-security-baseline: violates PodSecurity "baseline:latest": privileged (container "dcgm-exporter" must not set securityContext.privileged=true)"#
    );

    // Baseline but not restricted: admitted, with PSA's restricted findings as
    // a warning.
    let mut escalating = standard_request();
    escalating["request"]["object"]["spec"]["containers"][0]["securityContext"]
        .as_object_mut()
        .unwrap()
        .remove("allowPrivilegeEscalation");
    let response = server.review("/validate", &escalating).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        response["warnings"],
        json!([
            r#"pod-security-restricted: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "trainer" must set securityContext.allowPrivilegeEscalation=false)"#
        ])
    );

    // Unlike PSA, pod templates are enforced too.
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "agent", "namespace": "ml"},
        "spec": {"template": {"spec": {"hostPID": true, "containers": [{"name": "a", "image": "nvcr.io/a:1"}]}}}});
    let response = server
        .review("/validate", &review("CREATE", &deployment))
        .await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with(r#"pod-security-baseline: violates PodSecurity "baseline:latest": host namespaces (hostPID=true)"#),
        "{response}"
    );
}
