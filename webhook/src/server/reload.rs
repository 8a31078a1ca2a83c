//! The configuration the server runs: the first one, then each change (a
//! watched file or ConfigMap, or SIGHUP), compiled and checked off the
//! request path and swapped in only when it is no worse than the set
//! serving. Requests in flight finish on the set they started with; the
//! cluster context (its cache and quota reservations) is shared by every
//! set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use super::routes::AppState;
use crate::context::Context;
use crate::engine::Engine;
use crate::policy::PolicySet;
use crate::policy::config::{self, QuotaConfig};
use crate::policy::source::{self, Source, Text};

/// How often a configuration file is read again to see if it changed
/// (a mounted ConfigMap changes by a symbolic-link swap: reading, not
/// modification times, sees it).
const FILE_INTERVAL: Duration = Duration::from_secs(2);

/// What the server knows of its configuration, for `/readyz?verbose`.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Configurations served so far (1: the first).
    pub sequence: u64,
    /// The generation serving.
    pub generation: String,
    /// Where it came from.
    pub origin: String,
    /// Why the last change was refused, if it was.
    pub error: Option<String>,
}

/// What became of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Swapped in.
    Loaded,
    /// The same text as the set serving.
    Unchanged,
    /// Refused; the previous set serves on.
    Failed(String),
}

/// Loads configurations into an [`AppState`].
pub struct Reloader {
    state: Arc<AppState>,
    engine: Engine,
    context: Arc<Context>,
    /// The quota section the context was built for: a change needs a
    /// restart (the ledger's backend and its reservations live there).
    quota: QuotaConfig,
    sequence: AtomicU64,
    /// One load at a time.
    serial: Mutex<()>,
}

impl Reloader {
    /// Loads into `state`, compiling with `engine`, on `context` (built for
    /// the `quota` section of the first configuration).
    pub fn new(
        state: Arc<AppState>,
        engine: Engine,
        context: Arc<Context>,
        quota: QuotaConfig,
    ) -> Self {
        Reloader {
            state,
            engine,
            context,
            quota,
            sequence: AtomicU64::new(0),
            serial: Mutex::new(()),
        }
    }

    /// The serving set's policy count and how many of them failed to load.
    pub fn loaded_policies(&self) -> Option<(usize, usize)> {
        let set = self.state.policies.load_full()?;
        Some((set.policies().len(), set.failures().count()))
    }

    /// Parses, compiles and checks `text`, and swaps it in unless it is
    /// unchanged or worse than the set serving: it does not parse, changes
    /// the quota section, or has a policy fail to load that loads now.
    /// Blocks while compiling: call it off the async workers.
    pub fn load(&self, text: &Text) -> Loaded {
        let _one = self.serial.lock().expect("reload lock poisoned");
        let current = self.state.policies.load_full();
        let loaded = self.try_load(text, current.as_deref());
        let sequence = self.sequence.load(Ordering::Acquire);
        match &loaded {
            Loaded::Loaded => {
                tracing::info!(origin = %text.origin, sequence, "configuration loaded");
                self.state.metrics.record_reload("loaded", sequence);
            }
            Loaded::Unchanged => {
                self.state.metrics.record_reload("unchanged", sequence);
                // Back to the text serving: no refused change is pending.
                let status = self.state.configuration.load_full();
                if let Some(status) = status.filter(|s| s.error.is_some()) {
                    let cleared = Status {
                        error: None,
                        ..(*status).clone()
                    };
                    self.state.configuration.store(Some(Arc::new(cleared)));
                }
            }
            Loaded::Failed(error) => {
                tracing::error!(origin = %text.origin, "configuration refused, the previous one serves on: {error}");
                self.state.metrics.record_reload("failed", sequence);
                let status = self.state.configuration.load_full();
                let mut status = status.map(|s| (*s).clone()).unwrap_or_default();
                status.error = Some(error.clone());
                self.state.configuration.store(Some(Arc::new(status)));
            }
        }
        loaded
    }

    fn try_load(&self, text: &Text, current: Option<&PolicySet>) -> Loaded {
        let config = match text.parse() {
            Ok(config) => config,
            Err(error) => return Loaded::Failed(error.to_string()),
        };
        if let Some(current) = current {
            if **current.generation() == *config.generation {
                return Loaded::Unchanged;
            }
            if config.quota != self.quota {
                return Loaded::Failed(
                    "the quota section changed: it takes effect on restart".into(),
                );
            }
        }
        let mut set = PolicySet::prepare(&config, &self.engine, self.context.clone());
        if let Some(current) = current {
            let broken: Vec<String> = set
                .failures()
                .filter(|(name, _)| !current.failures().any(|(was, _)| was == *name))
                .map(|(name, error)| format!("policy {name:?} failed to load: {error}"))
                .collect();
            if !broken.is_empty() {
                return Loaded::Failed(broken.join("; "));
            }
        }
        if self.state.decisions.is_some() {
            set.keep_mutations();
        }
        set.activate();
        let sequence = self.sequence.fetch_add(1, Ordering::AcqRel) + 1;
        self.state.configuration.store(Some(Arc::new(Status {
            sequence,
            generation: config.generation.clone(),
            origin: config.origin.clone(),
            error: None,
        })));
        self.state.policies.store(Some(Arc::new(set)));
        Loaded::Loaded
    }

    /// Loads `text` off the async workers.
    async fn load_aside(self: &Arc<Self>, text: Text) -> Loaded {
        let reloader = self.clone();
        tokio::task::spawn_blocking(move || reloader.load(&text))
            .await
            .unwrap_or_else(|panic| Loaded::Failed(format!("loading panicked: {panic}")))
    }

    /// Follows `source` for as long as the server runs: a file read every
    /// two seconds, a ConfigMap watched through `client`, and any source
    /// read again on SIGHUP.
    pub async fn follow(self: Arc<Self>, source: Source, client: Option<kube::Client>) {
        let mut hangups = hangups();
        match (&source, client) {
            (Source::ConfigMap { namespace, name }, Some(client)) => {
                let mut versions =
                    Box::pin(source::watch_configmap(client.clone(), namespace, name));
                loop {
                    tokio::select! {
                        version = versions.next() => match version {
                            Some(Ok(text)) => {
                                self.load_aside(text).await;
                            }
                            Some(Err(error)) => tracing::warn!("{error}"),
                            None => return,
                        },
                        Some(()) = hangups.recv() => {
                            match source::read_configmap(client.clone(), namespace, name).await {
                                Ok(text) => {
                                    self.load_aside(text).await;
                                }
                                Err(error) => tracing::error!("SIGHUP: {error}"),
                            }
                        }
                    }
                }
            }
            (Source::ConfigMap { .. }, None) => {
                tracing::error!("no cluster connection: the ConfigMap cannot be watched");
            }
            _ => {
                let mut ticks = tokio::time::interval(FILE_INTERVAL);
                let watched = matches!(source, Source::File(_));
                // The text last loaded or refused: a tick loads only a
                // change; SIGHUP loads whatever is there.
                let mut seen = self
                    .state
                    .configuration
                    .load_full()
                    .map(|s| s.generation.clone());
                loop {
                    let hangup = tokio::select! {
                        _ = ticks.tick(), if watched => false,
                        Some(()) = hangups.recv() => true,
                    };
                    match source.read_local() {
                        Some(Ok(text)) => {
                            let generation = config::generation(&text.text);
                            if hangup || seen.as_ref() != Some(&generation) {
                                seen = Some(generation);
                                self.load_aside(text).await;
                            }
                        }
                        Some(Err(error)) => tracing::warn!("{error}"),
                        None => {}
                    }
                }
            }
        }
    }
}

/// SIGHUP, as a channel of signals (none where there are no signals).
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangup) => {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        // One pending reload is enough.
                        let _ = sender.try_send(());
                    }
                });
            }
            Err(error) => tracing::warn!("cannot listen for SIGHUP: {error}"),
        }
    }
    #[cfg(not(unix))]
    drop(sender);
    receiver
}
