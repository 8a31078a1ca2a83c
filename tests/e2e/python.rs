//! A policy written in Python (`examples/policies/python-team-labels`),
//! built with componentize-py from PyPI against the `policy` world, run
//! through its suite with the host's locked-down WASI (`wasi: true`).

use std::path::PathBuf;
use std::process::Command;

use tollgate_e2e::workspace;

/// The example's component, built once per run.
fn build() -> PathBuf {
    let tool = workspace().join("target/py-venv/bin/componentize-py");
    assert!(
        tool.exists(),
        "{} is missing: scripts/test installs componentize-py there",
        tool.display()
    );
    let out = workspace().join("target/python-policies/python-team-labels.wasm");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let output = Command::new(tool)
        .current_dir(workspace().join("examples/policies/python-team-labels"))
        .args([
            "-d",
            "../../../sdk/wit",
            "-w",
            "policy",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "componentize-py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[test]
fn the_python_policy_passes_its_suite_and_needs_wasi_granted() {
    let component = build();
    let example = workspace().join("examples/policies/python-team-labels");
    let (ok, stdout, stderr) = crate::cli::test_command(&[example.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.ends_with("2 passed, 0 failed (1 suites)\n"),
        "{stdout}"
    );
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
    let (ok, stdout, stderr) = crate::cli::test_command(&[dir.path().to_str().unwrap()]);
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("the component imports WASI: set `wasi: true`"),
        "{stdout}{stderr}"
    );
}
