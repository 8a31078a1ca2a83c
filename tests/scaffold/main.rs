//! `tollgate policy new` and `tollgate policy build`: a scaffolded policy
//! builds, and its unit tests and suite pass, in Rust and in Python (with
//! the Python example). A test binary of its own, so that its nested builds
//! (cargo, componentize-py) never run beside the timed end-to-end tests
//! (cargo runs test binaries one after another).

mod python;

use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tollgate_e2e::{binary, workspace};

/// One test at a time: a suite's evaluations have deadlines, and another
/// test's build (cargo, componentize-py) beside them would starve them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for the other tests of this binary to end.
fn turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `tollgate ARGS`; its output, stdout then stderr, when it succeeded.
fn tollgate(args: &[&str]) -> Result<String, String> {
    let output = Command::new(binary()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `tollgate test` on `path`, with the end-to-end tests' module cache.
fn suite(path: &std::path::Path) -> Result<String, String> {
    let cache = workspace().join("target/e2e-module-cache");
    tollgate(&[
        "test",
        "--cache-dir",
        cache.to_str().unwrap(),
        path.to_str().unwrap(),
    ])
}

#[test]
fn a_scaffolded_policy_builds_and_its_tests_and_suite_pass() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let tollgate =
        |args: &[&str]| tollgate(args).unwrap_or_else(|text| panic!("tollgate {args:?}: {text}"));
    let sdk = workspace().join("sdk");
    tollgate(&[
        "policy",
        "new",
        "team-labels",
        "--sdk",
        sdk.to_str().unwrap(),
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let project = dir.path().join("team-labels");
    // The workspace's lock and Wasm target directory: the project's
    // dependencies resolve to the versions the built-ins were compiled
    // with, and are not compiled again.
    std::fs::copy(workspace().join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
    let wasm_target = workspace().join("target/wasm-policies");
    let built = tollgate(&[
        "policy",
        "build",
        project.to_str().unwrap(),
        "--target-dir",
        wasm_target.to_str().unwrap(),
    ]);
    assert!(
        built.contains("target/tollgate/team-labels.wasm"),
        "{built}"
    );

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let tests = Command::new(cargo)
        .arg("test")
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", workspace().join("target/scaffold"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&tests.stdout);
    assert!(
        tests.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&tests.stderr)
    );
    assert!(stdout.contains("test result: ok. 3 passed"), "{stdout}");

    let suite = suite(&project).unwrap_or_else(|text| panic!("{text}"));
    assert!(suite.contains("2 passed, 0 failed (1 suites)\n"), "{suite}");
    println!("tollgate policy new: scaffold built, 3 unit tests and 2 suite cases pass");
}
