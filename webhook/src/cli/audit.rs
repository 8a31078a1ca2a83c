//! `tollgate audit`: `scan` existing objects into reports, `verify` a
//! decision log.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::audit::cluster::{self, Cluster, Kube};
use crate::audit::format::{self, Format};
use crate::audit::report::{self, Report};
use crate::audit::seal::Key;
use crate::audit::{scan, verify};
use crate::context::snapshot::{self, Snapshot, Unreadable};
use crate::context::store::Incoming;
use crate::context::{Context, Provider, ledger};
use crate::engine::Engine;
use crate::policy::matcher::Index;
use crate::policy::{Config, PolicySet};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Evaluate existing objects against the configured policies, as the
    /// webhook would for a CREATE but without side effects, and write
    /// reports.
    Scan(ScanArgs),
    /// Check a decision log's hash chain across its rotated files; name the
    /// first line that was edited, removed, inserted or reordered.
    Verify {
        /// The log's files, oldest first (or the current file alone: its
        /// rotated files FILE.1, FILE.2, … are found beside it).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The key the log was written with (`serve --decision-log-key`):
        /// every line's seal must match it. May repeat, when the key was
        /// rotated during the log's life.
        #[arg(long = "key", value_name = "FILE")]
        keys: Vec<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    #[command(flatten)]
    policies: super::PolicyArgs,
    /// Manifests to scan: files, directories, multi-document YAML,
    /// `kubectl get -o yaml` lists. They are also the cluster context of
    /// context-aware policies, unless --context is given.
    #[arg(long, num_args = 1.., required_unless_present = "cluster", conflicts_with = "cluster")]
    manifests: Vec<PathBuf>,
    /// Scan the live cluster (kubeconfig or in-cluster service account):
    /// every listable kind some policy matches, in pages.
    #[arg(long)]
    cluster: bool,
    /// Report formats, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "html,md,json,junit,policyreport"
    )]
    format: Vec<Format>,
    /// Directory the reports are written to.
    #[arg(long, default_value = "tollgate-report")]
    out: PathBuf,
    /// With --cluster: apply one PolicyReport / ClusterPolicyReport per
    /// object (server-side apply) and delete Tollgate's reports of objects
    /// that no longer exist.
    #[arg(long, requires = "cluster")]
    write_reports: bool,
    /// Threads evaluating objects (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Exit with status 1 when any object fails a policy or a policy errors.
    #[arg(long)]
    fail_on_violations: bool,
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Scan(args) => scan_command(args),
        Command::Verify { files, keys } => verify_command(&files, &keys),
    }
}

fn verify_command(files: &[PathBuf], keys: &[PathBuf]) -> anyhow::Result<()> {
    let keys = keys
        .iter()
        .map(|k| Key::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    let intact = verify::verify(files, &keys)
        .map_err(|broken| anyhow::anyhow!("the decision log was tampered with: {broken}"))?;
    let range = intact.seq.map_or_else(String::new, |(first, last)| {
        format!(", seq {first} to {last}")
    });
    let seals = match (keys.len(), intact.sealed) {
        (1, _) => " and every line's seal matches the key",
        (2.., _) => " and every line's seal matches one of the keys",
        (0, 0) => "",
        (0, _) => "; its lines are sealed: pass --key to check the seals",
    };
    println!(
        "ok: {} lines in {} file(s){range}: the hash chain is intact{seals}",
        intact.lines, intact.files
    );
    Ok(())
}

/// Where the objects come from, and the context they are evaluated in.
struct Source {
    description: String,
    objects: Vec<Incoming>,
    /// Documents of the manifests that are not objects: reported as errors.
    unreadable: Vec<Unreadable>,
    provider: Box<dyn Provider>,
    cluster: Option<Kube>,
}

fn source(args: &ScanArgs, config: &Config) -> anyhow::Result<Source> {
    if args.cluster {
        let kube = Kube::connect(args.policies.kubeconfig.as_deref())?;
        // The kinds some policy's match rules select, and no others.
        let rules = Index::build(
            config
                .policies
                .iter()
                .enumerate()
                .map(|(i, p)| (i, &p.matches)),
        );
        let objects = kube
            .objects(&|group, kind| !rules.candidates(group, kind).is_empty())
            .map_err(anyhow::Error::msg)?;
        let provider = Box::new(kube.live());
        return Ok(Source {
            description: "cluster".into(),
            objects,
            unreadable: Vec::new(),
            provider,
            cluster: Some(kube),
        });
    }
    let snapshot::Documents {
        objects,
        unreadable,
    } = snapshot::read(&args.manifests).map_err(anyhow::Error::msg)?;
    for document in &unreadable {
        eprintln!("warning: {document}");
    }
    let description = format!("manifests: {}", snapshot::describe(&args.manifests));
    let provider: Box<dyn Provider> = if !args.policies.context.is_empty() {
        Box::new(Snapshot::load(&args.policies.context).map_err(anyhow::Error::msg)?)
    } else if config.context_kinds().is_empty() {
        // No policy reads context: no copy of the objects to keep.
        Box::new(Snapshot::new(description.clone(), Vec::new()))
    } else {
        Box::new(Snapshot::new(description.clone(), objects.clone()))
    };
    Ok(Source {
        description,
        objects,
        unreadable,
        provider,
        cluster: None,
    })
}

fn engine(args: &ScanArgs) -> anyhow::Result<Engine> {
    super::offline_engine(args.policies.cache_dir())
}

fn scan_command(args: ScanArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = args.policies.load_config()?;
    let Source {
        description,
        objects,
        unreadable,
        provider,
        cluster,
    } = source(&args, &config)?;
    // Dry runs never reserve; the local ledger only answers the checks.
    let context = Arc::new(Context::new(
        Some(provider),
        Box::new(ledger::Local::default()),
    ));
    let set = PolicySet::load(&config, &engine(&args)?, context.clone());
    for (name, error) in set.failures() {
        eprintln!("warning: policy {name:?} failed to load: {error}");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while let Err(pending) = context.status() {
        if !context.available() || Instant::now() > deadline {
            eprintln!("warning: {pending}");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let mut scanned = std::thread::scope(|scope| {
        scope.spawn(|| progress(&done, &finished, objects.len()));
        let scanned = scan::scan(&set, &objects, workers, &done);
        finished.store(true, Ordering::Release);
        scanned
    });
    scanned.extend(unreadable.iter().map(scan::unreadable));
    let policies = config
        .policies
        .iter()
        .map(|p| {
            let metadata = p.metadata();
            report::Policy {
                name: p.name.clone(),
                module: p.module.clone(),
                mode: p.mode.as_str().to_owned(),
                severity: metadata.severity,
                category: metadata.category,
                controls: metadata.controls,
            }
        })
        .collect();
    let report = Report::new(description, policies, scanned);
    let files = format::write(&report, &args.format, &args.out)
        .with_context(|| format!("writing reports to {}", args.out.display()))?;
    let t = report.summary.total;
    eprintln!(
        "scanned {} objects in {:.1?}: {} fail, {} warn, {} error, {} pass",
        report.summary.objects,
        started.elapsed(),
        t.fail,
        t.warn,
        t.error,
        t.pass
    );
    for file in files {
        println!("{}", file.display());
    }
    if args.write_reports
        && let Some(kube) = &cluster
    {
        let written = cluster::write_reports(kube, &report)?;
        eprintln!(
            "policy reports: {} applied, {} of objects that no longer exist deleted",
            written.applied, written.deleted
        );
    }
    if args.fail_on_violations && t.fail + t.error > 0 {
        anyhow::bail!("{} violation(s) and {} error(s)", t.fail, t.error);
    }
    Ok(())
}

/// A progress bar on a terminal; plain lines (every tenth) otherwise.
fn progress(done: &AtomicUsize, finished: &AtomicBool, total: usize) {
    let tick = Duration::from_millis(100);
    if std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} objects {elapsed} (eta {eta})",
            )
            .expect("a valid template"),
        );
        while !finished.load(Ordering::Acquire) {
            bar.set_position(done.load(Ordering::Relaxed) as u64);
            std::thread::sleep(tick);
        }
        bar.finish_and_clear();
        return;
    }
    let step = (total / 10).max(1);
    let mut next = step;
    while !finished.load(Ordering::Acquire) {
        let now = done.load(Ordering::Relaxed);
        if now >= next && now < total {
            eprintln!("scanned {now}/{total} objects");
            next = (now / step + 1) * step;
        }
        std::thread::sleep(tick);
    }
}
