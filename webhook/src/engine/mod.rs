//! The WebAssembly engine: one wasmtime [`wasmtime::Engine`] for the process,
//! policies compiled once and cached on disk ([`cache`]), prepared as
//! [`PolicyPre`]s, and instantiated fresh for every call ([`PolicyPre::evaluate`]).
//! A background thread (`spare`) makes those fresh instances ahead of time and
//! tears used ones down, so neither is on a request's latency. OPA Wasm
//! modules ([`Engine::load_opa`], the `opa` module) and Kubewarden's waPC
//! modules ([`Engine::load_kubewarden`], the `kubewarden` module) are
//! prepared as `PolicyPre`s too, and run under the same bounds. WASI is
//! offered only to the modules that need it, locked down (the `wasi`
//! module): Kubewarden's, and components loaded with
//! [`Engine::load_with_wasi`].
//!
//! # Isolation
//!
//! Every call gets a new [`wasmtime::Store`] and a new instance from the
//! pooling allocator: no state survives from one request to the next. Each
//! call is bounded by a wall-clock deadline (epoch interruption, driven by
//! [`ticker`]), a linear-memory cap ([`limits`]) and an output size cap. A
//! policy that exceeds a bound is stopped and reported as an [`Error`]; the
//! caller decides what that means for the request.
//!
//! # Where to start reading
//!
//! [`Engine::new`] (the wasmtime configuration and why), then
//! [`Engine::load`], then [`PolicyPre::evaluate`].

mod aside;
mod bindings;
pub mod cache;
mod core_module;
pub mod host;
mod kubewarden;
mod limits;
mod opa;
mod output;
mod pre;
mod slot;
mod spare;
mod ticker;
mod wasi;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};

pub use host::Host;
pub use kubewarden::Metadata as KubewardenMetadata;
pub use limits::Limits;
pub use output::{IndexEntry, Verdict};
pub use pre::PolicyPre;
pub use slot::wait_for;

use limits::StoreState;
use spare::Maker;
use ticker::Ticker;

/// How many instances may be alive at once across all policies. Evaluations
/// run on a few threads, so a handful are alive at a time; the rest of the
/// pool is address space only.
const POOL_INSTANCES: u32 = 256;

/// The largest linear memory any policy may have; a policy's own
/// `memoryLimitMb` lowers it.
pub const MAX_MEMORY_BYTES: usize = 512 << 20;

/// Memory kept resident in a pool slot after use and reset with `memset`
/// (or only its touched pages, with `PAGEMAP_SCAN`), so that the next
/// instance in that slot takes no page faults.
const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Where compilation happens.
#[derive(Debug, Clone)]
pub enum Compiler {
    /// In this process. Cranelift's memory stays in the process afterwards:
    /// fine for tests, benchmarks and one-shot commands.
    InProcess,
    /// In a child process running this binary's `compile` subcommand, so the
    /// server's resident memory never holds the compiler.
    Subprocess(PathBuf),
}

/// Engine configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of compiled artifacts, keyed by content hash.
    pub cache_dir: PathBuf,
    /// Where modules not in the cache are compiled.
    pub compiler: Compiler,
    /// How many evaluations may run at once on the caller's threads (the
    /// server's async workers); `None` for no bound (offline commands).
    pub evaluations: Option<usize>,
}

/// Errors of loading and running policies.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasmtime configuration was refused (an unsupported platform).
    #[error("cannot configure the Wasm engine: {0:#}")]
    Configure(#[source] wasmtime::Error),
    /// The bytes are not a valid component for the `tollgate:policy` world.
    #[error(
        "not a valid policy component: {0:#} (build it for the tollgate:policy world, see docs/abi.md)"
    )]
    Compile(wasmtime::Error),
    /// The module cache could not be used.
    #[error(transparent)]
    Cache(#[from] cache::Error),
    /// The component imports something the host does not provide, or lacks
    /// an export, or an export has the wrong type.
    #[error("cannot link the policy: {0:#} (it must target the tollgate:policy world)")]
    Link(wasmtime::Error),
    /// An OPA bundle or module that cannot run here, and why.
    #[error("OPA module: {0}")]
    Opa(String),
    /// A Kubewarden module that cannot run here, and why.
    #[error("Kubewarden module: {0}")]
    Kubewarden(String),
    /// Instantiation failed (pool exhausted, memory minimum above the cap).
    #[error("cannot instantiate the policy: {0:#}")]
    Instantiate(wasmtime::Error),
    /// The policy ran past its own deadline.
    #[error("policy exceeded its deadline of {0} ms")]
    Timeout(u64),
    /// The component's start function ran past the policy's deadline.
    #[error("policy's start function exceeded its deadline of {0} ms")]
    StartTimeout(u64),
    /// The component's `prepare` ran past the policy's deadline.
    #[error("policy's `prepare` exceeded its deadline of {0} ms")]
    PrepareTimeout(u64),
    /// The request's deadline came before the policy's own (of this many
    /// ms) and the policy had not finished.
    #[error(
        "the request's deadline passed before the policy finished (its own deadline is {0} ms)"
    )]
    RequestDeadline(u64),
    /// The request's deadline passed while the policy waited to run.
    #[error(
        "the request's deadline passed while the policy waited to run (every evaluation slot was busy)"
    )]
    Queued,
    /// The policy tried to grow its memory past the cap.
    #[error("policy exceeded its memory limit of {0} MiB")]
    MemoryLimit(usize),
    /// The policy trapped (panic, unreachable, stack overflow, …).
    #[error("policy trapped: {0}")]
    Trap(String),
    /// The policy's output was larger than allowed.
    #[error("policy output of {size} bytes exceeds the limit of {limit} bytes")]
    OutputTooLarge {
        /// Bytes counted when the cap was passed.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The policy returned more warnings, annotations or index entries than
    /// allowed.
    #[error("policy returned {items} warnings, annotations or entries; the limit is {limit}")]
    OutputTooManyItems {
        /// Items returned.
        items: usize,
        /// The cap.
        limit: usize,
    },
    /// The policy's output could not be read (a string not UTF-8, say).
    #[error("policy output is invalid: {0}")]
    InvalidOutput(String),
    /// The host-call meter stopped the policy.
    #[error("{0}")]
    HostCalls(host::Abort),
    /// A host call that waits on I/O (quota through the apiserver) had not
    /// finished by the policy's deadline.
    #[error(
        "the host could not answer the policy's quota.reserve within its deadline of {0} ms (the apiserver is slow or unreachable)"
    )]
    HostTimeout(u64),
    /// The policy ran but reported that it could not reach a verdict.
    #[error("policy error: {0}")]
    Policy(String),
    /// The policy reported an error after a host call refused it (context
    /// not granted, ledger unreachable).
    #[error("policy error: {message}")]
    Refused {
        /// The policy's message.
        message: String,
        /// What the host refused.
        refusal: String,
    },
}

impl Error {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Configure(_)
            | Error::Compile(_)
            | Error::Cache(_)
            | Error::Link(_)
            | Error::Opa(_)
            | Error::Kubewarden(_)
            | Error::Instantiate(_) => "load",
            Error::Timeout(_) | Error::StartTimeout(_) | Error::PrepareTimeout(_) => "timeout",
            Error::RequestDeadline(_) | Error::Queued => "request-deadline",
            Error::MemoryLimit(_) => "memory",
            Error::Trap(_) => "trap",
            Error::OutputTooLarge { .. }
            | Error::OutputTooManyItems { .. }
            | Error::InvalidOutput(_) => "output",
            Error::HostCalls(_) => "host-calls",
            Error::HostTimeout(_) => "host-timeout",
            Error::Policy(_) => "policy",
            Error::Refused { .. } => "refused",
        }
    }

    /// Whether the policy itself misbehaved (rather than the request's
    /// deadline or the host), so that repeated ones may suspend it.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_)
                | Error::StartTimeout(_)
                | Error::PrepareTimeout(_)
                | Error::MemoryLimit(_)
                | Error::Trap(_)
                | Error::OutputTooLarge { .. }
                | Error::OutputTooManyItems { .. }
                | Error::InvalidOutput(_)
                | Error::HostCalls(_)
        )
    }
}

/// The process-wide Wasm engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    wasmtime: wasmtime::Engine,
    /// Links the host's imports into every policy; built once.
    linker: Linker<StoreState>,
    /// The same, with the locked-down WASI 0.2 of `wasi`, for components
    /// configured with `wasi: true`.
    wasi_linker: Linker<StoreState>,
    /// Advances the epoch while evaluations and start functions run;
    /// shared by every store and the spares thread.
    ticker: Arc<Ticker>,
    /// Makes spare instances and tears down used ones, off the request path.
    maker: Maker,
    cache: cache::Cache,
    /// One permit per evaluation running on the caller's threads, when
    /// bounded. A Tokio semaphore: waiting is async, within the request's
    /// deadline.
    slots: Option<Arc<tokio::sync::Semaphore>>,
    /// Low-priority threads for policies on probation, started on first use.
    aside: OnceLock<aside::Lane>,
}

/// The wasmtime configuration. Compilation (here or in the `compile` child)
/// must use exactly this, so that artifacts are compatible.
fn wasmtime_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    // Deadlines: cheap checks at loop headers and function entries, driven
    // by the ticker thread; fuel would cost more per instruction.
    config.epoch_interruption(true);
    config.max_wasm_stack(512 << 10);
    config.parallel_compilation(true);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES)
        .total_tables(POOL_INSTANCES * 2)
        .max_memory_size(MAX_MEMORY_BYTES)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(64 << 10)
        // Linux 6.7+: reset only the pages a call touched; older kernels
        // fall back to memset of the resident prefix.
        .pagemap_scan(Enabled::Auto);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

impl Engine {
    /// Builds the engine.
    ///
    /// # Errors
    ///
    /// When wasmtime refuses the configuration or the cache directory cannot
    /// be created.
    pub fn new(config: Config) -> Result<Self, Error> {
        let wasmtime = wasmtime::Engine::new(&wasmtime_config()).map_err(Error::Configure)?;
        let mut linker = Linker::new(&wasmtime);
        bindings::Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)
            .map_err(Error::Link)?;
        let mut wasi_linker = linker.clone();
        wasmtime_wasi::p2::add_to_linker_async(&mut wasi_linker).map_err(Error::Link)?;
        let cache = cache::Cache::new(config.cache_dir, config.compiler, &wasmtime)?;
        let ticker = Arc::new(Ticker::start(wasmtime.clone()));
        let slots = config
            .evaluations
            .map(|n| Arc::new(tokio::sync::Semaphore::new(n.max(1))));
        Ok(Engine {
            inner: Arc::new(Inner {
                wasmtime,
                linker,
                wasi_linker,
                ticker,
                maker: Maker::start(),
                cache,
                slots,
                aside: OnceLock::new(),
            }),
        })
    }

    /// Compiles (or fetches from the cache) and pre-instantiates a policy
    /// component. `name` is used in logs.
    ///
    /// # Errors
    ///
    /// When the bytes are not a component of the policy world, or the cache
    /// cannot be written.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<PolicyPre, Error> {
        self.load_component(name, bytes, false)
    }

    /// [`Engine::load`] for a component that imports WASI (one that
    /// `componentize-py` builds, say): its WASI imports reach the
    /// locked-down context of the `wasi` module.
    ///
    /// # Errors
    ///
    /// As [`Engine::load`].
    pub fn load_with_wasi(&self, name: &str, bytes: &[u8]) -> Result<PolicyPre, Error> {
        self.load_component(name, bytes, true)
    }

    fn load_component(&self, name: &str, bytes: &[u8], wasi: bool) -> Result<PolicyPre, Error> {
        let component: Component = self.inner.cache.compiled(&self.inner.wasmtime, bytes)?;
        let linker = if wasi {
            &self.inner.wasi_linker
        } else {
            &self.inner.linker
        };
        let pre = linker.instantiate_pre(&component).map_err(|error| {
            let imports_wasi = component
                .component_type()
                .imports(&self.inner.wasmtime)
                .any(|(name, _)| name.starts_with("wasi:"));
            if imports_wasi && !wasi {
                Error::Link(wasmtime::format_err!(
                    "{error:#}; the component imports WASI: set `wasi: true` in its configuration to offer it the host's locked-down WASI (see docs/authoring.md)"
                ))
            } else {
                Error::Link(error)
            }
        })?;
        PolicyPre::new(name, pre, self.clone())
    }

    /// Compiles (or fetches from the cache) an OPA Wasm module or an
    /// `opa build -t wasm` bundle, and checks it against OPA's ABI.
    ///
    /// # Errors
    ///
    /// When the bytes are not a bundle or a module of OPA's ABI 1.2 or
    /// later, or need builtins the host does not implement.
    pub fn load_opa(&self, name: &str, bytes: &[u8]) -> Result<PolicyPre, Error> {
        let program = opa::Program::load(self, name, bytes)?;
        Ok(PolicyPre::opa(name, program, self.clone()))
    }

    /// Compiles (or fetches from the cache) a Kubewarden policy module (a
    /// waPC guest), and checks its metadata, imports and protocol.
    ///
    /// # Errors
    ///
    /// When the bytes are not a waPC module of Kubernetes requests, or
    /// speak another protocol.
    pub fn load_kubewarden(&self, name: &str, bytes: &[u8]) -> Result<PolicyPre, Error> {
        let program = kubewarden::Program::load(self, name, bytes)?;
        Ok(PolicyPre::kubewarden(name, program, self.clone()))
    }
}

/// Whether `bytes` are a component (rather than a core module).
fn is_component(bytes: &[u8]) -> bool {
    bytes.get(4..8) == Some(&[0x0d, 0x00, 0x01, 0x00])
}

/// Compiles a component (or an OPA core module) to an artifact with the
/// engine configuration the server uses; what the `compile` child process
/// runs.
///
/// # Errors
///
/// When the bytes are not a valid component or module.
pub fn precompile(bytes: &[u8]) -> Result<Vec<u8>, Error> {
    use cache::Compiled as _;
    let engine = wasmtime::Engine::new(&wasmtime_config()).map_err(Error::Configure)?;
    if is_component(bytes) {
        wasmtime::component::Component::precompile(&engine, bytes)
    } else {
        wasmtime::Module::precompile(&engine, bytes)
    }
    .map_err(Error::Compile)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::executor::block_on;

    use super::*;
    use crate::test_support::{MISBEHAVE, WORLD_V0 as WORLD_V0_BYTES, engine};

    const POD: &str = r#"{"uid":"u","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
        "namespace":"ml","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},
        "spec":{"containers":[{"name":"c","image":"quay.io/x:1"}]}}}"#;

    fn misbehave(behaviour: &str, limits: &Limits) -> Result<Verdict, Error> {
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        block_on(pre.evaluate(
            POD,
            &format!(r#"{{"behaviour":"{behaviour}"}}"#),
            limits,
            None,
            None,
        ))
    }

    #[test]
    fn evaluates_a_builtin_policy() {
        let pre = engine()
            .load(
                "image-registries",
                crate::builtin::module("image-registries").unwrap(),
            )
            .unwrap();
        let limits = Limits::default();
        let verdict = block_on(pre.evaluate(
            POD,
            r#"{"allowedRegistries":["nvcr.io/"]}"#,
            &limits,
            None,
            None,
        ))
        .unwrap();
        assert!(!verdict.allowed);
        assert!(verdict.message.unwrap().contains("\"quay.io/x:1\""));
        let verdict = block_on(pre.evaluate(
            POD,
            r#"{"allowedRegistries":["quay.io/"]}"#,
            &limits,
            None,
            None,
        ))
        .unwrap();
        assert!(verdict.allowed);
    }

    #[test]
    fn validate_settings_reports_the_policys_message() {
        let pre = engine()
            .load(
                "image-registries",
                crate::builtin::module("image-registries").unwrap(),
            )
            .unwrap();
        let refused = pre
            .validate_settings(r#"{"allowedRegistries":["nvcr.io"]}"#, &Limits::default())
            .unwrap();
        assert!(refused.unwrap_err().contains("must end in '/'"));
    }

    #[test]
    fn freed_large_blocks_are_reused_within_a_call() {
        // A thousand 1 MiB temporaries in turn fit in 16 MiB: the SDK's
        // allocator reuses what was freed.
        let limits = Limits {
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let verdict = misbehave("churn", &limits).unwrap();
        assert_eq!(
            verdict.audit_annotations,
            vec![("churned-mib".to_string(), "1000".to_string())]
        );
    }

    #[test]
    fn every_call_gets_a_fresh_instance() {
        for _ in 0..3 {
            let verdict = misbehave("count", &Limits::default()).unwrap();
            assert_eq!(
                verdict.audit_annotations,
                vec![("calls".to_string(), "1".to_string())]
            );
        }
    }

    #[test]
    fn back_to_back_calls_never_exhaust_the_instance_pool() {
        // More calls than the pool has slots, faster than the spares thread
        // can tear down: used instances must not pile up.
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        for _ in 0..(POOL_INSTANCES * 3) {
            let verdict = block_on(pre.evaluate(
                POD,
                r#"{"behaviour":"count"}"#,
                &Limits::default(),
                None,
                None,
            ))
            .unwrap();
            assert_eq!(
                verdict.audit_annotations,
                vec![("calls".to_string(), "1".to_string())]
            );
        }
    }

    #[test]
    fn an_endless_loop_is_stopped_at_the_deadline() {
        let limits = Limits {
            timeout: Duration::from_millis(20),
            ..Limits::default()
        };
        // Load (and compile) first: only the call is timed.
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        let started = std::time::Instant::now();
        let result = block_on(pre.evaluate(POD, r#"{"behaviour":"loop"}"#, &limits, None, None));
        assert!(matches!(result, Err(Error::Timeout(20))), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn unbounded_allocation_hits_the_memory_cap() {
        let limits = Limits {
            memory_bytes: 16 << 20,
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        assert!(matches!(
            misbehave("allocate", &limits),
            Err(Error::MemoryLimit(16))
        ));
    }

    #[test]
    fn traps_and_stack_overflows_are_reported() {
        assert!(matches!(
            misbehave("trap", &Limits::default()),
            Err(Error::Trap(_))
        ));
        match misbehave("stack-overflow", &Limits::default()) {
            Err(Error::Trap(message)) => assert!(message.contains("stack"), "{message}"),
            other => panic!("expected a stack overflow trap, got {other:?}"),
        }
    }

    #[test]
    fn oversized_output_and_policy_errors_are_reported() {
        // A generous deadline: building 16 MiB must end on the output cap,
        // not on time, even on a loaded machine.
        let limits = Limits {
            output_bytes: 1 << 20,
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        assert!(matches!(
            misbehave("huge-output", &limits),
            Err(Error::OutputTooLarge { limit: 1048576, .. })
        ));
        match misbehave("error", &Limits::default()) {
            Err(Error::Policy(message)) => assert_eq!(message, "misbehave: no verdict on purpose"),
            other => panic!("expected a policy error, got {other:?}"),
        }
    }

    #[test]
    fn a_component_of_the_first_world_still_runs() {
        // Built against the world before context, quota and `index`: it
        // imports `log` only and exports no `index`.
        let pre = engine().load("v0", crate::test_support::WORLD_V0).unwrap();
        assert!(!pre.indexes());
        let verdict = block_on(pre.evaluate(POD, "{}", &Limits::default(), None, None)).unwrap();
        assert!(verdict.allowed);
        assert_eq!(
            verdict.audit_annotations,
            vec![("world".to_string(), "v0".to_string())]
        );
        assert_eq!(
            pre.index("{}", "{}", &Limits::default()).unwrap(),
            None,
            "no index export: it indexes nothing"
        );
    }

    #[test]
    fn an_instance_reads_its_settings_once_ahead_of_its_call() {
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        let limits = Limits::default();
        let settings = r#"{"behaviour":"reads"}"#;
        assert_eq!(pre.validate_settings(settings, &limits).unwrap(), Ok(()));
        pre.warm(settings, &limits);
        let reads = |settings: &str| {
            let verdict = block_on(pre.evaluate(POD, settings, &limits, None, None)).unwrap();
            verdict.audit_annotations[0].1.clone()
        };
        for _ in 0..3 {
            // Read by `prepare` (on a spare, or inline), not by the call.
            assert_eq!(reads(settings), "1");
        }
        // Other settings text: the call reads its own.
        assert_eq!(reads(r#"{"behaviour": "reads"}"#), "2");
    }

    #[test]
    fn prepare_gets_the_policys_settings_and_its_failures_are_contained() {
        let probe = || {
            engine()
                .load("probe", crate::test_support::PREPARE_PROBE)
                .unwrap()
        };
        let limits = Limits {
            timeout: Duration::from_millis(30),
            ..Limits::default()
        };
        let prepared = |pre: &PolicyPre| {
            block_on(pre.evaluate(POD, "{}", &limits, None, None)).map(|v| v.audit_annotations)
        };
        let pre = probe();
        let annotation = |text: &str| vec![("prepared".to_owned(), text.to_owned())];
        assert_eq!(
            prepared(&pre).unwrap(),
            annotation(""),
            "not prepared before warming"
        );
        pre.warm(r#"{"team":"a"}"#, &limits);
        for _ in 0..3 {
            assert_eq!(prepared(&pre).unwrap(), annotation(r#"{"team":"a"}"#));
        }

        // At load, a `prepare` that fails on accepted settings refuses them.
        let refused = probe()
            .validate_settings(r#"{"prepare":"fail"}"#, &limits)
            .unwrap();
        assert_eq!(
            refused,
            Err("its `prepare` failed: fails on purpose".to_owned())
        );
        // Warmed with them anyway, every call fails with the policy's error.
        let failing = probe();
        failing.warm(r#"{"prepare":"fail"}"#, &limits);
        for _ in 0..2 {
            let error = prepared(&failing).unwrap_err();
            assert_eq!(
                error.to_string(),
                "policy error: its `prepare` failed: fails on purpose"
            );
        }
        let looping = probe();
        looping.warm(r#"{"prepare":"loop"}"#, &limits);
        let started = std::time::Instant::now();
        let result = prepared(&looping);
        assert!(
            matches!(result, Err(Error::PrepareTimeout(30))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn a_start_function_that_loops_is_stopped_at_the_deadline() {
        let pre = engine()
            .load("start-loop", crate::test_support::START_LOOP)
            .unwrap();
        let limits = Limits {
            timeout: Duration::from_millis(30),
            ..Limits::default()
        };
        let started = std::time::Instant::now();
        let result = pre.validate_settings("{}", &limits);
        assert!(matches!(result, Err(Error::StartTimeout(30))), "{result:?}");
        let result = block_on(pre.evaluate(POD, "{}", &limits, None, None));
        assert!(matches!(result, Err(Error::StartTimeout(30))), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn outputs_over_the_caps_are_refused() {
        let limits = Limits {
            memory_bytes: MAX_MEMORY_BYTES,
            timeout: Duration::from_secs(10),
            ..Limits::default()
        };
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        let warnings = |count: usize| {
            let settings = format!(r#"{{"behaviour":"empty-warnings","count":{count}}}"#);
            block_on(pre.evaluate(POD, &settings, &limits, None, None))
        };
        match warnings(1000) {
            Err(Error::OutputTooManyItems { items, limit: 256 }) => assert_eq!(items, 1000),
            other => panic!("expected too many items, got {other:?}"),
        }
        // Ten million: wasmtime's own bound on data lifted out of a call
        // stops them first.
        match warnings(10_000_000) {
            Err(Error::InvalidOutput(message)) => {
                assert!(message.contains("too much data"), "{message}")
            }
            other => panic!("expected too much data, got {other:?}"),
        }
        match misbehave("huge-message", &limits) {
            Err(Error::OutputTooLarge { limit, .. }) => assert_eq!(limit, 4 << 20),
            other => panic!("expected too large an output, got {other:?}"),
        }
    }

    /// A host that answers every read with a large list and admits every
    /// claim, for flooding policies.
    struct Generous;

    impl Host for Generous {
        fn get(
            &mut self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            _: std::time::Instant,
        ) -> Result<Option<String>, host::Refusal> {
            Ok(None)
        }
        fn list(
            &mut self,
            _: &str,
            _: &str,
            _: &str,
            _: &str,
            max_bytes: usize,
            _: std::time::Instant,
        ) -> Result<String, host::Refusal> {
            let list = format!("[\"{}\"]", "x".repeat(64 << 10));
            if list.len() > max_bytes {
                return Err(host::Refusal::message("too large"));
            }
            Ok(list)
        }
        fn usage(&mut self, _: &[String]) -> Result<Vec<host::Usage>, host::Refusal> {
            Ok(Vec::new())
        }
        fn reserve(
            &mut self,
            _: Vec<host::Claim>,
            _: std::time::Instant,
        ) -> futures::future::BoxFuture<'_, Result<host::Decision, host::Refusal>> {
            Box::pin(std::future::ready(Ok(host::Decision {
                admitted: true,
                held: Vec::new(),
            })))
        }
    }

    #[test]
    fn host_call_floods_are_stopped_by_the_meter() {
        let pre = engine().load("misbehave", MISBEHAVE).unwrap();
        let limits = Limits {
            timeout: Duration::from_secs(5),
            ..Limits::default()
        };
        let flood = |behaviour: &str| {
            block_on(pre.evaluate(
                POD,
                &format!(r#"{{"behaviour":"{behaviour}"}}"#),
                &limits,
                None,
                Some(Box::new(Generous)),
            ))
        };
        for behaviour in ["log-flood", "reserve-flood"] {
            match flood(behaviour) {
                Err(Error::HostCalls(host::Abort::TooManyCalls(host::MAX_CALLS))) => {}
                other => panic!("{behaviour}: expected too many host calls, got {other:?}"),
            }
        }
        // 64 KiB a call: the memory's worth of data runs out first.
        match flood("list-flood") {
            Err(Error::Refused { refusal, .. }) => assert_eq!(refusal, "too large"),
            Err(Error::HostCalls(host::Abort::TooMuchData(_) | host::Abort::TooManyCalls(_))) => {}
            other => panic!("expected the meter to stop it, got {other:?}"),
        }
    }

    #[test]
    fn bytes_that_are_not_a_component_are_refused() {
        assert!(matches!(
            engine().load("junk", b"not wasm"),
            Err(Error::Compile(_))
        ));
    }

    fn cache_engine(dir: &std::path::Path) -> Engine {
        Engine::new(Config {
            cache_dir: dir.to_owned(),
            compiler: Compiler::InProcess,
            evaluations: None,
        })
        .unwrap()
    }

    fn artifacts(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    }

    #[test]
    fn a_second_engine_loads_artifacts_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        cache_engine(dir.path()).load("m", MISBEHAVE).unwrap();
        let first = artifacts(dir.path());
        assert_eq!(first.len(), 1);
        let modified = std::fs::metadata(&first[0]).unwrap().modified().unwrap();
        cache_engine(dir.path()).load("m", MISBEHAVE).unwrap();
        assert_eq!(artifacts(dir.path()), first);
        assert_eq!(
            std::fs::metadata(&first[0]).unwrap().modified().unwrap(),
            modified
        );
    }

    #[test]
    fn a_damaged_artifact_is_recompiled() {
        let dir = tempfile::tempdir().unwrap();
        let engine = cache_engine(dir.path());
        engine.load("m", MISBEHAVE).unwrap();
        let artifact = artifacts(dir.path()).remove(0);
        std::fs::write(&artifact, b"garbage").unwrap();
        engine.load("m", MISBEHAVE).unwrap();
        assert!(std::fs::read(&artifact).unwrap().len() > 1000);
    }

    #[test]
    fn an_artifact_sealed_under_another_key_is_not_loaded() {
        // A valid artifact, compiled by wasmtime, but planted by someone
        // without this cache's key: it is compiled again, not run.
        let theirs = tempfile::tempdir().unwrap();
        let ours = tempfile::tempdir().unwrap();
        cache_engine(theirs.path()).load("m", MISBEHAVE).unwrap();
        let engine = cache_engine(ours.path());
        let planted = engine.inner.cache.artifact_path(MISBEHAVE);
        std::fs::copy(artifacts(theirs.path()).remove(0), &planted).unwrap();
        let before = std::fs::read(&planted).unwrap();
        engine.load("m", MISBEHAVE).unwrap();
        assert_ne!(std::fs::read(&planted).unwrap(), before, "recompiled");
        // And the artifact of one component is not taken for another's.
        let other = engine.inner.cache.artifact_path(WORLD_V0_BYTES);
        std::fs::copy(&planted, &other).unwrap();
        engine.load("v0", WORLD_V0_BYTES).unwrap();
        assert_ne!(
            std::fs::read(&other).unwrap(),
            std::fs::read(&planted).unwrap()
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_cache_is_private_and_a_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        cache_engine(&cache);
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join("key")), 0o600);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let refused = Engine::new(Config {
            cache_dir: cache.clone(),
            compiler: Compiler::InProcess,
            evaluations: None,
        });
        match refused {
            Err(Error::Cache(cache::Error::Insecure { reason, .. })) => {
                assert!(
                    reason.contains("lets its group or others write it"),
                    "{reason}"
                )
            }
            other => panic!("expected an insecure cache, got {:?}", other.err()),
        }
    }
}
