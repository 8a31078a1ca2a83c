//! Per-call bounds and the store state that enforces them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::host::{Abort, Host, LogRate, Meter, sanitize};
use super::kubewarden::Guest;
use super::slot::Slot;
use super::wasi;

/// Bounds on one policy call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline of one call, instantiation included. Enforced
    /// with epoch interruption at a 1 ms tick, so a call is stopped between
    /// `timeout` and `timeout` + 1 ms of Wasm execution; every host call
    /// checks it on entry, and host calls that do I/O are bounded by it. A
    /// request's own deadline may cut it shorter.
    pub timeout: Duration,
    /// Cap on the policy's linear memory, in bytes. Guarantees that
    /// `memory.grow` past it fails (the guest sees an allocation failure,
    /// which for Rust guests is a trap), and bounds what host calls may hand
    /// the policy in one call. Host-side copies of the policy's output are
    /// bounded by `output_bytes` instead.
    pub memory_bytes: usize,
    /// Cap on the total size of the strings a call returns, checked before
    /// they are copied out of the sandbox.
    pub output_bytes: usize,
    /// Cap on the number of warnings, annotations or index entries a call
    /// returns, checked before any is copied out of the sandbox.
    pub output_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            output_bytes: 4 << 20,
            output_items: 256,
        }
    }
}

/// What a store carries: the policy's name for its log lines, the memory
/// cap with a note of whether the policy hit it (so that the resulting trap
/// can be reported as what it is), the call's host capabilities and the
/// meter on them.
pub struct StoreState {
    /// The policy's name, for log lines.
    pub policy: Arc<str>,
    memory_bytes: usize,
    /// Set when a growth was refused.
    pub memory_exceeded: bool,
    /// What the current call may read and reserve; `None` for policies
    /// granted no context (their reads are refused).
    pub host: Option<Box<dyn Host>>,
    /// The current call's budget of host calls.
    pub meter: Meter,
    /// The policy's log rate, shared by all its calls.
    pub log_rate: Arc<LogRate>,
    /// The last refusal a host call answered, to tell a policy that failed
    /// because of it from one that failed on its own.
    pub refused: Option<String>,
    /// Whether the current call runs as a future that yields to the async
    /// executor at every epoch tick (rather than blocking its thread).
    pub yielding: bool,
    /// The evaluation slot the current call holds, lent back while a host
    /// call waits on I/O.
    pub slot: Option<Slot>,
    /// When the current call's last wait on host I/O ended.
    pub waited: Option<Instant>,
    /// A Kubewarden module's waPC exchange and WASI context.
    pub wapc: Option<Box<Guest>>,
    /// A component's WASI context (`wasi: true`), made on first use.
    pub wasi: Option<Box<wasi::P2>>,
}

impl StoreState {
    /// State for calls of `policy` capped at `memory_bytes`.
    pub fn new(policy: Arc<str>, memory_bytes: usize, log_rate: Arc<LogRate>) -> Self {
        StoreState {
            policy,
            memory_bytes,
            memory_exceeded: false,
            host: None,
            meter: Meter::new(Instant::now(), memory_bytes),
            log_rate,
            refused: None,
            yielding: false,
            slot: None,
            waited: None,
            wapc: None,
            wasi: None,
        }
    }

    /// Prepares the state for a call ending at `deadline`; `yielding` when
    /// it runs as a future.
    pub fn start_call(&mut self, deadline: Instant, host: Option<Box<dyn Host>>, yielding: bool) {
        self.host = host;
        self.meter = Meter::new(deadline, self.memory_bytes);
        self.refused = None;
        self.waited = None;
        self.yielding = yielding;
    }
}

impl StoreState {
    /// The waPC guest's state, made on first use.
    pub fn wapc_mut(&mut self) -> &mut Guest {
        self.wapc.get_or_insert_with(Box::default)
    }

    /// Logs what the policy wrote to stdout and stderr through WASI (a
    /// line each, within the log limits), and returns it.
    pub fn log_written(&mut self) -> String {
        let written = match (&self.wapc, &self.wasi) {
            (Some(guest), _) => guest.wasi.written(),
            (None, Some(wasi)) => wasi.written(),
            (None, None) => return String::new(),
        };
        for line in written.lines().filter(|line| !line.trim().is_empty()) {
            // A stopped meter only drops lines here.
            let _ = self.log(tracing::Level::INFO, line);
        }
        written
    }

    /// Writes one of the policy's log lines, within its per-call and
    /// per-second limits (a host call: the meter counts it).
    ///
    /// # Errors
    ///
    /// The meter stopped the call.
    pub fn log(&mut self, level: tracing::Level, message: &str) -> Result<(), Abort> {
        self.meter.enter()?;
        if !self.meter.log_line(&self.log_rate) {
            return Ok(());
        }
        let message = sanitize(message);
        let policy = &*self.policy;
        match level {
            tracing::Level::TRACE => tracing::trace!(policy, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(policy, "{message}"),
            tracing::Level::INFO => tracing::info!(policy, "{message}"),
            tracing::Level::WARN => tracing::warn!(policy, "{message}"),
            tracing::Level::ERROR => tracing::error!(policy, "{message}"),
        }
        Ok(())
    }
}

impl wasmtime::ResourceLimiter for StoreState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a policy needs few. Refuse growth
        // past what the pool reserves.
        Ok(desired <= 20_000)
    }
}

impl wasmtime_wasi::WasiView for StoreState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        self.wasi.get_or_insert_with(Box::default).view()
    }
}
