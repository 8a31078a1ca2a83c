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

/// Why a policy without granted context cannot read it.
const NOT_GRANTED: &str = "this policy is granted no cluster context: list the kinds it reads under `context` in its configuration";

impl StoreState {
    fn access(&mut self) -> Result<&mut crate::context::Access, String> {
        self.access.as_mut().ok_or_else(|| NOT_GRANTED.to_owned())
    }
}

impl self::tollgate::policy::context::Host for StoreState {
    fn get(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    ) -> Result<Option<String>, String> {
        self.access()?.get(&api_version, &kind, &namespace, &name)
    }

    fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: String,
    ) -> Result<String, String> {
        self.access()?
            .list(&api_version, &kind, &namespace, &label_selector)
    }
}

impl self::tollgate::policy::quota::Host for StoreState {
    fn usage(
        &mut self,
        keys: Vec<String>,
    ) -> Result<Vec<self::tollgate::policy::quota::Total>, String> {
        Ok(self
            .access()?
            .usage(&keys)?
            .into_iter()
            .map(|u| self::tollgate::policy::quota::Total {
                key: u.key,
                resource: u.resource,
                amount: u.amount,
                objects: u.objects,
            })
            .collect())
    }

    fn reserve(
        &mut self,
        claims: Vec<self::tollgate::policy::quota::Claim>,
    ) -> Result<self::tollgate::policy::quota::Decision, String> {
        let claims = claims
            .into_iter()
            .map(|c| crate::context::Claim {
                scope: c.scope,
                asks: c.asks,
                limits: c.limits,
                usage: c.usage,
            })
            .collect();
        let decision = self.access()?.reserve(claims)?;
        Ok(self::tollgate::policy::quota::Decision {
            admitted: decision.admitted,
            held: decision
                .held
                .into_iter()
                .map(
                    |(scope, resource, amount)| self::tollgate::policy::quota::Held {
                        scope,
                        resource,
                        amount,
                    },
                )
                .collect(),
        })
    }
}
