//! A call's results, read out of the sandbox under the output caps.
//!
//! The exports are called with result types that wasmtime lifts lazily
//! ([`WasmStr`], [`WasmList`]): lifting checks only that each list and
//! string lies within the guest's memory. The counts of warnings,
//! annotations and index entries are checked before any element is read,
//! and the bytes of every string before it is copied out, so a policy that
//! returns ten million empty warnings or a hundred megabytes of message
//! costs the host a bounds check, not an allocation per item.

use wasmtime::Store;
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};

use super::Error;
use super::limits::{Limits, StoreState};

/// The `verdict` record, not yet copied out.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct RawVerdict {
    allowed: bool,
    message: Option<WasmStr>,
    code: Option<u16>,
    warnings: WasmList<WasmStr>,
    #[component(name = "audit-annotations")]
    audit_annotations: WasmList<(WasmStr, WasmStr)>,
    #[component(name = "mutated-object")]
    mutated_object: Option<WasmStr>,
}

/// What `evaluate` returns.
pub type RawEvaluation = Result<RawVerdict, WasmStr>;

/// What `validate-settings` returns.
pub type RawSettings = Result<(), WasmStr>;

/// What `index` returns.
pub type RawIndex = Result<WasmList<(WasmStr, WasmStr, u64)>, WasmStr>;

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

/// One entry of a policy's `index` export: (key, resource, amount).
pub type IndexEntry = (String, String, u64);

/// The caps of one call's output, consumed as strings are copied out.
struct Budget<'s> {
    store: &'s mut Store<StoreState>,
    bytes: usize,
    limits: &'s Limits,
}

impl<'s> Budget<'s> {
    fn new(store: &'s mut Store<StoreState>, limits: &'s Limits) -> Self {
        Budget {
            store,
            bytes: 0,
            limits,
        }
    }

    /// Fails when a call returns more items than allowed.
    fn items(&self, items: usize) -> Result<(), Error> {
        if items > self.limits.output_items {
            return Err(Error::OutputTooManyItems {
                items,
                limit: self.limits.output_items,
            });
        }
        Ok(())
    }

    /// Copies one string out, if the bytes so far leave room for it.
    fn string(&mut self, text: &WasmStr) -> Result<String, Error> {
        let text = text
            .to_str(&*self.store)
            .map_err(|e| Error::InvalidOutput(format!("{e:#}")))?;
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.limits.output_bytes {
            return Err(Error::OutputTooLarge {
                size: self.bytes,
                limit: self.limits.output_bytes,
            });
        }
        Ok(text.into_owned())
    }

    fn optional(&mut self, text: Option<&WasmStr>) -> Result<Option<String>, Error> {
        text.map(|t| self.string(t)).transpose()
    }

    /// Copies every element of a list out, once its length is known to fit.
    fn list<T: Lift, U>(
        &mut self,
        list: &WasmList<T>,
        mut each: impl FnMut(&mut Self, T) -> Result<U, Error>,
    ) -> Result<Vec<U>, Error> {
        let mut out = Vec::with_capacity(list.len());
        let elements: Vec<T> = list
            .iter(&mut *self.store)
            .and_then(Iterator::collect)
            .map_err(|e| Error::InvalidOutput(format!("{e:#}")))?;
        for element in elements {
            out.push(each(self, element)?);
        }
        Ok(out)
    }
}

/// Reads a verdict (or the policy's error) out of the sandbox.
///
/// # Errors
///
/// Output over the caps, or not valid UTF-8; the policy's own error as
/// [`Error::Policy`] (or [`Error::Refused`] after a host refusal).
pub fn verdict(
    store: &mut Store<StoreState>,
    raw: RawEvaluation,
    limits: &Limits,
) -> Result<Verdict, Error> {
    let mut budget = Budget::new(store, limits);
    let raw = match raw {
        Ok(raw) => raw,
        Err(message) => {
            let message = budget.string(&message)?;
            return Err(policy_error(store, message));
        }
    };
    budget.items(raw.warnings.len() + raw.audit_annotations.len())?;
    Ok(Verdict {
        allowed: raw.allowed,
        code: raw.code,
        message: budget.optional(raw.message.as_ref())?,
        warnings: budget.list(&raw.warnings, |b, w| b.string(&w))?,
        audit_annotations: budget.list(&raw.audit_annotations, |b, (k, v)| {
            Ok((b.string(&k)?, b.string(&v)?))
        })?,
        mutated_object: budget.optional(raw.mutated_object.as_ref())?,
    })
}

/// Reads `validate-settings`' answer: the policy's message when it refused.
///
/// # Errors
///
/// The message is over the caps, or not valid UTF-8.
pub fn settings(
    store: &mut Store<StoreState>,
    raw: RawSettings,
    limits: &Limits,
) -> Result<Result<(), String>, Error> {
    match raw {
        Ok(()) => Ok(Ok(())),
        Err(message) => Ok(Err(Budget::new(store, limits).string(&message)?)),
    }
}

/// Reads `index`' entries.
///
/// # Errors
///
/// Output over the caps or not UTF-8, or the policy's own error.
pub fn index(
    store: &mut Store<StoreState>,
    raw: RawIndex,
    limits: &Limits,
) -> Result<Vec<IndexEntry>, Error> {
    let mut budget = Budget::new(store, limits);
    match raw {
        Ok(entries) => {
            budget.items(entries.len())?;
            budget.list(&entries, |b, (key, resource, amount)| {
                Ok((b.string(&key)?, b.string(&resource)?, amount))
            })
        }
        Err(message) => {
            let message = budget.string(&message)?;
            Err(policy_error(store, message))
        }
    }
}

/// The policy's own error, named a refusal when a host call had refused it.
fn policy_error(store: &Store<StoreState>, message: String) -> Error {
    match &store.data().refused {
        Some(refusal) => Error::Refused {
            message,
            refusal: refusal.clone(),
        },
        None => Error::Policy(message),
    }
}
