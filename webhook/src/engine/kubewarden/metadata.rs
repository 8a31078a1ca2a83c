//! The `kubewarden_metadata` custom section `kwctl annotate` writes into a
//! policy module: what the policy says about itself.

use serde::Deserialize;

/// The custom section's name.
const SECTION: &str = "kubewarden_metadata";

/// What the host reads from a policy's metadata; other fields are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Whether the policy may return a mutated object.
    #[serde(default)]
    pub mutating: bool,
    /// Kinds of cluster objects the policy reads through the host.
    #[serde(default)]
    pub context_aware_resources: Vec<Resource>,
    /// How the module is run: `kubewarden-wapc` (the default) is the only
    /// mode a `kubewarden:` module may have here.
    #[serde(default)]
    pub execution_mode: Option<String>,
    /// `kubernetes` (the default) or `raw` (arbitrary JSON, not admission).
    #[serde(default)]
    pub policy_type: Option<String>,
    /// The waPC protocol the policy speaks (`v1`).
    #[serde(default)]
    pub protocol_version: Option<String>,
}

/// One kind a context-aware policy reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `Pod`, `Namespace`, …
    pub kind: String,
}

/// The module's metadata, `None` when it carries none (a policy that was
/// never annotated).
///
/// # Errors
///
/// A module that cannot be parsed, or a section that is not the metadata's
/// JSON, or a mode or type this host cannot run.
pub fn read(module: &[u8]) -> Result<Option<Metadata>, String> {
    let mut found = None;
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| format!("not a Wasm module: {e}"))?;
        if let wasmparser::Payload::CustomSection(section) = payload
            && section.name() == SECTION
        {
            found = Some(section.data());
        }
    }
    let Some(data) = found else {
        return Ok(None);
    };
    let metadata: Metadata = serde_json::from_slice(data)
        .map_err(|e| format!("its {SECTION} section is not Kubewarden's metadata: {e}"))?;
    metadata.check()?;
    Ok(Some(metadata))
}

impl Metadata {
    /// Refuses what a waPC host cannot run, saying what can.
    fn check(&self) -> Result<(), String> {
        match self.execution_mode.as_deref() {
            None | Some("kubewarden-wapc") => {}
            Some(mode @ ("opa" | "gatekeeper")) => {
                return Err(format!(
                    "its metadata says executionMode {mode}: load its bundle with `module: opa:PATH` (Gatekeeper templates: `module: builtin:gatekeeper`)"
                ));
            }
            Some(mode) => {
                return Err(format!(
                    "its metadata says executionMode {mode}; a `kubewarden:` module must be a waPC policy (kubewarden-wapc)"
                ));
            }
        }
        if let Some(kind) = self.policy_type.as_deref()
            && kind != "kubernetes"
        {
            return Err(format!(
                "its metadata says policyType {kind}: only policies of Kubernetes admission requests can run here"
            ));
        }
        if let Some(version) = self.protocol_version.as_deref()
            && version != super::PROTOCOL
        {
            return Err(format!(
                "its metadata says protocolVersion {version}; the host speaks {}",
                super::PROTOCOL
            ));
        }
        Ok(())
    }
}
