//! The scanner: evaluates existing objects against the configured policies
//! as the webhook would for a CREATE, with no side effects: requests are dry
//! runs (no quota is reserved) and nothing is written to the decision log.
//! Work is spread over threads; a counter reports progress.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

use super::report::{Finding, Object, Outcome};
use crate::context::snapshot::Unreadable;
use crate::context::store::Incoming;
use crate::policy::chain::Result as Verdict;
use crate::policy::config::Mode;
use crate::policy::{self, PolicySet, Request};

/// Kinds without a namespace; a manifest of any other kind that names none
/// lands in `default`, as `kubectl apply` would put it.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "APIService",
    "DeviceClass",
    "ClusterPolicyReport",
];

/// The user scans are made as (visible to policies that look).
pub const SCAN_USER: &str = "system:serviceaccount:tollgate:audit-scanner";

/// Evaluates every object on `workers` threads; `done` counts finished
/// objects as they finish. Results come back in input order.
pub fn scan(
    set: &PolicySet,
    objects: &[Incoming],
    workers: usize,
    done: &AtomicUsize,
) -> Vec<Object> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Object)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(object) = objects.get(i) else {
                            return mine;
                        };
                        mine.push((i, evaluate(set, object, i)));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a scan worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, o)| o).collect()
}

/// One object, as a dry-run CREATE. An object written for `kubectl create`
/// with `generateName` and no name is evaluated as the apiserver would send
/// it (no name yet) and named `<generateName>*` in the report.
fn evaluate(set: &PolicySet, incoming: &Incoming, index: usize) -> Object {
    let value = &incoming.value;
    let metadata = &value["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let kind = &incoming.kind;
    let name = text(&metadata["name"]);
    let reported = if name.is_empty() {
        format!("{}*", text(&metadata["generateName"]))
    } else {
        name.clone()
    };
    let mut namespace = text(&metadata["namespace"]);
    if namespace.is_empty() && !CLUSTER_SCOPED.contains(&kind.kind.as_str()) {
        // Where `kubectl apply` would put it.
        namespace = "default".into();
    }
    let version = kind.api_version.rsplit('/').next().unwrap_or_default();
    let text = json!({
        "uid": format!("audit-scan-{index}"),
        "kind": {"group": kind.group(), "version": version, "kind": kind.kind},
        "namespace": namespace,
        "name": name,
        "operation": "CREATE",
        "userInfo": {"username": SCAN_USER},
        "dryRun": true,
        "object": value,
    })
    .to_string();
    let findings = match Request::parse(&text) {
        Ok(request) => findings(&futures::executor::block_on(
            set.review(&request, crate::policy::chain::no_deadline()),
        )),
        Err(error) => vec![Finding {
            policy: "(decode)".into(),
            result: Outcome::Error,
            message: Some(error.to_string()),
        }],
    };
    Object {
        api_version: kind.api_version.clone(),
        kind: kind.kind.clone(),
        namespace,
        name: reported,
        uid: metadata["uid"].as_str().map(str::to_owned),
        findings,
    }
}

/// A document that could not be read, as a report entry: an error the scan
/// reports and goes past.
pub fn unreadable(document: &Unreadable) -> Object {
    let name = match document.document {
        Some(index) => format!("{} (document {index})", document.file.display()),
        None => document.file.display().to_string(),
    };
    Object {
        api_version: String::new(),
        kind: UNREADABLE.into(),
        namespace: String::new(),
        name,
        uid: None,
        findings: vec![Finding {
            policy: "(read)".into(),
            result: Outcome::Error,
            message: Some(document.error.clone()),
        }],
    }
}

/// The kind reports give a document that is not an object.
pub const UNREADABLE: &str = "UnreadableDocument";

/// Each evaluation as a finding.
fn findings(outcome: &policy::Outcome) -> Vec<Finding> {
    outcome
        .evaluations
        .iter()
        .map(|e| Finding {
            policy: e.policy.to_string(),
            result: match (e.result, e.mode) {
                (Verdict::Allowed | Verdict::Mutated, _) => Outcome::Pass,
                (Verdict::Denied, Mode::Warn) => Outcome::Warn,
                (Verdict::Denied, _) => Outcome::Fail,
                (Verdict::Failed, _) => Outcome::Error,
            },
            message: e.message.clone(),
        })
        .collect()
}
