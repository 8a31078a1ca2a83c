//! The policies shipped inside the binary (built from `policies/` by the
//! build script) and the embedded default configuration that runs them.

use std::path::PathBuf;

use crate::policy::config::{self, Config};

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

#[cfg(test)]
mod tests {
    use super::*;

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
