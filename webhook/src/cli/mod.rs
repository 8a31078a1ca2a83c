//! The `tollgate` command line: `serve` (the webhook), `run` (offline
//! evaluation of AdmissionReviews), `test` and `bench` (policy suites and
//! figures), `policy` (new policy projects and their components), `certs`
//! and `webhooks` (what an install needs), `audit` (scans, reports and the
//! decision log's check) and
//! `compile` (the child process that compiles a component for the server's
//! module cache).

mod audit;
mod bench;
mod certs;
mod compile;
mod policy;
mod run;
mod serve;
mod serving;
mod test;
mod webhooks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::context::live::{self, Live};
use crate::context::shared::{ConfigMaps, Shared};
use crate::context::snapshot::Snapshot;
use crate::context::{Context, Ledger, ledger};
use crate::engine::{self, Compiler, Engine};
use crate::policy::Config;
use crate::policy::config::LedgerBackend;
use crate::policy::source::{self, Source, Text};

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
    Serve(Box<serve::Args>),
    /// Evaluate AdmissionReview files offline, as the apiserver's mutating
    /// and validating calls would, and print the responses.
    Run(run::Args),
    /// Run policy test suites (`tollgate-test.yaml`): one line per case, a
    /// summary, and a failing exit status when a case fails.
    Test(test::Args),
    /// Measure one policy on one request: p50/p99 per evaluation and of
    /// making a fresh instance; save the figures or compare with saved ones.
    Bench(bench::Args),
    /// Write policies: scaffold a project, build its component.
    #[command(subcommand)]
    Policy(policy::Command),
    /// Make a CA and serving certificate for the webhook's Service, as
    /// files and a Secret manifest.
    Certs(certs::Args),
    /// Print the webhook configurations that register the policies.
    Webhooks(webhooks::Args),
    /// Audit: scan existing objects into reports; verify the decision log.
    #[command(subcommand)]
    Audit(audit::Command),
    /// Compile a component read from standard input into an artifact on
    /// standard output (used by `serve` to keep the compiler out of its
    /// memory).
    #[command(hide = true)]
    Compile,
}

/// Options shared by the commands that load policies.
#[derive(Debug, clap::Args)]
struct PolicyArgs {
    /// Configuration file (YAML), or `configmap:NAMESPACE/NAME` (its key
    /// `config.yaml`, read through the apiserver); `serve` watches either
    /// and reloads it. Without it, the embedded default configuration runs
    /// the built-in policies.
    #[arg(
        long,
        env = "TOLLGATE_CONFIG",
        value_name = "FILE|configmap:NAMESPACE/NAME"
    )]
    config: Option<String>,
    /// Directory of compiled policy artifacts (created if missing).
    #[arg(long, env = "TOLLGATE_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Cluster objects for context-aware policies, read from manifests
    /// (YAML or JSON files, `kubectl get -o yaml` lists, directories)
    /// instead of the cluster. May repeat.
    #[arg(long = "context", value_name = "PATH")]
    context: Vec<PathBuf>,
    /// Kubeconfig for the cluster; without it, kube-rs's own search
    /// (KUBECONFIG, ~/.kube/config, then the in-cluster service account).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
}

impl PolicyArgs {
    fn source(&self) -> anyhow::Result<Source> {
        Ok(Source::parse(self.config.as_deref())?)
    }

    /// The configuration's text: a file's, the embedded default's, or a
    /// ConfigMap's (read once, through the apiserver).
    fn read_config(&self) -> anyhow::Result<Text> {
        let source = self.source()?;
        if let Some(text) = source.read_local() {
            return Ok(text?);
        }
        let Source::ConfigMap { namespace, name } = &source else {
            unreachable!("read_local reads every other source");
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = live::client(self.kubeconfig.as_deref()).await?;
            anyhow::Ok(source::read_configmap(client, namespace, name).await?)
        })
    }

    fn load_config(&self) -> anyhow::Result<Config> {
        self.parse_config(&self.read_config()?)
    }

    fn parse_config(&self, text: &Text) -> anyhow::Result<Config> {
        let config = text.parse();
        if self.config.is_none() {
            return config.context("the embedded default configuration is invalid");
        }
        Ok(config?)
    }

    /// The cluster context: the snapshot given with `--context`, else the
    /// cluster (when `runtime` is given, for `serve`, and a kubeconfig or
    /// in-cluster account is found: a reload may add policies that read
    /// it), else none.
    fn cluster_context(
        &self,
        config: &Config,
        runtime: Option<&tokio::runtime::Handle>,
    ) -> anyhow::Result<Arc<Context>> {
        let ttl = Duration::from_secs(config.quota.reservation_ttl_seconds);
        let local = || -> Box<dyn Ledger> { Box::new(ledger::Local::new(ttl)) };
        if !self.context.is_empty() {
            let snapshot = Snapshot::load(&self.context).map_err(anyhow::Error::msg)?;
            return Ok(Arc::new(Context::new(Some(Box::new(snapshot)), local())));
        }
        let shared = config.quota.ledger == LedgerBackend::Apiserver;
        let needed = shared || !config.context_kinds().is_empty();
        let client = match runtime {
            Some(runtime) => {
                match runtime.block_on(live::client(self.kubeconfig.as_deref())) {
                    Ok(client) => Some(client),
                    // A kubeconfig named on purpose must work.
                    Err(error) if self.kubeconfig.is_some() => return Err(error.into()),
                    Err(error) => {
                        tracing::debug!("{error}");
                        None
                    }
                }
            }
            None => None,
        };
        let (Some(client), Some(runtime)) = (client, runtime) else {
            if shared && runtime.is_some() {
                anyhow::bail!(
                    "quota.ledger is apiserver but no cluster connection was found (kubeconfig or in-cluster service account)"
                );
            }
            if needed {
                tracing::warn!(
                    "no cluster context: context-aware policies will fail per their failurePolicy"
                );
            }
            return Ok(Arc::new(Context::new(None, local())));
        };
        let ledger: Box<dyn Ledger> = if shared {
            let backend = ConfigMaps::new(client.clone(), &config.quota.namespace);
            Box::new(Shared::new(backend, ttl, runtime.clone()))
        } else {
            local()
        };
        let live = Live::new(client, runtime.clone());
        Ok(Arc::new(Context::new(Some(Box::new(live)), ledger)))
    }

    fn cache_dir(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(default_cache_dir)
    }
}

/// The engine of the offline commands (`run`, `test`, `bench`, `audit`):
/// it compiles in this process, and evaluations are not bounded by slots.
fn offline_engine(cache_dir: PathBuf) -> anyhow::Result<Engine> {
    Ok(Engine::new(engine::Config {
        cache_dir,
        compiler: Compiler::InProcess,
        evaluations: None,
    })?)
}

/// Where compiled policies are cached when no directory is given:
/// `$XDG_CACHE_HOME/tollgate`, else `~/.cache/tollgate`.
fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")));
    base.map_or_else(
        || PathBuf::from("tollgate-cache"),
        |base| base.join("tollgate"),
    )
}

/// A Go duration (`5s`, `500ms`, `1m30s`, `8760h`), as flags take them.
fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::server::limits::parse_go_duration(text)
        .ok_or_else(|| format!("{text:?}: write a duration like 5s, 500ms or 1m30s"))
}

/// Runs the command line.
///
/// # Errors
///
/// Whatever the chosen command reports; `main` prints it.
pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Run(args) => run::run(args),
        Command::Test(args) => test::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Policy(command) => policy::run(command),
        Command::Certs(args) => certs::run(args),
        Command::Webhooks(args) => webhooks::run(args),
        Command::Audit(command) => audit::run(command),
        Command::Compile => compile::run(),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
