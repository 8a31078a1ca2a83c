//! The `tollgate` command line: `serve` (the webhook), `run` (offline
//! evaluation of AdmissionReviews) and `compile` (the child process that
//! compiles a component for the server's module cache).

mod compile;
mod run;
mod serve;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::policy::Config;

/// Tollgate: a Kubernetes admission webhook whose policies are WebAssembly
/// components.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(serve::Args),
    /// Evaluate AdmissionReview files offline, as the apiserver's mutating
    /// and validating calls would, and print the responses.
    Run(run::Args),
    /// Compile a component read from standard input into an artifact on
    /// standard output (used by `serve` to keep the compiler out of its
    /// memory).
    #[command(hide = true)]
    Compile,
}

/// Options shared by the commands that load policies.
#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Configuration file (YAML); without it, the embedded default
    /// configuration runs the built-in policies.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: Option<PathBuf>,
    /// Directory of compiled policy artifacts (created if missing).
    #[arg(long, env = "TOLLGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
}

impl PolicyArgs {
    fn load_config(&self) -> anyhow::Result<Config> {
        Ok(match &self.config {
            Some(path) => Config::from_file(path)?,
            None => crate::builtin::default_config()
                .context("the embedded default configuration is invalid")?,
        })
    }

    fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
        base.map_or_else(
            || PathBuf::from("tollgate-cache"),
            |base| base.join("tollgate"),
        )
    }
}

/// Runs the command line.
///
/// # Errors
///
/// Whatever the chosen command reports; `main` prints it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Run(args) => run::run(args),
        Command::Compile => compile::run(),
    }
}
