//! The context-aware policies `network-guard` and `workload-priority`
//! in-process, each alone, with their context from a snapshot of 200
//! namespaces (every other one a tenant), each with a default-deny policy,
//! two more NetworkPolicies and two LocalQueues, and 6 PriorityClasses: the
//! standard request (`../shared/bench/pod-gpu-create.json`, a GPU pod of a
//! Job in the tenant namespace `ml-training`), and for network-guard a
//! NetworkPolicy CREATE there, each decoded, matched, evaluated in a fresh
//! instance and encoded.
//!
//! Prints a latency distribution over 5,000 admissions of each (p50, p99),
//! then criterion's figures.
//!
//! Run: `cargo bench -p tollgate --bench context_policies`.

mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use serde_json::{Value, json};
use support::{at, deadline, sorted_times, standard_request};
use tollgate::context::snapshot::Snapshot;
use tollgate::context::{Context, ledger};
use tollgate::policy::{Config, PolicySet};
use tollgate::server::review;

const NAMESPACES: usize = 200;

const NETWORK_GUARD: &str = r#"
policies:
  - name: network-guard
    module: builtin:network-guard
    match: {kinds: [NetworkPolicy, Service, Pod, Deployment, Job, PyTorchJob]}
    context:
      - {apiVersion: v1, kind: Namespace}
      - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy}
      - {apiVersion: v1, kind: Pod}
    settings:
      tenantNamespaces: {matchLabels: {tollgate.dev/tenant: "true"}}
      requireDefaultDenyEgress: true
      ingress: {allowedPorts: [443]}
      egress: {allowedCidrs: [10.0.0.0/8]}
"#;

const WORKLOAD_PRIORITY: &str = r#"
policies:
  - name: workload-priority
    module: builtin:workload-priority
    match: {kinds: [Pod, Deployment, Job, PyTorchJob, PriorityClass]}
    context:
      - {apiVersion: v1, kind: Namespace}
      - {apiVersion: scheduling.k8s.io/v1, kind: PriorityClass}
      - {apiVersion: kueue.x-k8s.io/v1beta1, kind: LocalQueue}
    settings:
      classes:
        - namespaceSelector: {matchLabels: {tollgate.dev/tenant: "true"}}
          allowed: [gpu-batch-high, gpu-serving]
          maxValue: 10000
      trainingMustNotPreempt: true
      queues: {namespaceSelector: {matchLabels: {tollgate.dev/tenant: "true"}}}
"#;

fn namespace_name(i: usize) -> String {
    if i == 0 {
        "ml-training".into()
    } else {
        format!("ns-{i:03}")
    }
}

fn snapshot(dir: &std::path::Path) {
    let namespaces: Vec<Value> = (0..NAMESPACES)
        .map(|i| {
            let tenant = if i % 2 == 0 { "true" } else { "false" };
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace_name(i),
                "labels": {"kubernetes.io/metadata.name": namespace_name(i), "tollgate.dev/tenant": tenant}}})
        })
        .collect();
    let policies: Vec<Value> = (0..NAMESPACES)
        .flat_map(|i| {
            let namespace = namespace_name(i);
            [
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "allow-dns", "namespace": namespace},
                    "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [
                        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                         "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}}),
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "allow-rendezvous", "namespace": namespace},
                    "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-finetune"}},
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-finetune"}}}],
                            "ports": [{"port": 29500}]}]}}),
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "default-deny", "namespace": namespace},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}),
            ]
        })
        .collect();
    let queues: Vec<Value> = (0..NAMESPACES)
        .flat_map(|i| {
            ["research", "spot"].map(|name| {
                json!({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue",
                    "metadata": {"name": name, "namespace": namespace_name(i)}, "spec": {"clusterQueue": name}})
            })
        })
        .collect();
    let classes: Vec<Value> = [
        ("gpu-batch-high", 5000, "Never"),
        ("gpu-batch", 1000, "Never"),
        ("gpu-serving", 10_000, "PreemptLowerPriority"),
        ("gpu-interactive", 3000, "Never"),
        ("urgent", 90_000, "PreemptLowerPriority"),
        (
            "system-node-critical",
            2_000_001_000,
            "PreemptLowerPriority",
        ),
    ]
    .into_iter()
    .map(|(name, value, policy)| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "preemptionPolicy": policy})
    })
    .collect();
    let list =
        |items: Vec<Value>| json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string();
    std::fs::write(dir.join("namespaces.json"), list(namespaces)).unwrap();
    std::fs::write(dir.join("networkpolicies.json"), list(policies)).unwrap();
    std::fs::write(dir.join("localqueues.json"), list(queues)).unwrap();
    std::fs::write(dir.join("priorityclasses.json"), list(classes)).unwrap();
}

/// A NetworkPolicy CREATE in `ml-training`: the training job's pods take
/// metrics scrapes from the monitoring namespace and reach the artifact
/// store.
fn network_policy_request() -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "3f1c2a10-0b0e-4c1e-9a51-6c3d2e1f0a99",
        "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
        "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
        "name": "llm-finetune-traffic", "namespace": "ml-training", "operation": "CREATE",
        "userInfo": {"username": "alice@example.com", "groups": ["system:authenticated"]},
        "object": {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "llm-finetune-traffic", "namespace": "ml-training",
                "labels": {"app.kubernetes.io/name": "llm-finetune"}},
            "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "llm-finetune"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                    "podSelector": {"matchLabels": {"app": "prometheus"}}}], "ports": [{"port": 9400}]}],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.40.0.0/16", "except": ["10.40.255.0/24"]}}],
                    "ports": [{"port": 443}, {"port": 9000, "endPort": 9100}]}]}},
        "oldObject": null, "dryRun": false}}))
    .unwrap()
}

fn admit(set: &PolicySet, body: &[u8]) -> Vec<u8> {
    let request = review::decode(body).unwrap();
    let outcome = block_on(set.validate(&request, deadline()));
    assert!(outcome.allowed, "{:?}", outcome.message);
    review::encode(&request.uid, &outcome)
}

fn context_policies(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    snapshot(dir.path());
    let cache = tempfile::tempdir().unwrap();
    let engine = support::engine(cache.path());
    let provider = Snapshot::load(&[dir.path().to_owned()]).unwrap();
    let context = Arc::new(Context::new(
        Some(Box::new(provider)),
        Box::new(ledger::Local::default()),
    ));
    let load = |config: &str| {
        let config = Config::parse(config, "bench", PathBuf::new()).unwrap();
        let set = PolicySet::load(&config, &engine, context.clone());
        assert_eq!(set.failures().count(), 0);
        set
    };
    let network_guard = load(NETWORK_GUARD);
    let workload_priority = load(WORKLOAD_PRIORITY);

    let standard = standard_request();
    let network_policy = network_policy_request();
    let runs = [
        (
            "network-guard",
            "the standard request",
            &network_guard,
            &standard,
        ),
        (
            "network-guard",
            "a NetworkPolicy CREATE",
            &network_guard,
            &network_policy,
        ),
        (
            "workload-priority",
            "the standard request",
            &workload_priority,
            &standard,
        ),
    ];
    for (policy, name, set, body) in runs {
        let times = sorted_times(5_000, || drop(black_box(admit(set, body))));
        println!(
            "{policy}: 5,000 admissions of {name} (200 namespaces in context): p50 {:.1?}, p99 {:.1?}",
            at(&times, 0.50),
            at(&times, 0.99)
        );
    }

    let mut group = c.benchmark_group("context-policies");
    for (policy, name, set, body) in runs {
        group.bench_function(format!("{policy}, {name}"), |b| {
            b.iter(|| black_box(admit(set, body)))
        });
    }
    group.finish();
}

criterion_group!(benches, context_policies);
criterion_main!(benches);
