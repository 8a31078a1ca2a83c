//! The host's side of waPC, against hand-written WAT guests that speak it
//! as Kubewarden's SDKs do (the SDK-built policies run end to end, in
//! `tests/e2e/kubewarden.rs`), and what a loader must refuse.

use std::time::{Duration, Instant};

use futures::executor::block_on;

use crate::engine::host::{Claim, Decision, Refusal, Usage};
use crate::engine::{Error, Host, Limits, PolicyPre, Verdict};
use crate::test_support::engine;
use wasm_encoder::Section as _;

const REQUEST: &str =
    r#"{"uid":"u","operation":"CREATE","namespace":"ml","object":{"kind":"Pod"}}"#;

/// A WAT string literal's contents.
fn quoted(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A waPC guest that answers `protocol_version` with `protocol`,
/// `validate_settings` with `settings`, and `validate` by running
/// `validate` (WAT instructions ending in a `return`). `$answer` is at 0,
/// the payload at 16384, and `$len` its length; 32768 on is scratch.
fn guest(protocol: &str, settings: &str, answer: &str, validate: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  (import "wapc" "__guest_request" (func $request (param i32 i32)))
  (import "wapc" "__guest_response" (func $response (param i32 i32)))
  (import "wapc" "__guest_error" (func $error (param i32 i32)))
  (import "wapc" "__host_call" (func $host_call (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "wapc" "__host_response_len" (func $host_response_len (result i32)))
  (import "wapc" "__host_response" (func $host_response (param i32)))
  (import "wapc" "__host_error_len" (func $host_error_len (result i32)))
  (import "wapc" "__host_error" (func $host_error (param i32)))
  (import "wapc" "__console_log" (func $console_log (param i32 i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "{answer}")
  (data (i32.const 4096) "{protocol}")
  (data (i32.const 4608) "{settings}")
  (data (i32.const 6000) "kubewardenkubernetesget_resource")
  (data (i32.const 6100) "{{\"api_version\":\"v1\",\"kind\":\"Namespace\",\"name\":\"ml\",\"disable_cache\":false}}")
  (data (i32.const 6300) "{{\"accepted\":true,\"mutated_object\":")
  (data (i32.const 6400) "panicked at src/lib.rs:7: boom\n")
  (data (i32.const 40000) "{euros}")
  (global $inits (mut i32) (i32.const 0))
  (func (export "wapc_init") (global.set $inits (i32.add (global.get $inits) (i32.const 1))))
  (func (export "__guest_call") (param $op_len i32) (param $len i32) (result i32)
    (local $n i32)
    (if (i32.ne (global.get $inits) (i32.const 1)) (then unreachable))
    (call $request (i32.const 8192) (i32.const 16384))
    (if (i32.eq (local.get $op_len) (i32.const 16))
      (then (call $response (i32.const 4096) (i32.const {protocol_len})) (return (i32.const 1))))
    (if (i32.eq (local.get $op_len) (i32.const 17))
      (then (call $response (i32.const 4608) (i32.const {settings_len})) (return (i32.const 1))))
    {validate}))"#,
        answer = quoted(answer),
        euros = "€".repeat(1700),
        protocol = quoted(protocol),
        protocol_len = protocol.len(),
        settings = quoted(settings),
        settings_len = settings.len(),
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// A guest that answers `validate` with `answer`.
fn answering(answer: &str) -> Vec<u8> {
    let validate = format!(
        "(call $response (i32.const 0) (i32.const {})) (return (i32.const 1))",
        answer.len()
    );
    guest(r#""v1""#, r#"{"valid":true}"#, answer, &validate)
}

fn load(module: &[u8]) -> Result<PolicyPre, Error> {
    engine().load_kubewarden("kw", module)
}

fn evaluate(pre: &PolicyPre, host: Option<Box<dyn Host>>) -> Result<Verdict, Error> {
    block_on(pre.evaluate(REQUEST, "null", &Limits::default(), None, host))
}

#[test]
fn a_validation_response_becomes_the_verdict() {
    let pre = load(&answering(r#"{"accepted":true}"#)).unwrap();
    assert!(evaluate(&pre, None).unwrap().allowed);

    let rejection = r#"{"accepted":false,"message":"no","code":422,"warnings":["w"],"audit_annotations":{"b":"2","a":"1"},"mutated_object":{"kind":"Pod"}}"#;
    let verdict = evaluate(&load(&answering(rejection)).unwrap(), None).unwrap();
    assert_eq!(
        verdict,
        Verdict {
            allowed: false,
            message: Some("no".into()),
            code: Some(422),
            warnings: vec!["w".into()],
            audit_annotations: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            // A rejection mutates nothing.
            mutated_object: None,
        }
    );

    let mutation = r#"{"accepted":true,"message":null,"mutated_object":{"kind":"Pod","metadata":{"labels":{"a":"b"}}}}"#;
    let verdict = evaluate(&load(&answering(mutation)).unwrap(), None).unwrap();
    assert_eq!(
        verdict.mutated_object.as_deref(),
        Some(r#"{"kind":"Pod","metadata":{"labels":{"a":"b"}}}"#)
    );

    match evaluate(&load(&answering(r#"{"allowed":true}"#)).unwrap(), None) {
        Err(Error::InvalidOutput(message)) => {
            assert!(message.contains("no ValidationResponse"), "{message}")
        }
        other => panic!("expected invalid output, got {other:?}"),
    }
}

#[test]
fn the_payload_is_kubewardens_validation_request() {
    // The guest hands the payload back as its error.
    let echo = "(call $error (i32.const 16384) (local.get $len)) (return (i32.const 0))";
    let pre = load(&guest(r#""v1""#, r#"{"valid":true}"#, "", echo)).unwrap();
    let settings = r#"{"labels":{"a":"b"}}"#;
    match block_on(pre.evaluate(REQUEST, settings, &Limits::default(), None, None)) {
        Err(Error::Policy(payload)) => {
            assert_eq!(
                payload,
                format!(r#"{{"request":{REQUEST},"settings":{settings}}}"#)
            )
        }
        other => panic!("expected the payload back, got {other:?}"),
    }
    // No settings are an empty object, as Kubewarden sends them.
    match evaluate(&pre, None) {
        Err(Error::Policy(payload)) => assert!(payload.ends_with(r#","settings":{}}"#)),
        other => panic!("expected the payload back, got {other:?}"),
    }
}

#[test]
fn settings_are_judged_by_validate_settings() {
    let refusing = guest(
        r#""v1""#,
        r#"{"valid":false,"message":"labels is empty"}"#,
        "",
        "(return (i32.const 0))",
    );
    let pre = load(&refusing).unwrap();
    assert_eq!(
        pre.validate_settings("{}", &Limits::default()).unwrap(),
        Err("labels is empty".to_owned())
    );
    let pre = load(&answering(r#"{"accepted":true}"#)).unwrap();
    assert_eq!(
        pre.validate_settings("{}", &Limits::default()).unwrap(),
        Ok(())
    );
}

#[test]
fn guest_errors_traps_loops_and_floods_are_contained() {
    let error = guest(
        r#""v1""#,
        r#"{"valid":true}"#,
        "cannot decode the request",
        "(call $error (i32.const 0) (i32.const 25)) (return (i32.const 0))",
    );
    match evaluate(&load(&error).unwrap(), None) {
        Err(Error::Policy(message)) => assert_eq!(message, "cannot decode the request"),
        other => panic!("expected the policy's error, got {other:?}"),
    }
    // A panic: the message written to stderr names the trap.
    let panic = r#"(i32.store (i32.const 32768) (i32.const 6400)) (i32.store (i32.const 32772) (i32.const 31))
        (drop (call $fd_write (i32.const 2) (i32.const 32768) (i32.const 1) (i32.const 32776))) unreachable"#;
    match evaluate(
        &load(&guest(r#""v1""#, r#"{"valid":true}"#, "", panic)).unwrap(),
        None,
    ) {
        Err(Error::Trap(message)) => {
            assert!(
                message.contains("the policy wrote: panicked at src/lib.rs:7: boom"),
                "{message}"
            )
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    let spin = "(loop $forever (br $forever)) (return (i32.const 1))";
    let pre = load(&guest(r#""v1""#, r#"{"valid":true}"#, "", spin)).unwrap();
    let limits = Limits {
        timeout: Duration::from_millis(20),
        ..Limits::default()
    };
    let started = Instant::now();
    match block_on(pre.evaluate(REQUEST, "{}", &limits, None, None)) {
        Err(Error::Timeout(20)) => assert!(started.elapsed() < Duration::from_secs(1)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let huge = "(call $response (i32.const 0) (i32.const 0x7fffffff)) (return (i32.const 1))";
    match evaluate(
        &load(&guest(r#""v1""#, r#"{"valid":true}"#, "", huge)).unwrap(),
        None,
    ) {
        Err(Error::OutputTooLarge { size, limit }) => {
            assert_eq!((size, limit), (0x7fff_ffff, Limits::default().output_bytes))
        }
        other => panic!("expected the answer refused, got {other:?}"),
    }
    let silent = "(return (i32.const 1))";
    match evaluate(
        &load(&guest(r#""v1""#, r#"{"valid":true}"#, "", silent)).unwrap(),
        None,
    ) {
        Err(Error::InvalidOutput(message)) => assert!(message.contains("no response"), "{message}"),
        other => panic!("expected no response, got {other:?}"),
    }
}

#[test]
fn a_console_line_is_cut_to_the_log_limit_even_mid_character() {
    // 5,100 bytes of three-byte characters: the cut at 4,096 splits one.
    let log = format!(
        "(call $console_log (i32.const 40000) (i32.const 5100)) (call $response (i32.const 0) (i32.const {len})) (return (i32.const 1))",
        len = r#"{"accepted":true}"#.len()
    );
    let pre = load(&guest(
        r#""v1""#,
        r#"{"valid":true}"#,
        r#"{"accepted":true}"#,
        &log,
    ))
    .unwrap();
    assert!(evaluate(&pre, None).unwrap().allowed);
}

/// A cluster of one Namespace.
struct Cluster;

impl Host for Cluster {
    fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        _: Instant,
    ) -> Result<Option<String>, Refusal> {
        Ok((api_version, kind, namespace, name)
            .eq(&("v1", "Namespace", "", "ml"))
            .then(|| r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ml"}}"#.into()))
    }
    fn list(
        &mut self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
        _: usize,
        _: Instant,
    ) -> Result<String, Refusal> {
        Ok("[]".into())
    }
    fn usage(&mut self, _: &[String]) -> Result<Vec<Usage>, Refusal> {
        Ok(Vec::new())
    }
    fn reserve(
        &mut self,
        _: Vec<Claim>,
        _: Instant,
    ) -> futures::future::BoxFuture<'_, Result<Decision, Refusal>> {
        Box::pin(std::future::ready(Err(Refusal::message("no ledger"))))
    }
}

/// A guest that reads the Namespace `ml` through `get_resource` (`binding`,
/// `namespace` and `operation` lengths as given) and answers with it as its
/// mutated object, or fails with the host's error.
fn reader(binding: i32, namespace: i32, operation: i32) -> Vec<u8> {
    let validate = format!(
        r#"(if (call $host_call (i32.const 6000) (i32.const {binding}) (i32.const 6010) (i32.const {namespace})
              (i32.const 6020) (i32.const {operation}) (i32.const 6100) (i32.const 73))
          (then
            (local.set $n (call $host_response_len))
            (memory.copy (i32.const 32768) (i32.const 6300) (i32.const 34))
            (call $host_response (i32.const 32802))
            (i32.store8 (i32.add (i32.const 32802) (local.get $n)) (i32.const 125))
            (call $response (i32.const 32768) (i32.add (local.get $n) (i32.const 35)))
            (return (i32.const 1))))
        (local.set $n (call $host_error_len))
        (call $host_error (i32.const 32768))
        (call $error (i32.const 32768) (local.get $n))
        (return (i32.const 0))"#
    );
    guest(r#""v1""#, r#"{"valid":true}"#, "", &validate)
}

#[test]
fn kubernetes_reads_are_answered_from_the_granted_context_and_others_refused() {
    let pre = load(&reader(10, 10, 12)).unwrap();
    let verdict = evaluate(&pre, Some(Box::new(Cluster))).unwrap();
    assert_eq!(
        verdict.mutated_object.as_deref(),
        Some(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ml"}}"#)
    );
    // Without granted context, the read is refused, and the policy's
    // failure is reported as the refusal it followed.
    match evaluate(&pre, None) {
        Err(Error::Refused { message, refusal }) => {
            assert_eq!(message, refusal);
            assert!(message.contains("granted no cluster context"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // `kubewarden/kubernetes/get_resourc`: not a capability Tollgate offers.
    match evaluate(&load(&reader(10, 10, 11)).unwrap(), Some(Box::new(Cluster))) {
        Err(Error::Refused { message, .. }) => assert!(
            message.contains("kubewarden/kubernetes/get_resourc is not offered"),
            "{message}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn what_is_not_a_runnable_kubewarden_module_is_refused_at_load() {
    let refused = |module: &[u8]| match load(module) {
        Err(Error::Kubewarden(message)) => message,
        Err(other) => panic!("expected a Kubewarden error, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    };
    let message = refused(&wat::parse_str(r#"(module (import "env" "abort" (func)) (memory (export "memory") 1) (func (export "__guest_call") (param i32 i32) (result i32) i32.const 1))"#).unwrap());
    assert!(message.contains("imports env.abort"), "{message}");
    let message = refused(&wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap());
    assert!(message.contains("exports no __guest_call"), "{message}");
    let message = refused(&guest(
        r#""v2""#,
        r#"{"valid":true}"#,
        "",
        "(return (i32.const 0))",
    ));
    assert!(message.contains("speaks protocol v2"), "{message}");
    // A module that does not answer `protocol_version` (TinyGo's waPC guest
    // registers none) speaks v1.
    let silent = r#"(module
      (import "wapc" "__guest_request" (func $request (param i32 i32)))
      (import "wapc" "__guest_error" (func $error (param i32 i32)))
      (memory (export "memory") 1)
      (data (i32.const 0) "Could not find function \"protocol_version\"")
      (func (export "_start"))
      (func (export "__guest_call") (param i32 i32) (result i32)
        (call $request (i32.const 1024) (i32.const 2048))
        (call $error (i32.const 0) (i32.const 42))
        (i32.const 0)))"#;
    assert!(load(&wat::parse_str(silent).unwrap()).is_ok());
    let message = refused(crate::test_support::MISBEHAVE);
    assert!(message.contains("load it with `module: PATH`"), "{message}");
}

/// `module` with a `kubewarden_metadata` section holding `json`.
fn annotated(module: &[u8], json: &str) -> Vec<u8> {
    let mut module = module.to_vec();
    wasm_encoder::CustomSection {
        name: "kubewarden_metadata".into(),
        data: json.as_bytes().into(),
    }
    .append_to(&mut module);
    module
}

#[test]
fn the_metadata_section_is_read_and_held_to() {
    let module = answering(r#"{"accepted":true}"#);
    assert!(load(&module).unwrap().kubewarden_metadata().is_none());
    let json = r#"{"protocolVersion":"v1","mutating":true,"executionMode":"kubewarden-wapc",
        "contextAwareResources":[{"apiVersion":"v1","kind":"Namespace"}],"rules":[],"annotations":{}}"#;
    let pre = load(&annotated(&module, json)).unwrap();
    let metadata = pre.kubewarden_metadata().unwrap();
    assert!(metadata.mutating);
    assert_eq!(metadata.context_aware_resources[0].kind, "Namespace");
    for (json, expected) in [
        (
            r#"{"executionMode":"opa"}"#,
            "load its bundle with `module: opa:PATH`",
        ),
        (r#"{"executionMode":"wasi"}"#, "must be a waPC policy"),
        (r#"{"policyType":"raw"}"#, "only policies of Kubernetes"),
        ("{", "not Kubewarden's metadata"),
    ] {
        match load(&annotated(&module, json)) {
            Err(Error::Kubewarden(message)) => assert!(message.contains(expected), "{message}"),
            other => panic!("{json}: expected a refusal, got {:?}", other.map(|_| ())),
        }
    }
}
