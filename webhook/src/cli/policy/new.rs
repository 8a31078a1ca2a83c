//! `tollgate policy new NAME`: a policy project that builds, with tests and
//! a suite that pass, to start from.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The files of a Rust project, with `{{name}}`, `{{type}}` and `{{sdk}}`
/// to fill.
const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("template/Cargo.toml.txt")),
    ("src/lib.rs", include_str!("template/lib.rs.txt")),
    (
        "tollgate-test.yaml",
        include_str!("template/tollgate-test.yaml.txt"),
    ),
    ("README.md", include_str!("template/README.md.txt")),
    (".gitignore", include_str!("template/gitignore.txt")),
];

/// The files of a Python project, with `{{name}}` to fill; the world it
/// targets is copied in for componentize-py.
const PYTHON: &[(&str, &str)] = &[
    ("rules.py", include_str!("template/python/rules.py.txt")),
    ("app.py", include_str!("template/python/app.py.txt")),
    (
        "test_rules.py",
        include_str!("template/python/test_rules.py.txt"),
    ),
    (
        "tollgate-test.yaml",
        include_str!("template/python/tollgate-test.yaml.txt"),
    ),
    ("README.md", include_str!("template/python/README.md.txt")),
    (".gitignore", include_str!("template/python/gitignore.txt")),
    (
        "wit/policy.wit",
        include_str!("../../../../sdk/wit/policy.wit"),
    ),
];

/// The language a policy is written in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with the `tollgate-sdk` crate.
    Rust,
    /// Python, built into a component by componentize-py.
    Python,
}

/// `tollgate policy new` arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy's name: lowercase letters, digits and '-', starting with a
    /// letter (also the project's folder and crate).
    name: String,
    /// The language of the policy.
    #[arg(long, value_enum, default_value = "rust")]
    lang: Lang,
    /// The SDK dependency of a Rust policy: a path to Tollgate's `sdk/`
    /// folder, or a version of the `tollgate-sdk` crate. By default, the SDK
    /// of the source this binary was built from, when it is still there.
    #[arg(long, value_name = "PATH|VERSION")]
    sdk: Option<String>,
    /// Where to create the project folder.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

/// Scaffolds the project.
///
/// # Errors
///
/// A bad name, a folder that exists and is not empty, no SDK to point at, or
/// a file that cannot be written.
pub fn run(args: Args) -> anyhow::Result<()> {
    check_name(&args.name)?;
    let (files, sdk, next) = match args.lang {
        Lang::Rust => (
            RUST,
            sdk_dependency(args.sdk.as_deref())?,
            "`cargo test` runs its tests",
        ),
        Lang::Python => (
            PYTHON,
            String::new(),
            "`python3 -m unittest` runs its tests",
        ),
    };
    let project = args.dir.join(&args.name);
    if project
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        anyhow::bail!("{} exists and is not empty", project.display());
    }
    for (path, template) in files {
        let text = template
            .replace("{{name}}", &args.name)
            .replace("{{type}}", &type_name(&args.name))
            .replace("{{sdk}}", &sdk);
        let path = project.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {}: {next}, `tollgate policy build` makes target/tollgate/{}.wasm, `tollgate test` runs its suite",
        project.display(),
        args.name
    );
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    anyhow::ensure!(
        valid,
        "{name:?}: a policy's name is 1 to 63 lowercase letters, digits and '-', starting with a letter (it names the policy in configurations)"
    );
    Ok(())
}

/// `my-policy` → `MyPolicy`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// The `tollgate-sdk = …` value in the project's Cargo.toml.
fn sdk_dependency(sdk: Option<&str>) -> anyhow::Result<String> {
    let is_version = |s: &str| s.chars().all(|c| c.is_ascii_digit() || c == '.') && !s.is_empty();
    let path = match sdk {
        Some(version) if is_version(version) => return Ok(format!("{version:?}")),
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk"),
    };
    let path = path
        .canonicalize()
        .ok()
        .filter(|path| path.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "no SDK at {}: give --sdk PATH (Tollgate's sdk/ folder) or --sdk VERSION",
                path.display()
            )
        })?;
    Ok(format!("{{ path = {:?} }}", path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crates_and_types() {
        assert_eq!(type_name("gpu-labels-2"), "GpuLabels2");
        assert!(check_name("gpu-labels").is_ok());
        for bad in ["", "Gpu", "1gpu", "gpu_labels", "gpu-", &"a".repeat(64)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_project_is_written_once_with_its_sdk() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let args = |name: &str| Args {
            name: name.into(),
            lang: Lang::Rust,
            sdk: Some(sdk.display().to_string()),
            dir: dir.path().to_owned(),
        };
        run(args("team-labels")).unwrap();
        let project = dir.path().join("team-labels");
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"team-labels\""), "{manifest}");
        assert!(manifest.contains(&format!(
            "tollgate-sdk = {{ path = {:?} }}",
            sdk.canonicalize().unwrap().display().to_string()
        )));
        let code = std::fs::read_to_string(project.join("src/lib.rs")).unwrap();
        assert!(code.contains("tollgate_sdk::export!(TeamLabels);"));
        assert!(!code.contains("{{"), "every placeholder filled");
        let again = run(args("team-labels")).unwrap_err().to_string();
        assert!(
            again.ends_with("team-labels exists and is not empty"),
            "{again}"
        );
        assert_eq!(sdk_dependency(Some("0.1.0")).unwrap(), "\"0.1.0\"");
        assert!(
            sdk_dependency(Some("/no/such/sdk"))
                .unwrap_err()
                .to_string()
                .starts_with("no SDK at /no/such/sdk")
        );
    }
}
