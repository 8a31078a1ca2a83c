//! Policies written in Python, built with componentize-py from PyPI against
//! the `policy` world and run with the host's locked-down WASI (`wasi:
//! true`): the example (`examples/policies/python-team-labels`) and a
//! project `tollgate policy new --lang python` scaffolds, each through its
//! unit tests, `tollgate policy build` and its suite.

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate_e2e::workspace;

use crate::{suite, tollgate, turn};

/// Runs a project's unit tests, builds its component and runs its suite;
/// the component's path.
fn test_and_build(project: &Path) -> PathBuf {
    let unit = Command::new("python3")
        .current_dir(project)
        .args(["-m", "unittest"])
        .output()
        .unwrap();
    assert!(
        unit.status.success(),
        "{}",
        String::from_utf8_lossy(&unit.stderr)
    );
    // scripts/test installs it there.
    let componentize_py = workspace().join("target/py-venv/bin/componentize-py");
    let built = tollgate(&[
        "policy",
        "build",
        project.to_str().unwrap(),
        "--componentize-py",
        componentize_py.to_str().unwrap(),
    ]);
    assert!(built.is_ok(), "{built:?}");
    let passed = suite(project).unwrap_or_else(|text| panic!("{text}"));
    assert!(
        passed.ends_with("2 passed, 0 failed (1 suites)\n"),
        "{passed}"
    );
    let name = project.file_name().unwrap().to_str().unwrap();
    project.join(format!("target/tollgate/{name}.wasm"))
}

#[test]
fn the_python_example_passes_its_suite_and_needs_wasi_granted() {
    let _turn = turn();
    let component = test_and_build(&workspace().join("examples/policies/python-team-labels"));
    // Without `wasi: true` the component does not link, and says why.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tollgate-test.yaml"),
        format!(
            "policy:\n  module: {}\n  settings: {{requiredLabels: [team]}}\ncases:\n  - name: any\n    object: {{apiVersion: v1, kind: Pod, metadata: {{name: a}}}}\n    expect: {{allowed: true}}\n",
            component.display()
        ),
    )
    .unwrap();
    let refused = suite(dir.path()).unwrap_err();
    assert!(
        refused.contains("the component imports WASI: set `wasi: true`"),
        "{refused}"
    );
}

#[test]
fn a_scaffolded_python_policy_tests_builds_and_passes_its_suite() {
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let created = tollgate(&[
        "policy",
        "new",
        "team-labels",
        "--lang",
        "python",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert!(created.is_ok(), "{created:?}");
    test_and_build(&dir.path().join("team-labels"));
}
