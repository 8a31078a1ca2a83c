//! Builds policy crates into WebAssembly components, for build scripts (the
//! `tollgate` binary embeds its built-in policies this way) and tooling.
//!
//! A policy crate is compiled for `wasm32-unknown-unknown` and the core
//! module is encoded as a component with `wit-component`. That target, not
//! `wasm32-wasip2`, because a wasip2 build imports WASI even when the policy
//! uses none of it, and instantiating those imports doubles the per-request
//! instantiation cost (see `docs/abi.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Rust target policies are compiled for.
pub const TARGET: &str = "wasm32-unknown-unknown";

/// The cargo profile (defined in the workspace) policies are compiled with.
pub const PROFILE: &str = "wasm-policy";

/// Initial linear memory of a policy module.
pub const INITIAL_MEMORY_BYTES: usize = 4 << 20;

/// One policy crate to build.
#[derive(Debug, Clone)]
pub struct Crate {
    /// Package name (`image-registries`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// Every crate directly inside `dir` (a folder with a `Cargo.toml`), sorted
/// by name.
///
/// # Errors
///
/// When `dir` cannot be read.
pub fn crates_in(dir: &Path) -> Result<Vec<Crate>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut crates: Vec<Crate> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|dir| Crate {
            name: dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            dir,
        })
        .collect();
    crates.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(crates)
}

/// Compiles `crates` (members of the workspace at `workspace`) in one cargo
/// call into `target_dir`, encodes each as a component, and writes
/// `<out_dir>/<name>.wasm`. Returns the written paths, in order.
///
/// # Errors
///
/// A failed compilation (with cargo's output), a missing Rust target (with
/// the `rustup` command that adds it), or a module that is not a valid policy.
pub fn build(
    workspace: &Path,
    crates: &[Crate],
    target_dir: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    // Start with enough linear memory for a typical evaluation (the 1 MiB
    // shadow stack plus a few MiB of heap): a fresh instance then never calls
    // `memory.grow`, which costs the host an `mprotect` on every call. Pages
    // that are never touched cost nothing.
    let flags = format!("-C link-arg=--initial-memory={INITIAL_MEMORY_BYTES}");
    write_each(
        workspace,
        crates,
        target_dir,
        out_dir,
        &Build::policies(&flags),
        |module| componentize(&module),
    )
}

/// Compiles `crates` as plain core modules that import their linear memory
/// as `env.memory`, the way OPA's Wasm modules do (for testing the host's
/// `opa:` loader), and writes `<out_dir>/<name>.wasm`. Returns the written
/// paths, in order.
///
/// # Errors
///
/// A failed compilation (with cargo's output) or a missing Rust target.
pub fn build_core_modules(
    workspace: &Path,
    crates: &[Crate],
    target_dir: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    write_each(
        workspace,
        crates,
        target_dir,
        out_dir,
        &Build::policies("-C link-arg=--import-memory"),
        Ok,
    )
}

/// Compiles the Kubewarden policies `crates` of the cargo workspace at
/// `workspace` (one of their own, with its own `Cargo.lock`) for
/// `wasm32-wasip1` in release, as Kubewarden's policy template builds them,
/// and copies each module unchanged to `<out_dir>/<name>.wasm`. Returns the
/// written paths, in order.
///
/// # Errors
///
/// A failed compilation (with cargo's output) or a missing Rust target.
pub fn build_kubewarden_modules(
    workspace: &Path,
    crates: &[Crate],
    target_dir: &Path,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let build = Build {
        target: "wasm32-wasip1",
        profile: "release",
        flags: String::new(),
        locked: true,
    };
    write_each(workspace, crates, target_dir, out_dir, &build, Ok)
}

/// How crates are compiled: for which target, with which cargo profile and
/// extra `rustc` flags, and whether the workspace's lock file is binding.
struct Build<'a> {
    target: &'a str,
    profile: &'a str,
    flags: String,
    locked: bool,
}

impl Build<'_> {
    /// A policy build of ours, for [`TARGET`] with [`PROFILE`].
    fn policies(flags: &str) -> Build<'static> {
        Build {
            target: TARGET,
            profile: PROFILE,
            // No entropy source in the sandbox: a policy that asks for
            // random bytes (Rego's `rand.intn`, `uuid.rfc4122`) gets an
            // error, so an admission never depends on chance.
            flags: format!("{flags} --cfg getrandom_backend=\"unsupported\""),
            locked: false,
        }
    }
}

/// Compiles `crates` as `build` says, turns each module into what `finish`
/// makes of it, and writes that to `<out_dir>/<name>.wasm`.
fn write_each(
    workspace: &Path,
    crates: &[Crate],
    target_dir: &Path,
    out_dir: &Path,
    build: &Build,
    finish: impl Fn(Vec<u8>) -> Result<Vec<u8>, String>,
) -> Result<Vec<PathBuf>, String> {
    compile(workspace, crates, target_dir, build)?;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    crates
        .iter()
        .map(|krate| {
            let module_path = target_dir
                .join(build.target)
                .join(build.profile)
                .join(format!("{}.wasm", krate.name.replace('-', "_")));
            let module = std::fs::read(&module_path)
                .map_err(|e| format!("cannot read {}: {e}", module_path.display()))?;
            let bytes = finish(module).map_err(|e| format!("{}: {e}", krate.name))?;
            let path = out_dir.join(format!("{}.wasm", krate.name));
            std::fs::write(&path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// Runs one `cargo build` of `crates` as `build` says.
fn compile(
    workspace: &Path,
    crates: &[Crate],
    target_dir: &Path,
    build: &Build,
) -> Result<(), String> {
    let target = build.target;
    ensure_target(target);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "--profile",
            build.profile,
            "--target",
            target,
            "--target-dir",
        ])
        .arg(target_dir);
    if build.locked {
        command.arg("--locked");
    }
    for krate in crates {
        command.args(["-p", &krate.name]);
    }
    // The outer build's settings are for the host, not for Wasm.
    for variable in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_LLVM_COV",
        "LLVM_PROFILE_FILE",
    ] {
        command.env_remove(variable);
    }
    if !build.flags.is_empty() {
        let variable = format!(
            "CARGO_TARGET_{}_RUSTFLAGS",
            target.to_uppercase().replace('-', "_")
        );
        command.env(variable, &build.flags);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("may not be installed")
            || stderr.contains("can't find crate for `core`")
        {
            format!("\nhint: run `rustup target add {target}`")
        } else {
            String::new()
        };
        return Err(format!(
            "building policies for {target} failed:\n{stderr}{hint}"
        ));
    }
    Ok(())
}

/// Adds the Wasm `target` with rustup when it is missing, so that a fresh
/// machine with only the Rust toolchain builds (and `cargo install` works).
/// Without rustup, the build's own error says what to install.
fn ensure_target(target: &str) {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(rustc).args(["--print", "sysroot"]).output();
    let installed = sysroot.is_ok_and(|out| {
        let root = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Path::new(&root).join("lib/rustlib").join(target).exists()
    });
    if !installed {
        // Best effort: a failure surfaces as the compiler's clear error below.
        let _ = Command::new("rustup")
            .args(["target", "add", target])
            .status();
    }
}

/// Encodes a core module (with the component-type section that
/// `wit-bindgen` embeds) as a component.
///
/// # Errors
///
/// When the module lacks the section or does not fit its world.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| format!("not a policy module: {e:#}"))
}
