//! A call's results, checked against the output caps.
//!
//! wasmtime copies an export's results out of the sandbox while lifting
//! them, before it runs the component's `post-return`, which frees them and
//! may reuse that memory at once (componentize-py's does; results read
//! lazily after it came back as garbage). That copy is bounded by wasmtime's
//! hostcall fuel (128 MiB of host data per call: ten million empty warnings
//! stop there); the counts of warnings, annotations and index entries and
//! the bytes of every string are then checked against the policy's caps.

use wasmtime::component::{ComponentType, Lift};

use super::Error;
use super::limits::Limits;

/// The `verdict` record, as lifted.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct RawVerdict {
    allowed: bool,
    message: Option<String>,
    code: Option<u16>,
    warnings: Vec<String>,
    #[component(name = "audit-annotations")]
    audit_annotations: Vec<(String, String)>,
    #[component(name = "mutated-object")]
    mutated_object: Option<String>,
}

/// What `evaluate` returns.
pub type RawEvaluation = Result<RawVerdict, String>;

/// What `validate-settings` returns.
pub type RawSettings = Result<(), String>;

/// What `index` returns.
pub type RawIndex = Result<Vec<(String, String, u64)>, String>;

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

/// The caps of one call's output, consumed as strings are counted.
struct Budget<'l> {
    bytes: usize,
    limits: &'l Limits,
}

impl<'l> Budget<'l> {
    fn new(limits: &'l Limits) -> Self {
        Budget { bytes: 0, limits }
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

    /// Counts one string, if the bytes so far leave room for it.
    fn string(&mut self, text: String) -> Result<String, Error> {
        self.bytes = self.bytes.saturating_add(text.len());
        if self.bytes > self.limits.output_bytes {
            return Err(Error::OutputTooLarge {
                size: self.bytes,
                limit: self.limits.output_bytes,
            });
        }
        Ok(text)
    }

    fn optional(&mut self, text: Option<String>) -> Result<Option<String>, Error> {
        text.map(|t| self.string(t)).transpose()
    }
}

/// Checks a verdict (or the policy's error) against the caps.
///
/// # Errors
///
/// Output over the caps; the policy's own error as [`Error::Policy`] (or
/// [`Error::Refused`] after a host refusal, `refused`).
pub fn verdict(
    raw: RawEvaluation,
    refused: Option<&str>,
    limits: &Limits,
) -> Result<Verdict, Error> {
    let mut budget = Budget::new(limits);
    let raw = match raw {
        Ok(raw) => raw,
        Err(message) => return Err(policy_error(refused, budget.string(message)?)),
    };
    budget.items(raw.warnings.len() + raw.audit_annotations.len())?;
    Ok(Verdict {
        allowed: raw.allowed,
        code: raw.code,
        message: budget.optional(raw.message)?,
        warnings: raw
            .warnings
            .into_iter()
            .map(|w| budget.string(w))
            .collect::<Result<_, _>>()?,
        audit_annotations: raw
            .audit_annotations
            .into_iter()
            .map(|(k, v)| Ok((budget.string(k)?, budget.string(v)?)))
            .collect::<Result<_, Error>>()?,
        mutated_object: budget.optional(raw.mutated_object)?,
    })
}

/// Checks `validate-settings`' answer: the policy's message when it refused.
///
/// # Errors
///
/// The message is over the caps.
pub fn settings(raw: RawSettings, limits: &Limits) -> Result<Result<(), String>, Error> {
    match raw {
        Ok(()) => Ok(Ok(())),
        Err(message) => Ok(Err(Budget::new(limits).string(message)?)),
    }
}

/// Checks `index`' entries.
///
/// # Errors
///
/// Output over the caps, or the policy's own error.
pub fn index(
    raw: RawIndex,
    refused: Option<&str>,
    limits: &Limits,
) -> Result<Vec<IndexEntry>, Error> {
    let mut budget = Budget::new(limits);
    match raw {
        Ok(entries) => {
            budget.items(entries.len())?;
            entries
                .into_iter()
                .map(|(key, resource, amount)| {
                    Ok((budget.string(key)?, budget.string(resource)?, amount))
                })
                .collect()
        }
        Err(message) => Err(policy_error(refused, budget.string(message)?)),
    }
}

/// The policy's own error, named a refusal when a host call had refused it.
pub fn policy_error(refused: Option<&str>, message: String) -> Error {
    match refused {
        Some(refusal) => Error::Refused {
            message,
            refusal: refusal.to_owned(),
        },
        None => Error::Policy(message),
    }
}
