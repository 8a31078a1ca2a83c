//! A loaded configuration: every policy compiled, pre-instantiated and its
//! settings validated, plus the match indexes. Immutable once built; a reload
//! builds a new set and swaps it in, so in-flight requests finish on the old.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::breaker::Breaker;
use super::config::{Config, ModuleSource, PolicyConfig};
use super::matcher::Index;
use crate::context::{self, Context, Indexer, Kind};
use crate::engine::{self, Engine, PolicyPre};

/// Why a policy failed to load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// `builtin:<name>` names no built-in policy.
    #[error("no built-in policy {0:?}")]
    NoBuiltin(String),
    /// The module file could not be read.
    #[error("cannot read module {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The engine refused the component.
    #[error(transparent)]
    Engine(engine::Error),
    /// `validate-settings` refused the settings.
    #[error("settings rejected: {0}")]
    SettingsRejected(String),
    /// `validate-settings` could not run to completion.
    #[error("validate-settings failed: {0}")]
    SettingsFailed(engine::Error),
    /// The module's own metadata contradicts its configuration.
    #[error("{0}")]
    Metadata(String),
}

/// One policy of a set, ready to evaluate (or failed to load).
pub struct LoadedPolicy {
    /// Its configuration.
    pub config: PolicyConfig,
    /// Its name, shared with log lines and outcomes.
    pub name: Arc<str>,
    /// Its settings as JSON text, serialized once at load.
    pub settings: String,
    /// Bounds per call.
    pub limits: engine::Limits,
    /// The prepared module, or why it failed to load (shared with every
    /// failure it causes).
    pub module: Result<PolicyPre, Arc<LoadError>>,
    /// The kinds it may read (shared with each call's access).
    pub grants: Arc<[Kind]>,
    /// Suspends it after repeated misbehaviour.
    pub breaker: Breaker,
}

/// Every policy of a configuration, loaded.
pub struct PolicySet {
    pub(super) policies: Vec<LoadedPolicy>,
    pub(super) mutating: Index,
    pub(super) validating: Index,
    pub(super) context: Arc<Context>,
    /// Whether outcomes keep each mutation's object (the decision log
    /// counts each policy's patch operations from them).
    pub(super) keep_mutations: bool,
    /// Which configuration text it was loaded from.
    generation: Arc<str>,
    /// The kinds its policies read.
    kinds: Vec<Kind>,
}

/// Output cap per call: the apiserver refuses objects over 3 MiB anyway.
const OUTPUT_BYTES: usize = 4 << 20;

/// Warnings plus audit annotations per call (or index entries per object):
/// far more than a policy has to say, far fewer than would cost the host.
const OUTPUT_ITEMS: usize = 256;

impl PolicySet {
    /// Loads every policy of `config`, in parallel, and puts the set to
    /// work on `context` ([`PolicySet::prepare`], then
    /// [`PolicySet::activate`]).
    pub fn load(config: &Config, engine: &Engine, context: Arc<Context>) -> Self {
        let set = Self::prepare(config, engine, context);
        set.activate();
        set
    }

    /// Loads every policy of `config`, in parallel, without touching the
    /// shared context: a reload checks the new set first. A policy that
    /// fails to load (unreadable module, invalid component, settings
    /// refused) is kept with its error: requests it matches get its
    /// `failurePolicy`, and [`PolicySet::failures`] reports it.
    pub fn prepare(config: &Config, engine: &Engine, context: Arc<Context>) -> Self {
        let policies: Vec<LoadedPolicy> = std::thread::scope(|scope| {
            let handles: Vec<_> = config
                .policies
                .iter()
                .map(|policy| scope.spawn(move || load_one(config, policy, engine)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("policy loading panicked"))
                .collect()
        });
        for policy in &policies {
            if let Err(error) = &policy.module {
                tracing::error!(policy = &*policy.name, "policy failed to load: {error}");
            }
        }
        let mutating = Index::build(
            policies
                .iter()
                .enumerate()
                .filter(|(_, p)| p.config.mutating)
                .map(|(i, p)| (i, &p.config.matches)),
        );
        let validating = Index::build(
            policies
                .iter()
                .enumerate()
                .filter(|(_, p)| !p.config.mutating)
                .map(|(i, p)| (i, &p.config.matches)),
        );
        PolicySet {
            policies,
            mutating,
            validating,
            context,
            keep_mutations: false,
            generation: config.generation.as_str().into(),
            kinds: config.context_kinds(),
        }
    }

    /// Registers the policies that index cluster objects with the context's
    /// cache (replacing a previous set's), drops the indexes of policies
    /// the set no longer has, and asks the cache for every kind the
    /// policies read.
    pub fn activate(&self) {
        let store = self.context.store();
        for policy in &self.policies {
            if let (Ok(module), false) = (&policy.module, policy.grants.is_empty())
                && module.indexes()
            {
                store.register(Arc::new(PolicyIndex {
                    name: policy.name.clone(),
                    kinds: policy.grants.to_vec(),
                    module: module.clone(),
                    settings: policy.settings.clone(),
                    limits: policy.limits,
                }));
            }
        }
        let names: Vec<Arc<str>> = self.policies.iter().map(|p| p.name.clone()).collect();
        store.keep_indexes(&names);
        if !self.kinds.is_empty()
            && let Err(error) = self.context.cache(&self.kinds)
        {
            tracing::warn!("cluster context: {error}");
        }
    }

    /// The configuration's generation (see [`Config::generation`]).
    pub fn generation(&self) -> &Arc<str> {
        &self.generation
    }

    /// Makes outcomes keep each mutation's object, for the decision log.
    pub fn keep_mutations(&mut self) {
        self.keep_mutations = true;
    }

    /// The cluster context the set reads.
    pub fn context(&self) -> &Arc<Context> {
        &self.context
    }

    /// Policies that failed to load, with why.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &LoadError)> {
        self.policies
            .iter()
            .filter_map(|p| p.module.as_ref().err().map(|e| (&*p.name, &**e)))
    }

    /// Every policy, in configuration order.
    pub fn policies(&self) -> &[LoadedPolicy] {
        &self.policies
    }
}

fn load_one(config: &Config, policy: &PolicyConfig, engine: &Engine) -> LoadedPolicy {
    let limits = engine::Limits {
        timeout: Duration::from_millis(policy.timeout_ms),
        memory_bytes: policy.memory_limit_mb << 20,
        output_bytes: OUTPUT_BYTES,
        output_items: OUTPUT_ITEMS,
    };
    let settings = settings_text(config, policy);
    let module = settings
        .as_deref()
        .map_err(|message| LoadError::SettingsRejected(message.clone()))
        .and_then(|settings| prepare(config, policy, engine, settings, &limits))
        .map_err(Arc::new);
    let settings = settings.unwrap_or_default();
    LoadedPolicy {
        config: policy.clone(),
        name: policy.name.as_str().into(),
        settings,
        limits,
        module,
        grants: policy.context.clone().into(),
        breaker: Breaker::default(),
    }
}

/// A policy's settings as the JSON text it gets: as configured, or for
/// `builtin:gatekeeper` the template compiled with its constraints.
fn settings_text(config: &Config, policy: &PolicyConfig) -> Result<String, String> {
    match config.module_source(policy) {
        ModuleSource::Builtin(name) if name == "gatekeeper" => {
            super::gatekeeper::prepare(&policy.settings, config.base_dir(), &policy.context)
        }
        _ if policy.settings.is_null() => Ok("{}".to_owned()),
        _ => Ok(policy.settings.to_string()),
    }
}

/// Holds a Kubewarden module's metadata against its configuration: a
/// module that says it never mutates cannot be configured to; what it says
/// it mutates or reads, but is not configured to, is logged (its mutations
/// are refused, its reads answered as refused).
fn check_metadata(
    policy: &PolicyConfig,
    metadata: &engine::KubewardenMetadata,
) -> Result<(), LoadError> {
    if policy.mutating && !metadata.mutating {
        return Err(LoadError::Metadata(
            "its kubewarden_metadata says it does not mutate: set mutating: false".into(),
        ));
    }
    if metadata.mutating && !policy.mutating {
        tracing::warn!(
            policy = policy.name,
            "its kubewarden_metadata says it mutates, but it is configured with mutating: false: its mutations will be refused"
        );
    }
    let ungranted: Vec<String> = metadata
        .context_aware_resources
        .iter()
        .filter(|resource| {
            !policy
                .context
                .iter()
                .any(|kind| kind.api_version == resource.api_version && kind.kind == resource.kind)
        })
        .map(|resource| {
            format!(
                "{{apiVersion: {}, kind: {}}}",
                resource.api_version, resource.kind
            )
        })
        .collect();
    if !ungranted.is_empty() {
        tracing::warn!(
            policy = policy.name,
            "its kubewarden_metadata says it reads {}, which its configuration does not grant (add them under context); those reads will be refused",
            ungranted.join(", ")
        );
    }
    Ok(())
}

/// A policy's `index` export as the cache's [`Indexer`].
struct PolicyIndex {
    name: Arc<str>,
    kinds: Vec<Kind>,
    module: PolicyPre,
    settings: String,
    limits: engine::Limits,
}

impl Indexer for PolicyIndex {
    fn name(&self) -> &Arc<str> {
        &self.name
    }

    fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    fn entries(&self, object: &str) -> Vec<context::Entry> {
        match self.module.index(object, &self.settings, &self.limits) {
            Ok(entries) => entries
                .unwrap_or_default()
                .into_iter()
                .map(|(key, resource, amount)| context::Entry {
                    key,
                    resource,
                    amount,
                })
                .collect(),
            Err(error) => {
                // The object then counts for nothing in this index.
                tracing::warn!(policy = &*self.name, "cannot index an object: {error}");
                Vec::new()
            }
        }
    }
}

fn prepare(
    config: &Config,
    policy: &PolicyConfig,
    engine: &Engine,
    settings: &str,
    limits: &engine::Limits,
) -> Result<PolicyPre, LoadError> {
    let started = std::time::Instant::now();
    let pre = match config.module_source(policy) {
        ModuleSource::Builtin(name) => {
            let bytes = crate::builtin::module(&name).ok_or(LoadError::NoBuiltin(name))?;
            engine.load(&policy.name, bytes)
        }
        ModuleSource::File(path) => {
            let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path, source })?;
            if policy.wasi {
                engine.load_with_wasi(&policy.name, &bytes)
            } else {
                engine.load(&policy.name, &bytes)
            }
        }
        ModuleSource::Opa(path) => {
            let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path, source })?;
            engine.load_opa(&policy.name, &bytes)
        }
        ModuleSource::Kubewarden(path) => {
            let bytes = std::fs::read(&path).map_err(|source| LoadError::Read { path, source })?;
            engine.load_kubewarden(&policy.name, &bytes)
        }
    }
    .map_err(LoadError::Engine)?;
    if let Some(metadata) = pre.kubewarden_metadata() {
        check_metadata(policy, metadata)?;
    }
    match pre.validate_settings(settings, limits) {
        Ok(Ok(())) => pre.warm(settings, limits),
        Ok(Err(message)) => return Err(LoadError::SettingsRejected(message)),
        Err(error) => return Err(LoadError::SettingsFailed(error)),
    }
    tracing::info!(
        policy = policy.name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "policy loaded"
    );
    Ok(pre)
}
