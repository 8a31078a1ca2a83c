//! In-process admission benchmarks on the standard request
//! (`../shared/bench/pod-gpu-create.json`): decode → match → policies (a fresh
//! instance each) → patch → encode, through two policies (resource-defaults,
//! mutating; image-registries, validating) and through the whole embedded
//! default configuration; and each built-in policy alone in the engine
//! (gpu-placement also on a PyTorchJob built from the same pod).
//!
//! Run: `cargo bench -p tollgate --bench admission`.

mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use support::{deadline, standard_request};
use tollgate::context::Context;
use tollgate::engine;
use tollgate::policy::PolicySet;
use tollgate::server::review;

/// The standard request with its second container's resources removed, so
/// that the mutating policy changes it and a patch is computed.
fn request_needing_defaults() -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(&standard_request()).unwrap();
    review["request"]["object"]["spec"]["containers"][1]
        .as_object_mut()
        .unwrap()
        .remove("resources");
    serde_json::to_vec(&review).unwrap()
}

/// The two policies the core's figures are measured with (the same file
/// `scripts/load` takes for its load run of the core).
const TWO_POLICIES: &str = include_str!("../../scripts/load-two-policies.yaml");

fn load(config: &tollgate::policy::Config, cache: &tempfile::TempDir) -> PolicySet {
    let engine = support::engine(cache.path());
    let set = PolicySet::load(config, &engine, Arc::new(Context::none()));
    assert_eq!(set.failures().count(), 0);
    set
}

fn admission(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let two = tollgate::policy::Config::parse(TWO_POLICIES, "bench", PathBuf::new()).unwrap();
    let set = load(&two, &cache);
    let default = load(&tollgate::builtin::default_config().unwrap(), &cache);
    let standard = standard_request();
    let needing_defaults = request_needing_defaults();

    let mut group = c.benchmark_group("standard-request");
    group.bench_function("validate (decode, image-registries, encode)", |b| {
        b.iter(|| {
            let request = review::decode(black_box(&standard)).unwrap();
            let outcome = block_on(set.validate(&request, deadline()));
            black_box(review::encode(&request.uid, &outcome))
        })
    });
    group.bench_function("mutate (decode, resource-defaults, encode)", |b| {
        b.iter(|| {
            let request = review::decode(black_box(&standard)).unwrap();
            let outcome = block_on(set.mutate(&request, deadline()));
            black_box(review::encode(&request.uid, &outcome))
        })
    });
    group.bench_function("two-policy chain (decode, mutate, validate, encode)", |b| {
        b.iter(|| {
            let request = review::decode(black_box(&standard)).unwrap();
            let outcome = block_on(set.review(&request, deadline()));
            assert!(outcome.allowed);
            black_box(review::encode(&request.uid, &outcome))
        })
    });
    group.bench_function("two-policy chain with a patch", |b| {
        b.iter(|| {
            let request = review::decode(black_box(&needing_defaults)).unwrap();
            let outcome = block_on(set.review(&request, deadline()));
            assert!(outcome.patch.is_some());
            black_box(review::encode(&request.uid, &outcome))
        })
    });
    group.bench_function(
        "default configuration: 5 policies (decode, mutate, validate, patch, encode)",
        |b| {
            b.iter(|| {
                let request = review::decode(black_box(&standard)).unwrap();
                let outcome = block_on(default.review(&request, deadline()));
                assert!(outcome.allowed && outcome.warnings.is_empty() && outcome.patch.is_some());
                black_box(review::encode(&request.uid, &outcome))
            })
        },
    );
    group.bench_function("decode and encode only", |b| {
        b.iter(|| {
            let request = review::decode(black_box(&standard)).unwrap();
            black_box(review::encode(
                &request.uid,
                &tollgate::policy::Outcome::default(),
            ))
        })
    });
    group.finish();
}

/// The floor: a fresh instance of a policy that does nothing but count its
/// calls, and of the two built-ins on the standard request, without the host's
/// decode, match and encode.
fn engine(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let engine = support::engine(cache.path());
    let limits = engine::Limits::default();
    let misbehave = engine
        .load(
            "misbehave",
            include_bytes!(concat!(env!("OUT_DIR"), "/policies/misbehave.wasm")),
        )
        .unwrap();
    let registries = engine
        .load(
            "image-registries",
            tollgate::builtin::module("image-registries").unwrap(),
        )
        .unwrap();
    let defaults = engine
        .load(
            "resource-defaults",
            tollgate::builtin::module("resource-defaults").unwrap(),
        )
        .unwrap();
    let pod_security = engine
        .load(
            "pod-security",
            tollgate::builtin::module("pod-security").unwrap(),
        )
        .unwrap();
    let placement = engine
        .load(
            "gpu-placement",
            tollgate::builtin::module("gpu-placement").unwrap(),
        )
        .unwrap();
    let review: serde_json::Value = serde_json::from_slice(&standard_request()).unwrap();
    let request = review["request"].to_string();
    let pytorch_job = pytorch_job_request(&review["request"]);
    let mut group = c.benchmark_group("engine");
    group.bench_function("fresh instance, trivial call", |b| {
        b.iter(|| {
            black_box(
                block_on(misbehave.evaluate(
                    r#"{"uid":"u"}"#,
                    r#"{"behaviour":"count"}"#,
                    &limits,
                    Some(deadline()),
                    None,
                ))
                .unwrap(),
            )
        })
    });
    group.bench_function("image-registries on the standard request", |b| {
        b.iter(|| {
            black_box(
                block_on(registries.evaluate(
                    &request,
                    r#"{"allowedRegistries":["nvcr.io/"],"denyLatest":true}"#,
                    &limits,
                    Some(deadline()),
                    None,
                ))
                .unwrap(),
            )
        })
    });
    group.bench_function("resource-defaults on the standard request", |b| {
        b.iter(|| {
            black_box(
                block_on(defaults.evaluate(
                    &request,
                    r#"{"requests":{"cpu":"100m","memory":"128Mi"}}"#,
                    &limits,
                    Some(deadline()),
                    None,
                ))
                .unwrap(),
            )
        })
    });
    for (name, request) in [
        ("the standard request", &request),
        ("a PyTorchJob of the same pod", &pytorch_job),
    ] {
        group.bench_function(format!("gpu-placement on {name}"), |b| {
            b.iter(|| {
                let verdict =
                    block_on(placement.evaluate(request, "{}", &limits, Some(deadline()), None))
                        .unwrap();
                assert!(verdict.allowed && verdict.mutated_object.is_some());
                black_box(verdict)
            })
        });
    }
    for level in ["restricted", "baseline"] {
        let settings = format!(r#"{{"level":"{level}","version":"latest"}}"#);
        group.bench_function(
            format!("pod-security {level} on the standard request"),
            |b| {
                b.iter(|| {
                    let verdict = block_on(pod_security.evaluate(
                        &request,
                        &settings,
                        &limits,
                        Some(deadline()),
                        None,
                    ))
                    .unwrap();
                    assert!(verdict.allowed);
                    black_box(verdict)
                })
            },
        );
    }
    group.finish();
}

/// The standard request's pod as the Worker template of a PyTorchJob: an
/// ML job of the same size.
fn pytorch_job_request(pod_request: &serde_json::Value) -> String {
    let pod = &pod_request["object"];
    let mut request = pod_request.clone();
    request["kind"] =
        serde_json::json!({"group": "kubeflow.org", "version": "v1", "kind": "PyTorchJob"});
    request["object"] = serde_json::json!({
        "apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob",
        "metadata": {"name": "llm-finetune-7b", "namespace": pod["metadata"]["namespace"]},
        "spec": {"pytorchReplicaSpecs": {"Worker": {"replicas": 4, "restartPolicy": "OnFailure",
            "template": {"metadata": {"labels": pod["metadata"]["labels"]}, "spec": pod["spec"]}}}},
    });
    request.to_string()
}

criterion_group!(benches, admission, engine);
criterion_main!(benches);
