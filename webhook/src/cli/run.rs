//! `tollgate run`: evaluate AdmissionReviews offline and print one response
//! review per request, as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::policy::PolicySet;
use crate::server::review;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    policies: super::PolicyArgs,
    /// An AdmissionReview JSON file, or a directory of them (`*.json`, in
    /// name order). May repeat.
    #[arg(long, required = true)]
    request: Vec<PathBuf>,
}

fn request_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading directory {}", path.display()))?
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

fn evaluate(policies: &PolicySet, path: &Path) -> anyhow::Result<Vec<u8>> {
    let body = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let request = review::decode(&body).with_context(|| format!("{}", path.display()))?;
    // Offline, nothing waits for the answer: each policy's own deadline
    // is the only one.
    let outcome =
        futures::executor::block_on(policies.review(&request, crate::policy::chain::no_deadline()));
    Ok(review::encode(&request.uid, &outcome))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.policies.load_config()?;
    let files = request_files(&args.request)?;
    let engine = super::offline_engine(args.policies.cache_dir())?;
    let context = args.policies.cluster_context(&config, None)?;
    let policies = PolicySet::load(&config, &engine, context);
    for (name, error) in policies.failures() {
        eprintln!("warning: policy {name:?} failed to load: {error}");
    }
    let mut stdout = std::io::stdout().lock();
    let mut failed = 0;
    for file in files {
        match evaluate(&policies, &file) {
            Ok(line) => {
                stdout.write_all(&line)?;
                stdout.write_all(b"\n")?;
            }
            Err(error) => {
                failed += 1;
                eprintln!("error: {error:#}");
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} request file(s) could not be evaluated");
    }
    Ok(())
}
