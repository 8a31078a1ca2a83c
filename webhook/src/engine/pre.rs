//! A policy prepared for fast instantiation, and one call of it.

use std::sync::Arc;

use wasmtime::component::InstancePre;
use wasmtime::{Store, Trap};

use super::bindings::{self, Policy};
use super::limits::{Limits, StoreState};
use super::spare::{Instance, Recipe, Spares};
use super::ticker::TICK;
use super::{Engine, Error};
use crate::context::Access;

/// What a policy returned, in host types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The denial's reason.
    pub message: Option<String>,
    /// HTTP status code of a denial.
    pub code: Option<u16>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// Audit annotations.
    pub audit_annotations: Vec<(String, String)>,
    /// The mutated object as JSON text.
    pub mutated_object: Option<String>,
}

impl Verdict {
    fn output_bytes(&self) -> usize {
        self.message.as_ref().map_or(0, String::len)
            + self.warnings.iter().map(String::len).sum::<usize>()
            + self
                .audit_annotations
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.mutated_object.as_ref().map_or(0, String::len)
    }
}

impl From<bindings::tollgate::policy::types::Verdict> for Verdict {
    fn from(v: bindings::tollgate::policy::types::Verdict) -> Self {
        Verdict {
            allowed: v.allowed,
            message: v.message,
            code: v.code,
            warnings: v.warnings,
            audit_annotations: v.audit_annotations,
            mutated_object: v.mutated_object,
        }
    }
}

/// One entry of a policy's `index` export: (key, resource, amount).
pub type IndexEntry = (String, String, u64);

/// A compiled, linked policy: type-checked once, instantiated per call.
///
/// Invariant: every call gets a fresh store and instance; nothing a call
/// writes is visible to the next one.
#[derive(Clone)]
pub struct PolicyPre {
    name: Arc<str>,
    pre: bindings::PolicyPre<StoreState>,
    /// Fresh instances made ahead of time; shared by clones of this handle.
    spares: Arc<Spares>,
    engine: Engine,
}

impl PolicyPre {
    pub(super) fn new(
        name: &str,
        pre: InstancePre<StoreState>,
        engine: Engine,
    ) -> Result<Self, Error> {
        let pre = bindings::PolicyPre::new(pre).map_err(Error::Link)?;
        Ok(PolicyPre {
            name: name.into(),
            pre,
            spares: Arc::default(),
            engine,
        })
    }

    /// Runs the policy's `validate-settings` on settings JSON text. The outer
    /// error is the sandbox's (trap, timeout); the inner one is the policy's
    /// verdict on the settings.
    ///
    /// # Errors
    ///
    /// When the policy could not run to completion within `limits`.
    pub fn validate_settings(
        &self,
        settings: &str,
        limits: &Limits,
    ) -> Result<Result<(), String>, Error> {
        let result = self.call(limits, |policy, store| {
            policy.call_validate_settings(store, settings)
        })?;
        if let Err(message) = &result
            && message.len() > limits.output_bytes
        {
            return Err(Error::OutputTooLarge {
                size: message.len(),
                limit: limits.output_bytes,
            });
        }
        Ok(result)
    }

    /// Evaluates one AdmissionRequest (JSON text) with settings (JSON text)
    /// in a fresh instance; `access` is what its context and quota imports
    /// may reach.
    ///
    /// # Errors
    ///
    /// A trap, timeout, memory or output cap, or the policy's own error.
    pub fn evaluate(
        &self,
        request: &str,
        settings: &str,
        limits: &Limits,
        access: Option<Access>,
    ) -> Result<Verdict, Error> {
        let verdict: Verdict = self
            .call(limits, |policy, store| {
                store.data_mut().access = access;
                policy.call_evaluate(store, request, settings)
            })?
            .map_err(Error::Policy)?
            .into();
        let size = verdict.output_bytes();
        if size > limits.output_bytes {
            return Err(Error::OutputTooLarge {
                size,
                limit: limits.output_bytes,
            });
        }
        Ok(verdict)
    }

    fn call<R>(
        &self,
        limits: &Limits,
        f: impl FnOnce(&Policy, &mut Store<StoreState>) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        let recipe = self.recipe(limits);
        let maker = &self.engine.inner.maker;
        let Instance { mut store, policy } = match self.spares.take(limits.memory_bytes) {
            Some(instance) => instance,
            None => match recipe.instantiate() {
                Ok(instance) => instance,
                Err((store, error)) => {
                    let error =
                        if error.downcast_ref::<Trap>().is_some() || store.data().memory_exceeded {
                            classify(&store, error, limits)
                        } else {
                            Error::Instantiate(error)
                        };
                    maker.recycle(&self.spares, &recipe, Some(store));
                    return Err(error);
                }
            },
        };
        let result = {
            let _active = self.engine.inner.ticker.active();
            // One tick more than the timeout, so that a call gets at least
            // the full timeout.
            let ticks = limits.timeout.as_millis().div_ceil(TICK.as_millis()) as u64 + 1;
            store.set_epoch_deadline(ticks);
            f(&policy, &mut store).map_err(|error| classify(&store, error, limits))
        };
        maker.recycle(&self.spares, &recipe, Some(store));
        result
    }

    /// Whether the component exports `index` (the `indexed-policy` world).
    pub fn indexes(&self) -> bool {
        self.pre
            .instance_pre()
            .component()
            .get_export_index(None, "index")
            .is_some()
    }

    /// Runs the policy's `index` export on one cluster object in a fresh
    /// instance (not a spare: indexing runs on cache updates, off the
    /// request path). `Ok(None)` when the component has no `index`.
    ///
    /// # Errors
    ///
    /// A trap, timeout, memory or output cap, or the policy's own error.
    pub fn index(
        &self,
        object: &str,
        settings: &str,
        limits: &Limits,
    ) -> Result<Option<Vec<IndexEntry>>, Error> {
        let mut store = self.recipe(limits).store();
        let instance = self
            .pre
            .instance_pre()
            .instantiate(&mut store)
            .map_err(Error::Instantiate)?;
        type Entries = Result<Vec<IndexEntry>, String>;
        let Ok(index) = instance.get_typed_func::<(&str, &str), (Entries,)>(&mut store, "index")
        else {
            return Ok(None);
        };
        let _active = self.engine.inner.ticker.active();
        let ticks = limits.timeout.as_millis().div_ceil(TICK.as_millis()) as u64 + 1;
        store.set_epoch_deadline(ticks);
        let (result,) = index
            .call(&mut store, (object, settings))
            .map_err(|error| classify(&store, error, limits))?;
        let entries = result.map_err(Error::Policy)?;
        let size: usize = entries.iter().map(|(k, r, _)| k.len() + r.len() + 8).sum();
        if size > limits.output_bytes {
            return Err(Error::OutputTooLarge {
                size,
                limit: limits.output_bytes,
            });
        }
        Ok(Some(entries))
    }

    fn recipe(&self, limits: &Limits) -> Recipe {
        Recipe {
            name: self.name.clone(),
            pre: self.pre.clone(),
            memory_bytes: limits.memory_bytes,
        }
    }

    /// Makes the first spares, so that the first requests do not
    /// instantiate inline.
    pub fn warm(&self, limits: &Limits) {
        let recipe = self.recipe(limits);
        self.engine.inner.maker.recycle(&self.spares, &recipe, None);
    }
}

/// Names what stopped a call: the memory cap, the deadline, or a trap.
fn classify(store: &Store<StoreState>, error: wasmtime::Error, limits: &Limits) -> Error {
    if store.data().memory_exceeded {
        return Error::MemoryLimit(limits.memory_bytes >> 20);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Error::Timeout(limits.timeout.as_millis() as u64),
        Some(trap) => Error::Trap(trap.to_string()),
        None => Error::Trap(format!("{error:#}")),
    }
}
