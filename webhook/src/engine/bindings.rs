//! Host side of the `tollgate:policy` world: the generated bindings and the
//! imports the host provides.

use super::limits::StoreState;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../sdk/wit",
});

/// Longest log line a policy may write; longer ones are cut, so a policy
/// cannot flood the host's log with one call.
const MAX_LOG_LINE: usize = 4096;

impl self::tollgate::policy::types::Host for StoreState {}

impl self::tollgate::policy::log::Host for StoreState {
    fn log(&mut self, level: self::tollgate::policy::log::Level, message: String) {
        use self::tollgate::policy::log::Level;
        let message = match message.char_indices().nth(MAX_LOG_LINE) {
            Some((cut, _)) => &message[..cut],
            None => &message[..],
        };
        let policy = &*self.policy;
        match level {
            Level::Trace => tracing::trace!(policy, "{message}"),
            Level::Debug => tracing::debug!(policy, "{message}"),
            Level::Info => tracing::info!(policy, "{message}"),
            Level::Warn => tracing::warn!(policy, "{message}"),
            Level::Error => tracing::error!(policy, "{message}"),
        }
    }
}
