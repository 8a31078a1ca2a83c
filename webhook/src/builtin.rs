//! The policies shipped inside the binary (built from `policies/` by the
//! build script) and the embedded default configuration that runs them.

use std::path::PathBuf;

use crate::policy::config::{self, Config, Metadata, Severity};

include!(concat!(env!("OUT_DIR"), "/builtin_modules.rs"));

/// The embedded default configuration (`webhook/config/default.yaml`).
pub const DEFAULT_CONFIG: &str = include_str!("../config/default.yaml");

/// The embedded default configuration, parsed.
///
/// # Errors
///
/// Never in a released binary (a test parses it); a configuration error
/// otherwise.
pub fn default_config() -> Result<Config, config::Error> {
    Config::parse(
        DEFAULT_CONFIG,
        "<embedded default configuration>",
        PathBuf::new(),
    )
}

/// Report metadata of a built-in policy: what its violations mean to an
/// auditor. The controls are the CIS Kubernetes Benchmark (v1.9) sections
/// and NIST SP 800-53 controls the policy's rules implement.
pub fn metadata(name: &str) -> Option<Metadata> {
    let (severity, category, controls): (Severity, &str, &[&str]) = match name {
        "pod-security" => (
            Severity::High,
            "Pod Security",
            &["CIS-5.2", "NIST-800-53:AC-6", "NIST-800-53:CM-7"],
        ),
        "image-registries" => (
            Severity::High,
            "Supply Chain",
            &["CIS-5.5.1", "NIST-800-53:CM-7(5)", "NIST-800-53:SR-3"],
        ),
        "gpu-quota" => (
            Severity::Medium,
            "GPU Quota",
            &["NIST-800-53:SC-6", "NIST-800-53:AC-3"],
        ),
        "gpu-placement" => (Severity::Low, "GPU Scheduling", &["NIST-800-53:SC-6"]),
        // The templates decide what is checked; configure controls per entry.
        "gatekeeper" => (Severity::Medium, "OPA Gatekeeper", &[]),
        "network-guard" => (
            Severity::High,
            "Network Isolation",
            &["CIS-5.3.2", "NIST-800-53:SC-7", "NIST-800-53:AC-4"],
        ),
        "workload-priority" => (
            Severity::Medium,
            "Scheduling Fairness",
            &["NIST-800-53:SC-6", "NIST-800-53:AC-3", "NIST-800-53:AC-6"],
        ),
        "resource-defaults" => (
            Severity::Low,
            "Resource Management",
            &["CIS-5.7", "NIST-800-53:SC-6"],
        ),
        _ => return None,
    };
    Some(Metadata {
        severity,
        category: category.to_owned(),
        controls: controls.iter().map(|c| (*c).to_owned()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_report_metadata() {
        for name in NAMES {
            assert!(metadata(name).is_some(), "{name}");
        }
    }

    #[test]
    fn the_default_configuration_parses_and_names_only_builtins() {
        let config = default_config().unwrap();
        assert!(!config.policies.is_empty());
        for policy in &config.policies {
            let name = policy.module.strip_prefix("builtin:").unwrap();
            assert!(
                module(name).is_some_and(|bytes| bytes.starts_with(b"\0asm")),
                "{name}"
            );
        }
    }
}
