//! Builds the test-only policies (`tests/policies/*`) into components for the
//! end-to-end tests, with the OPA ABI modules (`tests/opa-modules/*`) and the
//! Kubewarden policies (`tests/kubewarden-policies/*`, a workspace of their
//! own) beside them, and tells the tests where they are (`TEST_POLICIES_DIR`).

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    let out_dir =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("policies");
    for watched in [
        "tests/policies",
        "tests/opa-modules",
        "tests/kubewarden-policies",
        "sdk/src",
        "sdk/wit",
    ] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let crates = tollgate_sdk_build::crates_in(&workspace.join("tests/policies"))
        .unwrap_or_else(|e| panic!("{e}"));
    tollgate_sdk_build::build(
        &workspace,
        &crates,
        &workspace.join("target/wasm-policies"),
        &out_dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // OPA ABI core modules, beside them.
    let opa_crates = tollgate_sdk_build::crates_in(&workspace.join("tests/opa-modules"))
        .unwrap_or_else(|e| panic!("{e}"));
    tollgate_sdk_build::build_core_modules(
        &workspace,
        &opa_crates,
        &workspace.join("target/wasm-opa"),
        &out_dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Kubewarden policies, built with Kubewarden's SDK as its template does;
    // their suites find them in target/wasm-kubewarden.
    let kubewarden = workspace.join("tests/kubewarden-policies");
    let kubewarden_crates =
        tollgate_sdk_build::crates_in(&kubewarden).unwrap_or_else(|e| panic!("{e}"));
    tollgate_sdk_build::build_kubewarden_modules(
        &kubewarden,
        &kubewarden_crates,
        &workspace.join("target/wasm-kubewarden"),
        &out_dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    println!("cargo:rustc-env=TEST_POLICIES_DIR={}", out_dir.display());
}
