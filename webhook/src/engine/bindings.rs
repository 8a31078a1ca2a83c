//! Host side of the `tollgate:policy` world's imports: the generated
//! bindings, and each import metered ([`super::host::Meter`]) before it
//! reaches the call's [`Host`]. Every import may trap: that is how the meter
//! stops a call that ran out of time or budget inside a host call.

use std::collections::BTreeMap;
use std::time::Instant;

use super::host::{Abort, Claim, Host, Refusal};
use super::limits::StoreState;

wasmtime::component::bindgen!({
    world: "policy",
    path: "../sdk/wit",
    // Reserving may wait on the apiserver: the evaluation yields meanwhile.
    imports: {
        "tollgate:policy/quota.reserve": async | trappable,
        default: trappable,
    },
});

use self::tollgate::policy::{context, log, quota, types};

/// Claims one `quota.reserve` may carry, and keys one `quota.usage` may ask
/// for: a policy checks a handful of scopes; thousands would hold the ledger.
const MAX_CLAIMS: usize = 64;
const MAX_KEYS: usize = 1024;

/// Why a policy without granted context cannot read it.
const NOT_GRANTED: &str = "this policy is granted no cluster context: list the kinds it reads under `context` in its configuration";

impl types::Host for StoreState {}

impl StoreState {
    /// Runs one import against the call's host: metered on entry, a refusal
    /// answered to the policy (and remembered), a passed deadline a trap.
    fn with_host<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Host, &mut super::host::Meter) -> Result<T, Refusal>,
    ) -> wasmtime::Result<Result<T, String>> {
        self.meter.enter()?;
        let Some(host) = self.host.as_deref_mut() else {
            return Ok(self.not_granted());
        };
        let result = f(host, &mut self.meter);
        self.answer(result)
    }

    /// The answer to a policy whose call has no host.
    fn not_granted<T>(&mut self) -> Result<T, String> {
        self.refused = Some(NOT_GRANTED.to_owned());
        Err(NOT_GRANTED.to_owned())
    }

    /// A host's result as the import answers it.
    fn answer<T>(&mut self, result: Result<T, Refusal>) -> wasmtime::Result<Result<T, String>> {
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(Refusal::DeadlinePassed) => Err(Abort::HostWaited.into()),
            Err(Refusal::Refused(error)) => {
                let message = error.to_string();
                self.refused = Some(message.clone());
                Ok(Err(message))
            }
        }
    }
}

impl log::Host for StoreState {
    fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        Ok(StoreState::log(self, level, &message)?)
    }
}

impl context::Host for StoreState {
    fn get(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        name: String,
    ) -> wasmtime::Result<Result<Option<String>, String>> {
        let result = self.with_host(|host, meter| {
            host.get(&api_version, &kind, &namespace, &name, meter.deadline())
        })?;
        if let Ok(Some(object)) = &result {
            self.meter.hand_over(object.len())?;
        }
        Ok(result)
    }

    fn list(
        &mut self,
        api_version: String,
        kind: String,
        namespace: String,
        label_selector: String,
    ) -> wasmtime::Result<Result<String, String>> {
        let result = self.with_host(|host, meter| {
            host.list(
                &api_version,
                &kind,
                &namespace,
                &label_selector,
                meter.room(),
                meter.deadline(),
            )
        })?;
        if let Ok(list) = &result {
            self.meter.hand_over(list.len())?;
        }
        Ok(result)
    }
}

/// Adds up repeated resources (a claim that names one twice asks for both).
fn amounts(pairs: Vec<(String, u64)>, merge: fn(u64, u64) -> u64) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for (resource, amount) in pairs {
        map.entry(resource)
            .and_modify(|a| *a = merge(*a, amount))
            .or_insert(amount);
    }
    map
}

impl quota::Host for StoreState {
    fn usage(&mut self, keys: Vec<String>) -> wasmtime::Result<Result<Vec<quota::Total>, String>> {
        if keys.len() > MAX_KEYS {
            self.meter.enter()?;
            return Ok(Err(format!(
                "quota.usage asked for {} keys; at most {MAX_KEYS} per call",
                keys.len()
            )));
        }
        let result = self.with_host(|host, _| host.usage(&keys))?;
        Ok(result.map(|usage| {
            usage
                .into_iter()
                .map(|u| quota::Total {
                    key: u.key,
                    resource: u.resource,
                    amount: u.amount,
                    objects: u.objects,
                })
                .collect()
        }))
    }

    async fn reserve(
        &mut self,
        claims: Vec<quota::Claim>,
    ) -> wasmtime::Result<Result<quota::Decision, String>> {
        if claims.len() > MAX_CLAIMS {
            self.meter.enter()?;
            return Ok(Err(format!(
                "quota.reserve got {} claims; at most {MAX_CLAIMS} per call",
                claims.len()
            )));
        }
        let claims: Vec<Claim> = claims
            .into_iter()
            .map(|c| Claim {
                scope: c.scope,
                asks: amounts(c.asks, u64::saturating_add),
                limits: amounts(c.limits, u64::min),
                usage: amounts(c.usage, u64::saturating_add),
            })
            .collect();
        self.meter.enter()?;
        let deadline = self.meter.deadline();
        let Some(host) = self.host.as_deref_mut() else {
            return Ok(self.not_granted());
        };
        // Waiting on the ledger takes no CPU: the slot serves others meanwhile.
        if let Some(slot) = &mut self.slot {
            slot.lend();
        }
        let result = host.reserve(claims, deadline).await;
        let taken_back = match &mut self.slot {
            Some(slot) => slot.take_back(deadline).await,
            None => true,
        };
        self.waited = Some(Instant::now());
        if !taken_back {
            return Err(Abort::HostWaited.into());
        }
        let result = self.answer(result)?;
        Ok(result.map(|decision| quota::Decision {
            admitted: decision.admitted,
            held: decision
                .held
                .into_iter()
                .map(|h| quota::Held {
                    scope: h.scope,
                    resource: h.resource,
                    amount: h.amount,
                })
                .collect(),
        }))
    }
}
