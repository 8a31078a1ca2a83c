//! `tollgate serve`: the webhook.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::serving;
use crate::audit::log::{self, DecisionLog, Fsync, WhenFull};
use crate::audit::seal::Key;
use crate::context::live;
use crate::engine::{self, Compiler, Engine};
use crate::policy::source::Source;
use crate::server::reload::{Loaded, Reloader};
use crate::server::{self, AppState, Limits, routes, tls};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0: a free port, named in the log).
    #[arg(long, default_value = "0.0.0.0:8443", env = "TOLLGATE_ADDR")]
    addr: SocketAddr,
    #[command(flatten)]
    policies: super::PolicyArgs,
    /// Address of the plain-HTTP probe port: /healthz, /readyz and
    /// /metrics, for kubelet and Prometheus (port 0: a free port, named in
    /// the log).
    #[arg(long, default_value = "0.0.0.0:8081", env = "TOLLGATE_PROBE_ADDR")]
    probe_addr: SocketAddr,
    #[command(flatten)]
    certs: serving::CertArgs,
    /// Require client certificates signed by this CA on the TLS port (the
    /// apiserver's, from its AdmissionConfiguration); probes are unaffected.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// On SIGTERM, how long to keep accepting while readiness reports false,
    /// so that Service endpoints drop this replica first.
    #[arg(long, default_value = "0s", value_parser = super::parse_duration)]
    shutdown_delay: Duration,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Append every decision as a hash-chained JSON line to this file
    /// (rotated by size), or to `stdout`.
    #[arg(long, value_name = "PATH|stdout")]
    decision_log: Option<String>,
    /// Decisions that may wait for the log's writer.
    #[arg(long, default_value_t = 8192)]
    decision_log_queue: usize,
    /// When the queue is full: wait (`block`, nothing lost) or drop the line
    /// and count it in /metrics (`drop`).
    #[arg(long, value_enum, default_value = "block")]
    decision_log_when_full: WhenFull,
    /// Rotate the decision log file once it would pass this many MiB.
    #[arg(long, default_value_t = 100)]
    decision_log_max_mb: u64,
    /// Seal every decision line with an HMAC-SHA256 under the key in this
    /// file (at least 32 bytes; e.g. a mounted Secret), so that `audit
    /// verify --key` detects rewrites by anyone without it.
    #[arg(long, value_name = "FILE", requires = "decision_log")]
    decision_log_key: Option<PathBuf>,
    /// When decision lines are synced to disk: after every batch (`batch`),
    /// after every batch with each answer waiting for its line (`answer`:
    /// nothing answered is lost in a crash), or never (`never`).
    #[arg(long, value_enum, default_value = "batch")]
    decision_log_fsync: Fsync,
    /// The longest any admission request may take; the apiserver's own
    /// `?timeout=` (less --timeout-margin) is used when shorter.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    request_timeout: Duration,
    /// Taken off the apiserver's `?timeout=` so the answer arrives in time.
    #[arg(long, default_value = "250ms", value_parser = super::parse_duration)]
    timeout_margin: Duration,
    /// Policy evaluations that may run at once (default: one per core);
    /// more wait, within their request's deadline.
    #[arg(long)]
    evaluation_threads: Option<usize>,
    /// Time a client has to finish its TLS handshake and send a request's
    /// headers; idle keep-alive connections close after it too.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    header_read_timeout: Duration,
    /// Time a client has to send a request's body.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    body_read_timeout: Duration,
    /// Connections served at once (more wait in the listen queue).
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// MiB of request bodies buffered at once, across all connections.
    #[arg(long, default_value_t = 256)]
    max_buffered_mb: usize,
    /// HTTP/2 streams one connection may have open.
    #[arg(long, default_value_t = 128)]
    max_concurrent_streams: u32,
}

impl Args {
    fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            max_connections: self.max_connections,
            max_buffered_bytes: self.max_buffered_mb << 20,
            max_request_timeout: self.request_timeout,
            timeout_margin: self.timeout_margin,
            evaluation_threads: self
                .evaluation_threads
                .unwrap_or(defaults.evaluation_threads),
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in log files.
        .with_ansi(std::io::stderr().is_terminal());
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    init_tracing(&args.log_format);
    let source = args.policies.source()?;
    let text = args.policies.read_config()?;
    let config = args.policies.parse_config(&text)?;
    let limits = args.limits();
    let engine = Engine::new(engine::Config {
        cache_dir: args.policies.cache_dir(),
        compiler: Compiler::Subprocess(
            std::env::current_exe().context("locating the tollgate binary")?,
        ),
        evaluations: Some(limits.evaluation_threads),
    })?;

    let decisions = match args.decision_log.as_deref() {
        None => None,
        Some(target) => Some(DecisionLog::open(log::Options {
            target: if target == "stdout" {
                log::Target::Stdout
            } else {
                log::Target::File(PathBuf::from(target))
            },
            queue: args.decision_log_queue,
            when_full: args.decision_log_when_full,
            max_bytes: args.decision_log_max_mb << 20,
            key: args
                .decision_log_key
                .as_deref()
                .map(Key::read)
                .transpose()?,
            fsync: args.decision_log_fsync,
        })?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let state = Arc::new(AppState::new(limits, decisions));
    // Probes first: they answer (not ready) while the certificate is
    // awaited and the policies load.
    let probes = runtime
        .block_on(tokio::net::TcpListener::bind(args.probe_addr))
        .with_context(|| format!("cannot listen on {} (--probe-addr)", args.probe_addr))?;
    let probe_addr = probes.local_addr().unwrap_or(args.probe_addr);
    tracing::info!(addr = %probe_addr, "listening (HTTP probes)");
    // They answer until the process ends, readiness false while draining.
    runtime
        .spawn(axum::serve(probes, routes::probe_router().with_state(state.clone())).into_future());
    let resolver = args
        .certs
        .resolver(runtime.handle(), args.policies.kubeconfig.as_deref())?;
    let tls_config = tls::server_config(resolver, args.client_ca.as_deref())?;
    let context = args
        .policies
        .cluster_context(&config, Some(runtime.handle()))?;
    // A ConfigMap is watched through the apiserver.
    let watch_client = match &source {
        Source::ConfigMap { .. } => {
            Some(runtime.block_on(live::client(args.policies.kubeconfig.as_deref()))?)
        }
        _ => None,
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        // The bound address, so that `--addr 127.0.0.1:0` says its port.
        let addr = listener.local_addr().unwrap_or(args.addr);
        tracing::info!(%addr, "listening (HTTPS)");
        let reloader = Arc::new(Reloader::new(
            state.clone(),
            engine,
            context,
            config.quota.clone(),
        ));
        let first = reloader.clone();
        tokio::spawn(async move {
            let loaded = tokio::task::spawn_blocking({
                let first = first.clone();
                move || first.load(&text)
            })
            .await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match (loaded, first.loaded_policies()) {
                (Ok(Loaded::Loaded), Some((total, 0))) => {
                    tracing::info!(policies = total, elapsed_ms, "ready")
                }
                (Ok(Loaded::Loaded), Some((total, failed))) => tracing::error!(
                    policies = total,
                    failed,
                    elapsed_ms,
                    "serving, but some policies failed to load (see /readyz?verbose)"
                ),
                (outcome, _) => tracing::error!("the configuration did not load: {outcome:?}"),
            }
            first.follow(source, watch_client).await;
        });
        let delay = args.shutdown_delay;
        let draining = state.clone();
        let decisions = state.clone();
        server::serve(listener, tls_config, state, async move {
            shutdown_signal().await;
            draining
                .shutting_down
                .store(true, std::sync::atomic::Ordering::Release);
            tracing::info!("shutdown requested; readiness is now false");
            tokio::time::sleep(delay).await;
        })
        .await
        .context("serving HTTPS")?;
        // Every answered request's line is queued: write them all.
        if let Some(log) = &decisions.decisions {
            log.close().await;
            tracing::info!("decision log flushed");
        }
        Ok(())
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
