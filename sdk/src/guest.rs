//! Generated bindings for the `tollgate:policy` world and the glue that
//! [`crate::export!`] uses. Compiled only for Wasm targets.

wit_bindgen::generate!({
    world: "policy",
    path: "wit",
    pub_export_macro: true,
    default_bindings_module: "tollgate_sdk::guest",
});

use tollgate::policy::log as host_log;
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
