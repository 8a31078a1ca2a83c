//! `tollgate bench`: how long one policy takes on one request, as `kwctl
//! bench` and `gator bench` measure it: warm-up, samples, p50/p99 per
//! evaluation and of making a fresh instance; `--save` keeps the figures and
//! `--compare` fails when p50 regressed past a threshold.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::test::PolicyUnderTest;
use crate::policy::PolicySet;
use crate::policy::chain::no_deadline;
use crate::server::review;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    policies: super::PolicyArgs,
    /// The policy: `builtin:<name>`, a `.wasm` path, `opa:PATH`,
    /// `kubewarden:PATH`, or with `--config` the
    /// name of one of its policies (as configured there, context grants
    /// included).
    #[arg(long)]
    policy: String,
    /// Its settings, as JSON (without `--config`).
    #[arg(long, value_name = "JSON")]
    settings: Option<String>,
    /// The policy mutates (without `--config`).
    #[arg(long)]
    mutating: bool,
    /// The component is offered WASI (without `--config`).
    #[arg(long)]
    wasi: bool,
    /// The AdmissionReview to evaluate (JSON).
    #[arg(long, value_name = "FILE")]
    request: PathBuf,
    /// Evaluations before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Evaluations measured.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Write the figures to this file (JSON).
    #[arg(long, value_name = "FILE")]
    save: Option<PathBuf>,
    /// Compare with figures saved earlier; fail when p50 per evaluation is
    /// slower by more than `--threshold` percent.
    #[arg(long, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// Allowed slowdown for `--compare`, in percent.
    #[arg(long, default_value_t = 10.0)]
    threshold: f64,
}

/// What a run measured, in µs; what `--save` writes.
#[derive(Debug, Serialize, Deserialize)]
struct Figures {
    policy: String,
    request: String,
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    instantiation_p50_us: f64,
    instantiation_p99_us: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.samples > 0, "--samples must be at least 1");
    let config = if args.policies.config.is_some() {
        let mut config = args.policies.load_config()?;
        config.policies.retain(|p| p.name == args.policy);
        anyhow::ensure!(
            !config.policies.is_empty(),
            "the configuration has no policy named {:?}",
            args.policy
        );
        config
    } else {
        let settings = match &args.settings {
            Some(text) => serde_json::from_str(text).context("--settings is not JSON")?,
            None => serde_json::Value::Null,
        };
        PolicyUnderTest {
            module: Some(args.policy.clone()),
            settings,
            mutating: args.mutating,
            wasi: args.wasi,
            ..PolicyUnderTest::default()
        }
        .config(&std::env::current_dir()?, &args.request)?
    };
    let engine = super::offline_engine(args.policies.cache_dir())?;
    let context = args.policies.cluster_context(&config, None)?;
    let set = PolicySet::load(&config, &engine, context);
    if let Some((name, error)) = set.failures().next() {
        anyhow::bail!("policy {name:?} failed to load: {error}");
    }
    let body = std::fs::read(&args.request)
        .with_context(|| format!("reading {}", args.request.display()))?;
    let evaluate = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        let request = review::decode(&body)?;
        let outcome = futures::executor::block_on(set.review(&request, no_deadline()));
        std::hint::black_box(review::encode(&request.uid, &outcome));
        Ok(started.elapsed())
    };
    // A failure is what the policy would answer: measured, but said.
    let request = review::decode(&body)?;
    let outcome = futures::executor::block_on(set.review(&request, no_deadline()));
    if let Some(failed) = outcome.evaluations.iter().find(|e| e.reason.is_some()) {
        eprintln!(
            "warning: the policy fails on this request: {}",
            failed.message.as_deref().unwrap_or_default()
        );
    }
    for _ in 0..args.warmup {
        evaluate()?;
    }
    let mut times = (0..args.samples)
        .map(|_| evaluate())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let loaded = &set.policies()[0];
    let module = loaded.module.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut instantiations = (0..args.samples.min(500))
        .map(|_| module.time_instantiation(&loaded.settings, &loaded.limits))
        .collect::<Result<Vec<_>, _>>()?;
    let figures = Figures {
        policy: args.policy.clone(),
        request: args.request.display().to_string(),
        samples: args.samples,
        p50_us: percentile(&mut times, 0.50),
        p99_us: percentile(&mut times, 0.99),
        mean_us: micros(times.iter().sum::<Duration>()) / times.len() as f64,
        instantiation_p50_us: percentile(&mut instantiations, 0.50),
        instantiation_p99_us: percentile(&mut instantiations, 0.99),
    };
    println!(
        "{} on {}: {} samples after {} warm-up",
        figures.policy, figures.request, figures.samples, args.warmup
    );
    println!(
        "  per evaluation (decode, policy in a fresh instance, encode): p50 {:.1} µs, p99 {:.1} µs, mean {:.1} µs",
        figures.p50_us, figures.p99_us, figures.mean_us
    );
    let when = if module.makes_spares() {
        "done ahead by the spares thread, off the request path"
    } else {
        "set up as every evaluation does, inside it"
    };
    println!(
        "  making a fresh instance ({when}): p50 {:.1} µs, p99 {:.1} µs",
        figures.instantiation_p50_us, figures.instantiation_p99_us
    );
    if let Some(path) = &args.save {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.compare {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let before: Figures = serde_json::from_str(&text)
            .with_context(|| format!("{} holds no figures", path.display()))?;
        if (before.policy.as_str(), before.request.as_str())
            != (figures.policy.as_str(), figures.request.as_str())
        {
            eprintln!(
                "warning: {} holds figures of {} on {}",
                path.display(),
                before.policy,
                before.request
            );
        }
        let change = |now: f64, then: f64| (now - then) / then * 100.0;
        println!(
            "  against {}: p50 {:.1} → {:.1} µs ({:+.1} %), p99 {:.1} → {:.1} µs ({:+.1} %)",
            path.display(),
            before.p50_us,
            figures.p50_us,
            change(figures.p50_us, before.p50_us),
            before.p99_us,
            figures.p99_us,
            change(figures.p99_us, before.p99_us)
        );
        let slower = change(figures.p50_us, before.p50_us);
        anyhow::ensure!(
            slower <= args.threshold,
            "p50 per evaluation regressed by {slower:.1} %, more than the threshold of {} %",
            args.threshold
        );
    }
    Ok(())
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// The `q` quantile of `times`, in µs (sorts them).
fn percentile(times: &mut [Duration], q: f64) -> f64 {
    times.sort();
    let index = ((times.len() as f64 * q) as usize).min(times.len() - 1);
    micros(times[index])
}
