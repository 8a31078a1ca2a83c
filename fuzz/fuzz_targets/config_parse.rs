//! Configuration parsing: any text gives a configuration or an error that
//! names the file, never a panic; what parses has valid, unique names.

#![no_main]

use std::collections::HashSet;
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use tollgate::policy::Config;

fuzz_target!(|text: &str| {
    match Config::parse(text, "fuzz.yaml", PathBuf::from("/etc/tollgate")) {
        Ok(config) => {
            let mut names = HashSet::new();
            for policy in &config.policies {
                assert!(names.insert(policy.name.clone()), "duplicate {}", policy.name);
                assert!(!policy.matches.kinds.is_empty() && !policy.matches.api_groups.is_empty());
                assert!(!policy.matches.operations.is_empty());
            }
        }
        Err(error) => assert!(error.to_string().starts_with("fuzz.yaml")),
    }
});
