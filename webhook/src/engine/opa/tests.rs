//! The host's side of OPA's ABI, against `opa-sample` (a module written to
//! the ABI as `opa build -t wasm` output is) and hand-written WAT modules
//! for what a loader must refuse.

use std::time::{Duration, Instant};

use futures::executor::block_on;

use crate::engine::{Error, Limits, PolicyPre, Verdict};
use crate::test_support::{OPA_SAMPLE, engine};

const PRIVILEGED: &str = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
    "namespace":"ml","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
    "spec":{"containers":[{"name":"nginx","image":"nginx","securityContext":{"privileged":true}},
    {"name":"ok","image":"registry.example.com/ok:1"}]}}}"#;

const PLAIN: &str = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
    "namespace":"ml","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
    "spec":{"containers":[{"name":"train","image":"registry.example.com/team/train:1"}]}}}"#;

fn sample() -> PolicyPre {
    engine().load_opa("opa-sample", OPA_SAMPLE).unwrap()
}

fn run(pre: &PolicyPre, request: &str, settings: &str, limits: &Limits) -> Result<Verdict, Error> {
    if let Ok(Err(message)) = pre.validate_settings(settings, limits) {
        panic!("settings refused: {message}");
    }
    block_on(pre.evaluate(request, settings, limits, None, None))
}

fn entry(name: &str) -> String {
    format!(r#"{{"entrypoint":"{name}"}}"#)
}

#[test]
fn a_gatekeeper_shaped_module_denies_with_its_sprintf_messages() {
    let settings = r#"{"entrypoint":"data.k8sprivileged.violation","inputShape":"gatekeeper","parameters":{}}"#;
    let verdict = run(&sample(), PRIVILEGED, settings, &Limits::default()).unwrap();
    assert!(!verdict.allowed);
    assert_eq!(
        verdict.message.as_deref(),
        Some(
            r#"Privileged container is not allowed: nginx, securityContext: {"privileged": true}"#
        )
    );
    let verdict = run(&sample(), PLAIN, settings, &Limits::default()).unwrap();
    assert!(verdict.allowed, "{verdict:?}");
}

#[test]
fn a_plain_admission_module_reads_the_admission_review_and_calls_builtins() {
    let settings = entry("admission/deny");
    assert!(
        run(&sample(), PLAIN, &settings, &Limits::default())
            .unwrap()
            .allowed
    );
    let verdict = run(&sample(), PRIVILEGED, &settings, &Limits::default()).unwrap();
    assert_eq!(
        verdict.message.as_deref(),
        Some("container nginx uses image nginx from outside registry.example.com")
    );
    let bad_name = PLAIN.replace(r#""name":"train""#, r#""name":"Train_1""#);
    let verdict = run(&sample(), &bad_name, &settings, &Limits::default()).unwrap();
    assert_eq!(
        verdict.message.as_deref(),
        Some(r#"container name "Train_1" is not a DNS label"#)
    );
}

#[test]
fn sprintf_prints_sets_objects_and_verbs_as_opa_does() {
    let verdict = run(
        &sample(),
        PLAIN,
        &entry("tollgate/format"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        verdict.message.as_deref(),
        Some(
            r#"{1, "a"}|set()|[{1, "a"}, {"k": [true, null]}]|{"a": "x", "b": 2}|plain|42|"quoted"|%|1.5"#
        )
    );
}

#[test]
fn data_comes_from_settings_and_from_a_bundle_under_them() {
    let settings = r#"{"entrypoint":"tollgate/data","data":{"deny":["from settings"]}}"#;
    let verdict = run(&sample(), PLAIN, settings, &Limits::default()).unwrap();
    assert_eq!(verdict.message.as_deref(), Some("from settings"));
    assert!(
        run(
            &sample(),
            PLAIN,
            &entry("tollgate/data"),
            &Limits::default()
        )
        .unwrap()
        .allowed
    );

    let bundle = super::bundle::tests::bundle(&[
        (
            "/.manifest",
            br#"{"revision":"r1","wasm":[{"entrypoint":"tollgate/data","module":"/policy.wasm"}]}"#,
        ),
        ("/policy.wasm", OPA_SAMPLE),
        ("/data.json", br#"{"deny":["from the bundle"]}"#),
    ]);
    let pre = engine().load_opa("bundle", &bundle).unwrap();
    let verdict = run(&pre, PLAIN, &entry("tollgate/data"), &Limits::default()).unwrap();
    assert_eq!(verdict.message.as_deref(), Some("from the bundle"));
    let verdict = run(&pre, PLAIN, settings, &Limits::default()).unwrap();
    assert_eq!(verdict.message.as_deref(), Some("from settings"));
}

#[test]
fn println_trace_and_the_clock_answer() {
    for name in ["tollgate/println", "tollgate/now"] {
        let verdict = run(&sample(), PLAIN, &entry(name), &Limits::default()).unwrap();
        assert!(verdict.allowed, "{name}: {verdict:?}");
    }
    let verdict = run(
        &sample(),
        PLAIN,
        &entry("tollgate/boolean"),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        verdict.message.as_deref(),
        Some("denied by OPA entrypoint tollgate/boolean")
    );
}

#[test]
fn a_looping_module_is_stopped_at_its_deadline() {
    let limits = Limits {
        timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let pre = sample();
    let settings = entry("tollgate/loop");
    assert_eq!(pre.validate_settings(&settings, &limits).unwrap(), Ok(()));
    let started = Instant::now();
    let result = block_on(pre.evaluate(PLAIN, &settings, &limits, None, None));
    assert!(matches!(result, Err(Error::Timeout(20))), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // The request's deadline, when it comes first, is named as such.
    let deadline = Instant::now() + Duration::from_millis(10);
    let limits = Limits {
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let result = block_on(pre.evaluate(PLAIN, &settings, &limits, Some(deadline), None));
    assert!(
        matches!(result, Err(Error::RequestDeadline(5000))),
        "{result:?}"
    );
}

#[test]
fn a_module_that_grows_without_bound_hits_the_memory_cap() {
    let limits = Limits {
        memory_bytes: 16 << 20,
        timeout: Duration::from_secs(5),
        ..Limits::default()
    };
    let result = run(&sample(), PLAIN, &entry("tollgate/grow"), &limits);
    assert!(matches!(result, Err(Error::MemoryLimit(16))), "{result:?}");
    // An input larger than the cap is refused the same way, before the
    // module runs.
    let huge = PLAIN.replace("train:1", &"x".repeat(20 << 20));
    let result = run(&sample(), &huge, &entry("admission/deny"), &limits);
    assert!(matches!(result, Err(Error::MemoryLimit(16))), "{result:?}");
}

#[test]
fn opa_abort_ends_the_call_with_the_modules_message() {
    match run(
        &sample(),
        PLAIN,
        &entry("tollgate/abort"),
        &Limits::default(),
    ) {
        Err(Error::Trap(message)) => assert_eq!(message, "opa_abort: deliberate abort"),
        other => panic!("expected an abort, got {other:?}"),
    }
}

#[test]
fn settings_must_fit_the_module() {
    let pre = sample();
    let refused = pre
        .validate_settings("{}", &Limits::default())
        .unwrap()
        .unwrap_err();
    assert!(refused.starts_with("entrypoint: the module has several, name one of: admission/deny, k8sprivileged/violation, tollgate/abort"), "{refused}");
    let refused = pre
        .validate_settings(r#"{"entrypoint":"nope/deny"}"#, &Limits::default())
        .unwrap()
        .unwrap_err();
    assert!(refused.contains("has no \"nope/deny\""), "{refused}");
}

/// A module of the ABI's shape whose `builtins()` is `builtins`; with
/// `extra` added to its body.
fn wat(builtins: &str, extra: &str, eval: bool) -> Vec<u8> {
    let eval = if eval {
        r#"(func (export "opa_eval") (param i32 i32 i32 i32 i32 i32 i32) (result i32) i32.const 0)"#
    } else {
        ""
    };
    let text = format!(
        r#"(module
          (import "env" "memory" (memory 1))
          (import "env" "opa_abort" (func (param i32)))
          {extra}
          (data (i32.const 16) "{builtins}\00")
          (data (i32.const 256) "{{\"a/deny\":0}}\00")
          (func (export "builtins") (result i32) i32.const 16)
          (func (export "entrypoints") (result i32) i32.const 256)
          (func (export "opa_json_dump") (param i32) (result i32) local.get 0)
          (func (export "opa_value_dump") (param i32) (result i32) local.get 0)
          (func (export "opa_malloc") (param i32) (result i32) i32.const 1024)
          (func (export "opa_json_parse") (param i32 i32) (result i32) i32.const 0)
          (func (export "opa_heap_ptr_get") (result i32) i32.const 1024)
          {eval})"#,
        builtins = builtins.replace('"', "\\\"")
    );
    wat::parse_str(text).unwrap()
}

fn refusal(bytes: &[u8]) -> String {
    match engine().load_opa("refused", bytes) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("loaded"),
    }
}

#[test]
fn modules_the_host_cannot_serve_are_refused_at_load_with_why() {
    let message = refusal(&wat(r#"{"http.send":0,"sprintf":1}"#, "", true));
    assert_eq!(
        message,
        "OPA module: the module needs builtins the host does not implement: http.send (implemented: sprintf, trace, time.now_ns, regex.match, glob.match)"
    );
    let message = refusal(&wat("{}", "", false));
    assert!(
        message.contains("exports no opa_eval (OPA's Wasm ABI 1.2 or later is needed"),
        "{message}"
    );
    let message = refusal(&wat(
        "{}",
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        true,
    ));
    assert!(
        message.contains(
            "imports wasi_snapshot_preview1.fd_write, which is not part of OPA's Wasm ABI"
        ),
        "{message}"
    );
    let message = refusal(crate::test_support::MISBEHAVE);
    assert!(
        message.contains("this is a component of the tollgate:policy world"),
        "{message}"
    );
    assert!(
        refusal(&super::bundle::tests::bundle(&[("/data.json", b"{}")])).contains("no Wasm module")
    );
}

#[test]
fn data_the_module_cannot_parse_is_a_settings_refusal() {
    let pre = engine().load_opa("unparsed", &wat("{}", "", true)).unwrap();
    let refused = pre.validate_settings("{}", &Limits::default()).unwrap();
    assert_eq!(
        refused,
        Err("the module could not parse the settings' data".to_owned())
    );
}
