//! A policy's output as the host reads it: any verdict is accepted or
//! refused with a reason, never a panic; an accepted one has annotation keys
//! the apiserver takes, unique, and an error status for a denial; a mutated
//! object is accepted only when it is a JSON object that keeps its identity.

#![no_main]

use std::collections::HashSet;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tollgate::engine::Verdict;
use tollgate::policy::output::{self, Identity};

#[derive(Debug, Arbitrary)]
struct Input {
    policy: String,
    allowed: bool,
    code: Option<u16>,
    annotations: Vec<(String, String)>,
    api_version: String,
    kind: String,
    name: String,
    namespace: String,
    mutated: String,
}

fuzz_target!(|input: Input| {
    let verdict = Verdict {
        allowed: input.allowed,
        code: input.code,
        audit_annotations: input.annotations.clone(),
        ..Verdict::default()
    };
    if output::check(&input.policy, &verdict).is_ok() {
        let mut keys = HashSet::new();
        for (key, _) in &input.annotations {
            assert!(keys.insert(key), "duplicate key {key:?} accepted");
            let full = format!("{}.{key}", input.policy);
            assert!(full.len() <= 63, "{full:?} accepted");
            assert!(!output::RESERVED_KEYS.contains(&key.as_str()));
        }
        if !input.allowed && let Some(code) = input.code {
            assert!((400..=599).contains(&code));
        }
    }
    let identity = Identity {
        api_version: input.api_version.as_str().into(),
        kind: &input.kind,
        name: &input.name,
        namespace: &input.namespace,
    };
    if output::check_mutation(&identity, &input.mutated).is_ok() {
        let value: serde_json::Value =
            serde_json::from_str(&input.mutated).expect("an accepted mutation is JSON");
        assert!(value.is_object());
        assert_eq!(value["kind"], input.kind.as_str());
        assert_eq!(value["apiVersion"], input.api_version.as_str());
    }
});
