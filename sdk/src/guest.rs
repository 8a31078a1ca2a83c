//! Generated bindings for the `tollgate:policy` world and the glue that
//! [`crate::export!`] uses. Compiled only for Wasm targets.
//!
//! Policies target `prepared-policy` (`policy` plus the `index` and
//! `prepare` exports); the host also runs components built for plain
//! `policy`. Imports a policy never calls are left out of its component, so
//! a policy that reads no cluster context does not import it.

wit_bindgen::generate!({
    world: "prepared-policy",
    path: "wit",
    pub_export_macro: true,
    default_bindings_module: "tollgate_sdk::guest",
});

use tollgate::policy::context as host_context;
use tollgate::policy::log as host_log;
use tollgate::policy::quota as host_quota;
use tollgate::policy::types::Verdict as WitVerdict;

/// Converts the SDK's result into the world's verdict type.
pub fn to_wit(result: crate::Result<crate::Verdict>) -> Result<WitVerdict, String> {
    let verdict = result.map_err(|e| e.0)?;
    Ok(WitVerdict {
        allowed: verdict.allowed,
        message: verdict.message,
        code: verdict.code,
        warnings: verdict.warnings,
        audit_annotations: verdict.audit_annotations,
        mutated_object: verdict.mutated_object,
    })
}

/// Forwards a log line to the host.
pub fn log(level: crate::log::Level, message: &str) {
    use crate::log::Level;
    let level = match level {
        Level::Trace => host_log::Level::Trace,
        Level::Debug => host_log::Level::Debug,
        Level::Info => host_log::Level::Info,
        Level::Warn => host_log::Level::Warn,
        Level::Error => host_log::Level::Error,
    };
    host_log::log(level, message);
}

/// Converts the SDK's index entries into the world's tuples.
pub fn to_wit_entries(
    result: crate::Result<Vec<crate::quota::Entry>>,
) -> Result<Vec<(String, String, u64)>, String> {
    Ok(result
        .map_err(|e| e.0)?
        .into_iter()
        .map(|e| (e.key, e.resource, e.amount))
        .collect())
}

/// `context.get`.
pub fn context_get(
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, String> {
    host_context::get(api_version, kind, namespace, name)
}

/// `context.list`.
pub fn context_list(
    api_version: &str,
    kind: &str,
    namespace: &str,
    selector: &str,
) -> Result<String, String> {
    host_context::list(api_version, kind, namespace, selector)
}

/// `quota.usage`.
pub fn quota_usage(keys: &[String]) -> Result<Vec<crate::quota::Usage>, String> {
    Ok(host_quota::usage(keys)?
        .into_iter()
        .map(|u| crate::quota::Usage {
            key: u.key,
            resource: u.resource,
            amount: u.amount,
            objects: u.objects,
        })
        .collect())
}

/// `quota.reserve`.
pub fn quota_reserve(claims: &[crate::quota::Claim]) -> Result<crate::quota::Decision, String> {
    let pairs = |m: &std::collections::BTreeMap<String, u64>| -> Vec<(String, u64)> {
        m.iter().map(|(k, v)| (k.clone(), *v)).collect()
    };
    let claims: Vec<host_quota::Claim> = claims
        .iter()
        .map(|c| host_quota::Claim {
            scope: c.scope.clone(),
            asks: pairs(&c.asks),
            limits: pairs(&c.limits),
            usage: pairs(&c.usage),
        })
        .collect();
    let decision = host_quota::reserve(&claims)?;
    Ok(crate::quota::Decision {
        admitted: decision.admitted,
        held: decision
            .held
            .into_iter()
            .map(|h| crate::quota::Held {
                scope: h.scope,
                resource: h.resource,
                amount: h.amount,
            })
            .collect(),
    })
}
