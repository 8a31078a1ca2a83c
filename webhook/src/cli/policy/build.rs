//! `tollgate policy build [DIR]`: a policy project compiled for Wasm and
//! encoded as a component: a Rust crate as the built-in policies are, a
//! Python project (`app.py`, `wit/policy.wit`) by componentize-py.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// `tollgate policy build` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy project: a folder with its Cargo.toml, or with `app.py`.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The componentize-py to build a Python policy with.
    #[arg(long, value_name = "PATH", default_value = "componentize-py")]
    componentize_py: PathBuf,
    /// Cargo's target directory for the Wasm build (`DIR/target` by
    /// default); projects that share one reuse compiled dependencies.
    #[arg(long, value_name = "DIR")]
    target_dir: Option<PathBuf>,
}

/// Builds the component into `DIR/target/tollgate/<name>.wasm`.
///
/// # Errors
///
/// No project there, or the build failed (with cargo's output).
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.dir.join("app.py").is_file() && !args.dir.join("Cargo.toml").exists() {
        return build_python(&args.dir, &args.componentize_py);
    }
    let name = package_name(&args.dir)?;
    // Absolute: cargo runs in the project, this process reads the result.
    let target_dir =
        std::path::absolute(args.target_dir.unwrap_or_else(|| args.dir.join("target")))?;
    let krate = tollgate_sdk_build::Crate {
        name,
        dir: args.dir.clone(),
    };
    let out_dir = args.dir.join("target/tollgate");
    let built = tollgate_sdk_build::build(&args.dir, &[krate], &target_dir, &out_dir)
        .map_err(anyhow::Error::msg)?;
    for path in built {
        println!("built {}", path.display());
    }
    Ok(())
}

/// Builds a Python project's component with componentize-py, named after
/// the project's folder.
fn build_python(dir: &Path, componentize_py: &Path) -> anyhow::Result<()> {
    let dir = std::path::absolute(dir)?;
    let name = dir
        .file_name()
        .and_then(|name| name.to_str())
        .context("the project's folder has no name")?;
    let out = dir.join("target/tollgate").join(format!("{name}.wasm"));
    std::fs::create_dir_all(out.parent().unwrap_or(&dir))?;
    let output = Command::new(componentize_py)
        .current_dir(&dir)
        .args(["-d", "wit", "-w", "policy", "componentize", "app", "-o"])
        .arg(&out)
        .output()
        .with_context(|| {
            format!(
                "cannot run {}: install it with `pip install componentize-py==0.25.1`, or name it with --componentize-py",
                componentize_py.display()
            )
        })?;
    anyhow::ensure!(
        output.status.success(),
        "componentize-py failed:\n{}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    println!("built {}", out.display());
    Ok(())
}

/// The project's package name, as cargo reads its manifest.
fn package_name(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    anyhow::ensure!(
        manifest.is_file(),
        "{} is not a policy project: it has no Cargo.toml (make one with `tollgate policy new`)",
        dir.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(
        output.status.success(),
        "{}: {}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    metadata["packages"][0]["name"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{}: cargo metadata names no package", manifest.display()))
}
