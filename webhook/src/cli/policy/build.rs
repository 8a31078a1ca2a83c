//! `tollgate policy build [DIR]`: a policy project compiled for Wasm and
//! encoded as a component, as the built-in policies are.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// `tollgate policy build` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy project: a folder with its Cargo.toml.
    #[arg(default_value = ".")]
    dir: PathBuf,
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
