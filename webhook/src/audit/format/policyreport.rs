//! `wgpolicyk8s.io/v1alpha2` PolicyReport (namespaced objects) and
//! ClusterPolicyReport (cluster-scoped ones): one report per object, so each
//! stays small, with the CRD's fields (`scope`, `results[]`, `summary`) so
//! Policy Reporter and `kubectl` read them.

use std::time::UNIX_EPOCH;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::report::{Object, Outcome, Report};

/// The label every report Tollgate writes carries, so that its own reports
/// can be found (and pruned) without touching others'.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollgate");

/// The report's name: `tollgate-<kind>-<name>`, lowercased, with any
/// character a Kubernetes name cannot hold (the `*` of a `generateName`
/// object) as `-`; shortened with a hash when it would pass the 253
/// characters of a name.
pub fn name(object: &Object) -> String {
    let full: String = format!("tollgate-{}-{}", object.kind, object.name)
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' | '.' => c,
            _ => '-',
        })
        .collect();
    let full = full.trim_end_matches(['-', '.']).to_owned();
    if full.len() <= 253 {
        return full;
    }
    let digest = hex::encode(&Sha256::digest(full.as_bytes())[..6]);
    format!("{}-{digest}", &full[..240])
}

/// One object's report as a Kubernetes object.
pub fn report(report: &Report, object: &Object) -> Value {
    let since = report
        .generated
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut summary = json!({"pass": 0, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    let results: Vec<Value> = object
        .findings
        .iter()
        .map(|finding| {
            let key = finding.result.as_str();
            summary[key] = json!(summary[key].as_u64().unwrap_or(0) + 1);
            let policy = report.policy(&finding.policy);
            let mut result = json!({
                "source": "tollgate",
                "policy": finding.policy,
                "rule": finding.policy,
                "result": key,
                "scored": true,
                "timestamp": {"seconds": since.as_secs(), "nanos": since.subsec_nanos()},
            });
            if let Some(message) = &finding.message {
                result["message"] = json!(message);
            } else if finding.result == Outcome::Pass {
                result["message"] = json!("the object complies");
            }
            if let Some(policy) = policy {
                result["severity"] = json!(policy.severity.as_str());
                result["category"] = json!(policy.category);
                if !policy.controls.is_empty() {
                    result["properties"] = json!({"controls": policy.controls.join(",")});
                }
            }
            result
        })
        .collect();
    let mut scope =
        json!({"apiVersion": object.api_version, "kind": object.kind, "name": object.name});
    let mut metadata = json!({"name": name(object), "labels": {MANAGED_BY.0: MANAGED_BY.1}});
    let kind = if object.namespace.is_empty() {
        "ClusterPolicyReport"
    } else {
        scope["namespace"] = json!(object.namespace);
        metadata["namespace"] = json!(object.namespace);
        "PolicyReport"
    };
    if let Some(uid) = &object.uid {
        scope["uid"] = json!(uid);
    }
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": kind,
        "metadata": metadata,
        "scope": scope,
        "summary": summary,
        "results": results,
    })
}

/// Every object's report, as multi-document YAML (documents that were not
/// objects have none: the other formats list them).
pub fn render(report_: &Report) -> String {
    let mut out = String::new();
    for object in report_.objects.iter().filter(|o| !o.api_version.is_empty()) {
        out.push_str("---\n");
        out.push_str(
            &serde_yaml::to_string(&report(report_, object)).expect("JSON values are YAML"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::Finding;
    use crate::audit::scan;
    use crate::context::snapshot::Unreadable;

    fn job(name: &str) -> Object {
        Object {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            namespace: "ml".into(),
            name: name.into(),
            uid: None,
            findings: vec![Finding {
                policy: "pod-security".into(),
                result: Outcome::Pass,
                message: None,
            }],
        }
    }

    #[test]
    fn report_names_are_kubernetes_names() {
        assert_eq!(name(&job("train-*")), "tollgate-job-train");
        assert_eq!(name(&job("Big_Run")), "tollgate-job-big-run");
        assert!(name(&job(&"x".repeat(300))).len() <= 253);
    }

    #[test]
    fn documents_that_are_not_objects_get_no_policy_report() {
        let unreadable = scan::unreadable(&Unreadable {
            file: "jobs.yaml".into(),
            document: Some(2),
            error: "not a Kubernetes object".into(),
        });
        let report = Report::new("test".into(), Vec::new(), vec![job("a"), unreadable]);
        let text = render(&report);
        assert_eq!(text.matches("kind: PolicyReport").count(), 1, "{text}");
        assert!(!text.contains("jobs.yaml"));
    }
}
