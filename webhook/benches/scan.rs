//! The scanner at cluster scale, in-process: 10,000 objects (pods in 200
//! namespaces, with a Deployment and a Job for every tenth, from the standard
//! request's pod) evaluated against the embedded default configuration as
//! `tollgate audit scan` does, on every core. Prints the time and the rate.
//!
//! Run: `cargo bench -p tollgate --bench scan`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use serde_json::{Value, json};
use tollgate::audit::report::{Outcome, Report};
use tollgate::audit::scan;
use tollgate::context::snapshot::Snapshot;
use tollgate::context::store::Incoming;
use tollgate::context::{Context, Kind, ledger};
use tollgate::policy::PolicySet;

const OBJECTS: usize = 10_000;

fn standard_pod() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/pod-gpu-create.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str::<Value>(&text).unwrap()["request"]["object"].take()
}

fn objects() -> Vec<Incoming> {
    let pod = standard_pod();
    (0..OBJECTS)
        .map(|i| {
            let mut object = pod.clone();
            object["metadata"]["name"] = json!(format!("worker-{i:05}"));
            object["metadata"]["namespace"] = json!(format!("team-{:03}", i % 200));
            if i % 7 == 0 {
                // Some violations: an unpinned image from an unknown registry.
                object["spec"]["containers"][0]["image"] = json!("docker.io/library/python:latest");
            }
            let (kind, value) = match i % 10 {
                3 => (
                    Kind::new("apps/v1", "Deployment"),
                    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": object["metadata"].clone(),
                        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}},
                                 "template": {"metadata": {"labels": {"app": "x"}}, "spec": object["spec"].clone()}}}),
                ),
                7 => (
                    Kind::new("batch/v1", "Job"),
                    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": object["metadata"].clone(),
                        "spec": {"template": {"spec": object["spec"].clone()}}}),
                ),
                _ => (Kind::new("v1", "Pod"), object),
            };
            Incoming { kind, value }
        })
        .collect()
}

fn main() {
    let objects = objects();
    let cache = tempfile::tempdir().unwrap();
    let engine = support::engine(cache.path());
    let config = tollgate::builtin::default_config().unwrap();
    let context = Arc::new(Context::new(
        Some(Box::new(Snapshot::new("bench".into(), objects.clone()))),
        Box::new(ledger::Local::default()),
    ));
    let set = PolicySet::load(&config, &engine, context);
    assert_eq!(set.failures().count(), 0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    for run in 1..=3 {
        let started = Instant::now();
        let scanned = scan::scan(&set, &objects, workers, &AtomicUsize::new(0));
        let elapsed = started.elapsed();
        let report = Report::new("bench".into(), Vec::new(), scanned);
        let fails = report.summary.total.get(Outcome::Fail);
        println!(
            "scan run {run}: {OBJECTS} objects against the default configuration ({} policies) on {workers} threads in {elapsed:.2?} ({:.0} objects/s); {fails} failing findings",
            config.policies.len(),
            OBJECTS as f64 / elapsed.as_secs_f64()
        );
    }
}
