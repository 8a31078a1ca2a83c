//! `gpu-quota` at cluster scale, in-process: a snapshot of 10,000 pods in
//! 200 namespaces (20 teams of 10), the standard request
//! (`../shared/bench/pod-gpu-create.json`, 8 H100s in `ml-training`) decoded,
//! matched and evaluated through the engine with its index lookups and the
//! ledger's check-and-reserve, then encoded.
//!
//! Prints the cache's bytes per pod and a latency distribution over 5,000
//! admissions (p50, p99), then criterion's figures.
//!
//! Run: `cargo bench -p tollgate --bench quota`.

mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use serde_json::{Value, json};
use support::{at, deadline, sorted_times, standard_request};
use tollgate::context::snapshot::Snapshot;
use tollgate::context::{Context, Kind, ledger};
use tollgate::policy::{Config, PolicySet};
use tollgate::server::review;

const NAMESPACES: usize = 200;
const PODS: usize = 10_000;
const TEAM_SIZE: usize = 10;

const CONFIG: &str = r#"
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    match: {kinds: [Pod], operations: [CREATE]}
    context: [{apiVersion: v1, kind: Pod}, {apiVersion: v1, kind: Namespace}]
    settings:
      requireLimitsEqualRequests: true
      scopes:
        - name: teams
          namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
          aggregate: team
          limits: {nvidia.com/gpu: 100000, nvidia.com/mig-1g.10gb: 100000}
          perProduct: {NVIDIA-H100-80GB-HBM3: {nvidia.com/gpu: 100000}}
        - name: per-namespace
          namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
          limits: {nvidia.com/gpu: 100000}
          maxPerPod: {nvidia.com/gpu: 8}
"#;

fn namespace_name(i: usize) -> String {
    if i == 0 {
        "ml-training".into()
    } else {
        format!("ns-{i:03}")
    }
}

/// A pod as the apiserver serves it: metadata with owner and labels, two
/// containers, status with conditions and container statuses.
fn pod(i: usize) -> Value {
    let namespace = namespace_name(i % NAMESPACES);
    let product = ["NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB"][i % 2];
    let gpus = [1, 2, 4, 8][i % 4];
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("train-{i:05}-worker-0"), "namespace": namespace,
            "uid": format!("00000000-0000-0000-0000-{i:012}"), "resourceVersion": format!("{}", 100000 + i),
            "creationTimestamp": "2026-11-20T10:00:00Z",
            "labels": {"app": "train", "job-name": format!("train-{i:05}"), "kueue.x-k8s.io/queue-name": "gpu"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": format!("train-{i:05}"),
                "uid": format!("10000000-0000-0000-0000-{i:012}"), "controller": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {}}}}]},
        "spec": {"nodeSelector": {"nvidia.com/gpu.product": product},
            "containers": [
                {"name": "pytorch", "image": "nvcr.io/nvidia/pytorch:24.05-py3", "command": ["torchrun", "train.py"],
                 "resources": {"requests": {"cpu": "16", "memory": "128Gi", "nvidia.com/gpu": gpus.to_string()},
                               "limits": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": gpus.to_string()}},
                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                {"name": "metrics", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.5",
                 "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeName": format!("gpu-node-{:03}", i % 500), "schedulerName": "default-scheduler"},
        "status": {"phase": if i.is_multiple_of(10) { "Succeeded" } else { "Running" },
            "podIP": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-20T10:01:00Z"},
                           {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-20T10:00:01Z"}],
            "containerStatuses": [{"name": "pytorch", "ready": true, "restartCount": 0,
                "image": "nvcr.io/nvidia/pytorch:24.05-py3", "containerID": format!("containerd://{i:064}")}]}})
}

fn snapshot(dir: &std::path::Path) {
    let namespaces: Vec<Value> = (0..NAMESPACES)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": namespace_name(i), "labels": {"team": format!("team-{:02}", i / TEAM_SIZE)}}}))
        .collect();
    let pods: Vec<Value> = (0..PODS).map(pod).collect();
    let list =
        |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    std::fs::write(dir.join("namespaces.json"), list(namespaces)).unwrap();
    std::fs::write(dir.join("pods.json"), list(pods)).unwrap();
}

fn admit(set: &PolicySet, body: &[u8]) -> Vec<u8> {
    let request = review::decode(body).unwrap();
    let outcome = block_on(set.validate(&request, deadline()));
    assert!(outcome.allowed, "{:?}", outcome.message);
    review::encode(&request.uid, &outcome)
}

fn quota(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    snapshot(dir.path());
    let cache = tempfile::tempdir().unwrap();
    let engine = support::engine(cache.path());
    let provider = Snapshot::load(&[dir.path().to_owned()]).unwrap();
    let context = Arc::new(Context::new(
        Some(Box::new(provider)),
        Box::new(ledger::Local::default()),
    ));
    let config = Config::parse(CONFIG, "bench", PathBuf::new()).unwrap();
    let started = Instant::now();
    let set = PolicySet::load(&config, &engine, context.clone());
    assert_eq!(set.failures().count(), 0);
    let loaded = started.elapsed();
    let store = context.store();
    let pods = Kind::new("v1", "Pod");
    println!(
        "quota: loaded and indexed {} objects in {loaded:.1?}; cache holds {} bytes per pod (objects stripped of managedFields, with labels and index entries)",
        store.len(),
        store.bytes(&pods) / PODS
    );

    let body = standard_request();
    let times = sorted_times(5_000, || drop(black_box(admit(&set, &body))));
    println!(
        "quota: 5,000 admissions of the standard request against 10,000 pods: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        at(&times, 0.50),
        at(&times, 0.99),
        at(&times, 1.0)
    );

    let mut group = c.benchmark_group("quota");
    group.bench_function(
        "gpu-quota, standard request, 10,000 pods in 200 namespaces",
        |b| b.iter(|| black_box(admit(&set, &body))),
    );
    group.finish();
}

criterion_group!(benches, quota);
criterion_main!(benches);
