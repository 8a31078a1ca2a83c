//! Gatekeeper's own library, as it is: every case of
//! `../shared/conformance/gatekeeper/cases.tsv` (an object, a constraint,
//! the template's expected verdict) through `tollgate run` and through
//! `tollgate serve` over HTTPS, with the templates' own messages.
//!
//! Each constraint becomes one `builtin:gatekeeper` policy of one
//! configuration, matched (by Tollgate's own `match`) to a namespace of its
//! own, in which its cases are sent: no case is judged by another
//! constraint. The library's templates read no namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, binary, shared, workspace};

/// One row of `cases.tsv`.
struct Case {
    object: PathBuf,
    template: String,
    constraint: PathBuf,
    allowed: bool,
    /// The request's namespace: its constraint's.
    namespace: String,
}

/// Every case, and the configuration that holds one policy per constraint.
fn cases() -> (Vec<Case>, String) {
    let root = shared("conformance/gatekeeper");
    let table = std::fs::read_to_string(root.join("cases.tsv")).unwrap();
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, template, expected, constraint) = (
        column("file"),
        column("template"),
        column("expected"),
        column("constraint"),
    );
    let mut namespaces: BTreeMap<String, String> = BTreeMap::new();
    let mut cases = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let count = namespaces.len();
        let namespace = namespaces
            .entry(fields[constraint].to_owned())
            .or_insert_with(|| format!("gk-{count:02}"))
            .clone();
        cases.push(Case {
            object: root.join(fields[file]),
            template: fields[template].to_owned(),
            constraint: root.join(fields[constraint]),
            allowed: fields[expected] == "allow",
            namespace,
        });
    }
    let mut config = String::from("policies:\n");
    let mut seen = std::collections::BTreeSet::new();
    for case in &cases {
        if !seen.insert(&case.namespace) {
            continue;
        }
        let template = root
            .join("library")
            .join(&case.template)
            .join("template.yaml");
        // The verdicts are under test, not the deadline: 32 policies load at
        // once here, on two cores the other tests share.
        config.push_str(&format!(
            "  - name: {namespace}\n    module: builtin:gatekeeper\n    timeoutMs: 2000\n    match: {{namespaces: [{namespace}]}}\n    settings:\n      template: {}\n      constraints: [{}]\n",
            template.display(),
            case.constraint.display(),
            namespace = case.namespace,
        ));
    }
    (cases, config)
}

/// The AdmissionReview of a case: its object in a CREATE, or the review
/// the file holds (UPDATE cases), in the constraint's namespace.
fn review(case: &Case, uid: usize) -> Value {
    let document: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&case.object).unwrap()).unwrap();
    let mut request = if document["kind"] == "AdmissionReview" {
        document["request"].clone()
    } else {
        json!({"operation": "CREATE", "object": document})
    };
    let object = if request["object"].is_null() {
        request["oldObject"].clone()
    } else {
        request["object"].clone()
    };
    let name = object["metadata"]["name"].clone();
    request["uid"] = json!(format!("case-{uid:03}"));
    request["kind"] = json!({"group": "", "version": "v1", "kind": object["kind"]});
    request["name"] = name;
    request["namespace"] = json!(case.namespace);
    if request["userInfo"].is_null() {
        request["userInfo"] = json!({"username": "gator", "groups": ["system:authenticated"]});
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Checks one response against its case; returns what disagrees.
fn disagreement(case: &Case, response: &Value) -> Option<String> {
    let allowed = response["allowed"] == true;
    let message = response["status"]["message"].as_str().unwrap_or_default();
    let constraint = case.constraint.parent().unwrap().file_name().unwrap();
    // `gk-07: [psp-privileged-container] Privileged container is not allowed: …`
    let denial_names_it = message.starts_with(&format!("{}: [", case.namespace));
    if allowed != case.allowed || (!allowed && !denial_names_it) {
        return Some(format!(
            "{} under {constraint:?}: expected {}, got {response}",
            case.object.display(),
            if case.allowed { "allow" } else { "deny" }
        ));
    }
    None
}

fn write_config(dir: &Path, config: &str) -> PathBuf {
    let path = dir.join("gatekeeper.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn every_library_case_agrees_through_tollgate_run() {
    let (cases, config) = cases();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &config);
    let requests = dir.path().join("requests");
    std::fs::create_dir(&requests).unwrap();
    for (i, case) in cases.iter().enumerate() {
        std::fs::write(
            requests.join(format!("{i:03}.json")),
            review(case, i).to_string(),
        )
        .unwrap();
    }
    let output = {
        let _turn = tollgate_e2e::STARTUP.blocking_lock();
        Command::new(binary())
            .arg("run")
            .arg("--cache-dir")
            .arg(workspace().join("target/e2e-module-cache"))
            .arg("--config")
            .arg(&config)
            .arg("--request")
            .arg(&requests)
            .output()
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("failed to load"), "{stderr}");
    let responses: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap()["response"].clone())
        .collect();
    assert_eq!(responses.len(), cases.len());
    let wrong: Vec<String> = cases
        .iter()
        .zip(&responses)
        .filter_map(|(case, response)| disagreement(case, response))
        .collect();
    println!(
        "gatekeeper (tollgate run): {}/{} library cases agree",
        cases.len() - wrong.len(),
        cases.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test]
async fn every_library_case_agrees_through_tollgate_serve() {
    let (cases, config) = cases();
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let response = server.review("/validate", &review(case, i)).await;
        wrong.extend(disagreement(case, &response));
    }
    println!(
        "gatekeeper (tollgate serve): {}/{} library cases agree",
        cases.len() - wrong.len(),
        cases.len()
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
