//! Per-call bounds and the store state that enforces the memory cap.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Access;

/// Bounds on one policy call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline. Enforced with epoch interruption at a 1 ms tick,
    /// so a call is stopped between `timeout` and `timeout` + 1 ms; host
    /// calls (logging) are not interrupted, but they are short.
    pub timeout: Duration,
    /// Cap on the policy's linear memory, in bytes. Guarantees that
    /// `memory.grow` past it fails (the guest sees an allocation failure,
    /// which for Rust guests is a trap). Does not count host-side copies of
    /// the policy's output: those are bounded by `output_bytes`.
    pub memory_bytes: usize,
    /// Cap on the total size of the strings the policy returns.
    pub output_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_millis(100),
            memory_bytes: 64 << 20,
            output_bytes: 4 << 20,
        }
    }
}

/// What a store carries: the policy's name for its log lines, the memory
/// cap with a note of whether the policy hit it (so that the resulting trap
/// can be reported as what it is), and the call's cluster access.
pub struct StoreState {
    /// The policy's name, for log lines.
    pub policy: Arc<str>,
    memory_bytes: usize,
    /// Set when a growth was refused.
    pub memory_exceeded: bool,
    /// What the current call may read and reserve; `None` for policies
    /// granted no context (their reads fail).
    pub access: Option<Access>,
}

impl StoreState {
    /// State for one call of `policy` capped at `memory_bytes`.
    pub fn new(policy: Arc<str>, memory_bytes: usize) -> Self {
        StoreState {
            policy,
            memory_bytes,
            memory_exceeded: false,
            access: None,
        }
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
