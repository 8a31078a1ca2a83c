//! The evaluation chain: which policies run for a request, in what order,
//! and how their verdicts combine into one answer.
//!
//! - `/mutate` ([`PolicySet::mutate`]): mutating policies in configuration
//!   order, each on the object as the previous one left it; one JSON Patch
//!   from the original to the final object. The first enforced denial stops
//!   the chain.
//! - `/validate` ([`PolicySet::validate`]): every matching validating policy
//!   on the object as it arrived (after the apiserver applied mutations);
//!   all denials are reported together.
//! - [`PolicySet::review`]: both, as the apiserver's two calls would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::{FailurePolicy, Mode};
use super::matcher;
use super::request::Request;
use super::set::{LoadedPolicy, PolicySet};
use crate::engine;

/// What one policy did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Result {
    /// Allowed, unchanged.
    Allowed,
    /// Allowed with a mutation.
    Mutated,
    /// Denied (whatever its mode made of that).
    Denied,
    /// Could not reach a verdict; its failure policy applied.
    Failed,
}

impl Result {
    /// Label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Result::Allowed => "allowed",
            Result::Mutated => "mutated",
            Result::Denied => "denied",
            Result::Failed => "failed",
        }
    }
}

/// One policy evaluation, for metrics and the decision log.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The policy.
    pub policy: Arc<str>,
    /// Its mode.
    pub mode: Mode,
    /// What it did.
    pub result: Result,
    /// Its message (denial reason or failure).
    pub message: Option<String>,
    /// Wall time of the call.
    pub duration: Duration,
}

/// The combined answer to one request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// HTTP status code of a denial.
    pub code: u16,
    /// The denial's message: each denying policy named with its reason.
    pub message: Option<String>,
    /// Warnings for the user.
    pub warnings: Vec<String>,
    /// Audit annotations (`<policy>.<key>`).
    pub audit_annotations: Vec<(String, String)>,
    /// The patch from the original to the final object.
    pub patch: Option<json_patch::Patch>,
    /// The final object, when the chain changed it.
    pub final_object: Option<String>,
    /// Every policy that ran.
    pub evaluations: Vec<Evaluation>,
}

impl Outcome {
    fn allowed() -> Self {
        Outcome { allowed: true, ..Outcome::default() }
    }

    fn deny(&mut self, code: u16, message: String) {
        if self.allowed {
            self.allowed = false;
            self.code = code;
        }
        self.message = Some(match self.message.take() {
            Some(previous) => format!("{previous}; {message}"),
            None => message,
        });
    }
}

/// A policy's verdict after failure handling: what the chain acts on.
enum Step {
    Verdict(engine::Verdict),
    Failed(String),
}

impl PolicySet {
    /// Runs the mutating chain.
    pub fn mutate(&self, request: &Request<'_>) -> Outcome {
        let mut outcome = Outcome::allowed();
        let mut current: Option<(String, serde_json::Value)> = None;
        for position in self.mutating.candidates(&request.group, &request.kind) {
            let policy = &self.policies[position];
            if !matcher::matches(&policy.config.matches, request, self.namespaces.as_ref()) {
                continue;
            }
            let text = current.as_ref().map(|(object, _)| request.with_object(object));
            let (step, duration) = run(policy, text.as_deref().unwrap_or(request.text));
            let step = match step {
                Step::Verdict(verdict) if verdict.allowed && verdict.mutated_object.is_some() => {
                    let object = verdict.mutated_object.clone().expect("checked");
                    match serde_json::from_str::<serde_json::Value>(&object) {
                        Ok(value) if value.is_object() => {
                            if policy.config.mode == Mode::Enforce {
                                current = Some((object, value));
                            }
                            Step::Verdict(verdict)
                        }
                        _ => Step::Failed("the mutated object is not a JSON object".into()),
                    }
                }
                step => step,
            };
            record(&mut outcome, policy, step, duration);
            if !outcome.allowed {
                return outcome;
            }
        }
        if let Some((object, value)) = current
            && let Some(original) = request.object_text()
        {
            match serde_json::from_str::<serde_json::Value>(original) {
                Ok(original) => {
                    let patch = json_patch::diff(&original, &value);
                    if !patch.0.is_empty() {
                        outcome.patch = Some(patch);
                        outcome.final_object = Some(object);
                    }
                }
                Err(error) => outcome.deny(400, format!("the object is not valid JSON: {error}")),
            }
        }
        outcome
    }

    /// Runs every matching validating policy.
    pub fn validate(&self, request: &Request<'_>) -> Outcome {
        let mut outcome = Outcome::allowed();
        for position in self.validating.candidates(&request.group, &request.kind) {
            let policy = &self.policies[position];
            if !matcher::matches(&policy.config.matches, request, self.namespaces.as_ref()) {
                continue;
            }
            let (step, duration) = run(policy, request.text);
            record(&mut outcome, policy, step, duration);
        }
        outcome
    }

    /// Both calls of the apiserver: the mutating chain, then the validating
    /// policies on its result.
    pub fn review(&self, request: &Request<'_>) -> Outcome {
        let mut outcome = self.mutate(request);
        if !outcome.allowed {
            return outcome;
        }
        let mutated_text = outcome.final_object.as_deref().map(|object| request.with_object(object));
        let validated = match (&mutated_text, &outcome.final_object, &request.object) {
            (Some(text), Some(object), Some(range)) => {
                self.validate(&request.with_text(text, range.start..range.start + object.len()))
            }
            _ => self.validate(request),
        };
        outcome.allowed = validated.allowed;
        outcome.code = validated.code;
        outcome.message = validated.message;
        outcome.warnings.extend(validated.warnings);
        outcome.audit_annotations.extend(validated.audit_annotations);
        outcome.evaluations.extend(validated.evaluations);
        outcome
    }
}

/// Evaluates one policy and turns every way it can go wrong into a
/// [`Step::Failed`].
fn run(policy: &LoadedPolicy, request: &str) -> (Step, Duration) {
    let started = Instant::now();
    let step = match &policy.module {
        Err(error) => Step::Failed(format!("the policy failed to load: {error}")),
        Ok(module) => match module.evaluate(request, &policy.settings, &policy.limits) {
            Ok(verdict) if verdict.mutated_object.is_some() && !policy.config.mutating => {
                Step::Failed("the policy returned a mutation but is not configured with mutating: true".into())
            }
            Ok(verdict) => Step::Verdict(verdict),
            Err(error) => Step::Failed(error.to_string()),
        },
    };
    (step, started.elapsed())
}

/// Folds one policy's step into the outcome according to its mode and
/// failure policy.
fn record(outcome: &mut Outcome, policy: &LoadedPolicy, step: Step, duration: Duration) {
    let name = &policy.name;
    let mode = policy.config.mode;
    let (result, message) = match step {
        Step::Failed(error) => {
            match policy.config.failure_policy {
                FailurePolicy::Fail => outcome.deny(500, format!("policy {name:?} failed: {error} (failurePolicy: fail)")),
                FailurePolicy::Ignore => {
                    outcome.warnings.push(format!("policy {name:?} failed and was ignored: {error}"));
                }
            }
            (Result::Failed, Some(error))
        }
        Step::Verdict(verdict) => {
            for warning in verdict.warnings {
                outcome.warnings.push(format!("{name}: {warning}"));
            }
            for (key, value) in verdict.audit_annotations {
                outcome.audit_annotations.push((format!("{name}.{key}"), value));
            }
            if verdict.allowed {
                let mutated = verdict.mutated_object.is_some();
                match (mutated, mode) {
                    (true, Mode::Warn) => outcome.warnings.push(format!("{name}: would change the object (mode: warn)")),
                    (true, Mode::Audit) => {
                        outcome.audit_annotations.push((format!("{name}.would-mutate"), "true".into()));
                    }
                    _ => {}
                }
                (if mutated { Result::Mutated } else { Result::Allowed }, None)
            } else {
                let reason = verdict.message.unwrap_or_else(|| "denied without a message".into());
                match mode {
                    Mode::Enforce => outcome.deny(verdict.code.unwrap_or(403), format!("{name}: {reason}")),
                    Mode::Warn => outcome.warnings.push(format!("{name}: {reason}")),
                    Mode::Audit => outcome.audit_annotations.push((format!("{name}.violation"), reason.clone())),
                }
                (Result::Denied, Some(reason))
            }
        }
    };
    outcome.evaluations.push(Evaluation { policy: name.clone(), mode, result, message, duration });
}
