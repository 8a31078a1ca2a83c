//! Builds the built-in policies (`policies/*`) into components and generates
//! `builtin_modules.rs`, so that the binary carries them. The test-only
//! policies (`tests/policies/*`) are built in the same cargo call, for the
//! engine's unit tests; only `cfg(test)` code includes them.

use std::fmt::Write;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .expect("webhook/ is inside the workspace")
        .to_owned();
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    for watched in ["policies", "sdk/src", "sdk/wit", "Cargo.toml", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    for watched in ["tests/policies", "tests/opa-modules"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let crates = tollgate_sdk_build::crates_in(&workspace.join("policies"))
        .unwrap_or_else(|e| panic!("{e}"));
    let test_crates = tollgate_sdk_build::crates_in(&workspace.join("tests/policies"))
        .unwrap_or_else(|e| panic!("{e}"));
    let all: Vec<_> = crates.iter().chain(&test_crates).cloned().collect();
    let built = tollgate_sdk_build::build(
        &workspace,
        &all,
        &workspace.join("target/wasm-policies"),
        &out_dir.join("policies"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Core modules of OPA's ABI, for the `opa:` loader's unit tests.
    let opa_crates = tollgate_sdk_build::crates_in(&workspace.join("tests/opa-modules"))
        .unwrap_or_else(|e| panic!("{e}"));
    tollgate_sdk_build::build_core_modules(
        &workspace,
        &opa_crates,
        &workspace.join("target/wasm-opa"),
        &out_dir.join("opa"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut code = String::from(
        "/// Names of the built-in policies, for `builtin:<name>`.\npub const NAMES: &[&str] = &[",
    );
    for krate in &crates {
        write!(code, "{:?}, ", krate.name).expect("writing to a String");
    }
    code.push_str("];\n\n/// The component of a built-in policy.\npub fn module(name: &str) -> Option<&'static [u8]> {\n    match name {\n");
    for (krate, path) in crates.iter().zip(&built) {
        writeln!(
            code,
            "        {:?} => Some(include_bytes!({:?})),",
            krate.name,
            path.display().to_string()
        )
        .expect("writing to a String");
    }
    code.push_str("        _ => None,\n    }\n}\n");
    std::fs::write(out_dir.join("builtin_modules.rs"), code).expect("writing builtin_modules.rs");
}
