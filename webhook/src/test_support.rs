//! Shared fixtures for unit tests: one in-process engine with a cache that
//! lives for the test run, and the test-only `misbehave` component.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::context::Context;
use crate::engine::{self, Compiler, Engine};
use crate::policy::{Config, PolicySet};

/// The `misbehave` test policy (`tests/policies/misbehave`), as built by the
/// build script.
pub const MISBEHAVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policies/misbehave.wasm"));

/// `tests/policies/world-v0`: a component of the first policy world.
pub const WORLD_V0: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policies/world-v0.wasm"));

/// `tests/policies/start-loop`: a component whose start function loops.
pub const START_LOOP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/policies/start-loop.wasm"));

/// `tests/policies/prepare-probe`: a component whose `prepare` reports,
/// fails or loops.
pub const PREPARE_PROBE: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/policies/prepare-probe.wasm"));

/// `tests/opa-modules/opa-sample`: a core module of OPA's Wasm ABI.
pub const OPA_SAMPLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/opa/opa-sample.wasm"));

struct Shared {
    engine: Engine,
    dir: tempfile::TempDir,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("misbehave.wasm"), MISBEHAVE)
            .expect("writing misbehave.wasm");
        let engine = Engine::new(engine::Config {
            cache_dir: dir.path().join("cache"),
            compiler: Compiler::InProcess,
            evaluations: None,
        })
        .expect("engine");
        Shared { engine, dir }
    })
}

/// The shared engine.
pub fn engine() -> &'static Engine {
    &shared().engine
}

/// Path of `misbehave.wasm` on disk, for configurations.
pub fn misbehave_path() -> PathBuf {
    shared().dir.path().join("misbehave.wasm")
}

/// Loads a configuration given as YAML; `{misbehave}` in it is replaced by
/// the test policy's path.
pub fn policy_set(yaml: &str) -> PolicySet {
    policy_set_with(yaml, Arc::new(Context::none()))
}

/// [`policy_set`] reading `context`.
pub fn policy_set_with(yaml: &str, context: Arc<Context>) -> PolicySet {
    let yaml = yaml.replace("{misbehave}", &misbehave_path().display().to_string());
    let config = Config::parse(&yaml, "test.yaml", PathBuf::new()).expect("test configuration");
    PolicySet::load(&config, engine(), context)
}
