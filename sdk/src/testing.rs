//! Run a policy natively in `cargo test`: the same code paths as the Wasm
//! export glue (settings parsing, request parsing, dropping no-op
//! mutations), without building a component.

use serde_json::{Value, json};

use crate::{Policy, Result, Verdict};

/// Wraps an object in an AdmissionRequest for a CREATE in the object's
/// namespace, as JSON text.
pub fn review(object: Value) -> String {
    request("CREATE", object)
}

/// Wraps an object in an AdmissionRequest for `operation`, as JSON text.
pub fn request(operation: &str, object: Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    json!({
        "uid": "00000000-0000-0000-0000-000000000000",
        "kind": {"group": group, "version": version, "kind": object["kind"]},
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
        "operation": operation,
        "userInfo": {"username": "tester", "groups": ["system:authenticated"]},
        "object": object,
    })
    .to_string()
}

/// Validates settings as the host would at load.
///
/// # Errors
///
/// The policy's settings error.
pub fn validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    crate::run_validate_settings::<P>(settings)
}

/// Evaluates a request as the host would (settings validated first).
///
/// # Errors
///
/// A settings error or the policy's own error.
pub fn evaluate<P: Policy>(request: &str, settings: &str) -> Result<Verdict> {
    validate_settings::<P>(settings)?;
    crate::run_evaluate::<P>(request, settings)
}
