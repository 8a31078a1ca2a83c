//! OPA Wasm modules on the standard request
//! (`../shared/bench/pod-gpu-create.json`): decode, match, a fresh instance
//! with its own memory, the data parsed into it, `opa_eval`, encode. The
//! module is `opa-sample` (no `opa` binary can be had here), a module of
//! OPA's ABI about the size of an `opa build -t wasm` Gatekeeper template
//! (200 KiB); its `k8sprivileged/violation` entrypoint calls `sprintf`
//! through the host per violation, `admission/deny` calls `glob.match`,
//! `regex.match`, `sprintf` and `trace` per container.
//!
//! Run: `cargo bench -p tollgate --bench opa`.

mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use support::{at, deadline, sorted_times, standard_request};
use tollgate::context::Context;
use tollgate::policy::{Config, PolicySet};
use tollgate::server::review;

const SAMPLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/opa/opa-sample.wasm"));

const ENTRYPOINTS: [(&str, &str); 2] = [
    (
        "k8sprivileged/violation",
        "{entrypoint: k8sprivileged/violation, inputShape: gatekeeper, parameters: {}}",
    ),
    ("admission/deny", "{entrypoint: admission/deny}"),
];

fn opa(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("policy.wasm");
    std::fs::write(&module, SAMPLE).unwrap();
    let engine = support::engine(&dir.path().join("cache"));
    let body = standard_request();
    let mut group = c.benchmark_group("opa");
    for (entrypoint, settings) in ENTRYPOINTS {
        let config = format!(
            "policies:\n  - name: opa\n    module: opa:{}\n    settings: {settings}\n",
            module.display()
        );
        let config = Config::parse(&config, "bench", PathBuf::new()).unwrap();
        let set = PolicySet::load(&config, &engine, Arc::new(Context::none()));
        assert_eq!(set.failures().count(), 0);
        let policy = &set.policies()[0];
        let pre = policy.module.as_ref().unwrap();
        let evaluate = || {
            let request = review::decode(&body).unwrap();
            let outcome = block_on(set.validate(&request, deadline()));
            black_box(review::encode(&request.uid, &outcome));
        };
        let times = sorted_times(5_000, evaluate);
        let instance = sorted_times(2_000, || {
            black_box(
                pre.time_instantiation(&policy.settings, &policy.limits)
                    .unwrap(),
            );
        });
        println!(
            "opa {entrypoint}: p50 {:.1?}, p99 {:.1?}; of which a fresh instance with the data parsed p50 {:.1?}",
            at(&times, 0.5),
            at(&times, 0.99),
            at(&instance, 0.5),
        );
        group.bench_function(entrypoint, |b| b.iter(evaluate));
    }
    group.finish();
}

criterion_group!(benches, opa);
criterion_main!(benches);
