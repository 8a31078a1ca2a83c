//! Gatekeeper templates on the standard request
//! (`../shared/bench/pod-gpu-create.json`), three ways: through the
//! `gatekeeper` policy in the sandbox (decode, a fresh instance prepared
//! with the compiled program ahead of the call, match, run, encode; and,
//! printed, what preparing an instance costs the spares thread), and
//! natively, with the same regorus VM program loaded once, and with
//! regorus' interpreter on a template parsed once. The figures behind the
//! choice in `docs/policies/gatekeeper.md`.
//!
//! Run: `cargo bench -p tollgate --bench gatekeeper`.

mod support;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use regorus::rvm::program::{DeserializationResult, Program};
use regorus::rvm::vm::RegoVM;
use support::{at, deadline, sorted_times, standard_request};
use tollgate::context::Context;
use tollgate::policy::{Config, PolicySet};
use tollgate::server::review;

/// Library templates of increasing size, each with its sample constraint.
const TEMPLATES: [(&str, &str); 3] = [
    ("privileged-containers", "psp-privileged-container"),
    ("capabilities", "psp-capabilities-restricted"),
    ("users", "psp-pods-allowed-user-ranges"),
];

fn library(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/conformance/gatekeeper/library/pod-security-policy")
        .join(path)
}

fn p50(run: impl FnMut()) -> Duration {
    at(&sorted_times(2_000, run), 0.5)
}

fn gatekeeper(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    let engine = support::engine(cache.path());
    let body = standard_request();
    let review_json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let request_text = review_json["request"].to_string();
    let mut group = c.benchmark_group("gatekeeper");
    for (template, constraint) in TEMPLATES {
        let template_path = library(&format!("{template}/template.yaml"));
        let constraint_path = library(&format!("{template}/samples/{constraint}/constraint.yaml"));
        let config = format!(
            "policies:\n  - name: gk\n    module: builtin:gatekeeper\n    settings: {{template: {}, constraints: [{}]}}\n",
            template_path.display(),
            constraint_path.display()
        );
        let config = Config::parse(&config, "bench", PathBuf::new()).unwrap();
        let set = PolicySet::load(&config, &engine, Arc::new(Context::none()));
        assert_eq!(set.failures().count(), 0);
        let settings: serde_json::Value =
            serde_json::from_str(&set.policies()[0].settings).unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(settings["program"].as_str().unwrap())
            .unwrap();
        let DeserializationResult::Complete(program) = Program::deserialize_binary(&bytes).unwrap()
        else {
            panic!("partial program");
        };
        let program = Arc::new(program);
        let input = regorus::Value::from_json_str(&format!(
            r#"{{"review":{request_text},"parameters":{}}}"#,
            settings["constraints"][0]["parameters"]
        ))
        .unwrap();

        let mut interpreter = regorus::Engine::new();
        interpreter.set_rego_v0(true);
        let template_yaml: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&template_path).unwrap()).unwrap();
        let target = &template_yaml["spec"]["targets"][0];
        let source = target["code"]
            .as_array()
            .and_then(|code| code.iter().find(|c| c["engine"] == "Rego"))
            .map_or(target, |code| &code["source"]);
        let package = interpreter
            .add_policy("t.rego".into(), source["rego"].as_str().unwrap().into())
            .unwrap();
        for (i, lib) in source["libs"].as_array().into_iter().flatten().enumerate() {
            interpreter
                .add_policy(format!("lib{i}.rego"), lib.as_str().unwrap().into())
                .unwrap();
        }
        let rule = format!("{package}.violation");

        let sandbox = || {
            let request = review::decode(&body).unwrap();
            let outcome = block_on(set.validate(&request, deadline()));
            black_box(review::encode(&request.uid, &outcome));
        };
        let native_vm = || {
            let mut vm = RegoVM::new();
            vm.load_program(program.clone());
            vm.set_input(input.clone());
            black_box(vm.execute().unwrap());
        };
        let native_interpreter = || {
            let mut engine = interpreter.clone();
            engine.set_input(input.clone());
            black_box(engine.eval_rule(rule.clone()).unwrap());
        };
        let loaded = &set.policies()[0];
        let module = loaded.module.as_ref().unwrap();
        let mut preparing = (0..500)
            .map(|_| {
                module
                    .time_instantiation(&loaded.settings, &loaded.limits)
                    .unwrap()
            })
            .collect::<Vec<_>>();
        preparing.sort();
        println!(
            "gatekeeper {template}: p50 in the sandbox {:.1?} (program {} KiB; preparing an instance, off the request path, {:.1?}); native VM {:.1?}; native interpreter {:.1?}",
            p50(sandbox),
            bytes.len() / 1024,
            at(&preparing, 0.5),
            p50(native_vm),
            p50(native_interpreter),
        );
        group.bench_function(format!("{template}, in the sandbox"), |b| b.iter(sandbox));
        group.bench_function(format!("{template}, native VM"), |b| b.iter(native_vm));
    }
    group.finish();
}

criterion_group!(benches, gatekeeper);
criterion_main!(benches);
