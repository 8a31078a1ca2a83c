//! What the programs of the core-module kinds (OPA's ABI, Kubewarden's
//! waPC) share: a store for one call, and the calling instance's memory.

use std::sync::Arc;

use wasmtime::{Caller, Extern, Memory, Store};

use super::host::{Host, LogRate};
use super::limits::{Limits, StoreState};
use super::pre::Window;
use super::{Engine, spare};

/// A store for one call of policy `name` within `window`, its deadline set;
/// `yielding` when the call runs as a future, `host` what its host calls
/// reach.
pub fn store(
    engine: &Engine,
    name: &str,
    limits: &Limits,
    window: &Window,
    yielding: bool,
    log_rate: &Arc<LogRate>,
    host: Option<Box<dyn Host>>,
) -> Store<StoreState> {
    let mut store = spare::new_store(
        &engine.inner.wasmtime,
        name.into(),
        limits.memory_bytes,
        log_rate.clone(),
    );
    store.data_mut().start_call(window.end, host, yielding);
    store.set_epoch_deadline(1);
    store
}

/// The calling instance's exported memory.
///
/// # Errors
///
/// The module exports none.
pub fn memory_of(caller: &mut Caller<'_, StoreState>) -> wasmtime::Result<Memory> {
    caller
        .get_export("memory")
        .and_then(Extern::into_memory)
        .ok_or_else(|| wasmtime::format_err!("the module exports no memory"))
}
