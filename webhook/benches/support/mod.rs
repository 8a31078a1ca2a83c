//! What the benchmarks share: the standard request, a request's deadline,
//! the engine of an in-process run, and latency distributions. Each bench
//! uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tollgate::engine::{self, Compiler, Engine};

/// `../shared/bench/pod-gpu-create.json`, the request every benchmark uses.
pub fn standard_request() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/bench/pod-gpu-create.json");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A request's deadline as the server gives it (the default maximum).
pub fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// An engine that compiles in process into `cache`, with evaluations
/// unbounded (as the offline commands run).
pub fn engine(cache: &Path) -> Engine {
    Engine::new(engine::Config {
        cache_dir: cache.to_owned(),
        compiler: Compiler::InProcess,
        evaluations: None,
    })
    .unwrap()
}

/// The times of `runs` calls of `run`, sorted.
pub fn sorted_times(runs: usize, mut run: impl FnMut()) -> Vec<Duration> {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            run();
            started.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// The `q` quantile of sorted `times`.
pub fn at(times: &[Duration], q: f64) -> Duration {
    times[((times.len() as f64 * q) as usize).min(times.len() - 1)]
}
