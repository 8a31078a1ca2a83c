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
//!
//! Every request has one deadline. Each policy's own deadline is cut to
//! what is left of it, and a policy reached after it passed is not run: its
//! `failurePolicy` applies, as to any other [`Failure`].

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::breaker::Suspended;
use super::config::{FailurePolicy, Mode, Operation};
use super::matcher::{self, Matched};
use super::output::{self, Identity, Invalid};
use super::request::Request;
use super::set::{LoadError, LoadedPolicy, PolicySet};
use super::{immutable, patch};
use crate::context::{Access, Kind, ObjectKey, Subject};
use crate::engine::{self, Host};

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

/// Why a policy reached no verdict.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// It failed to load.
    #[error("the policy failed to load: {0}")]
    Load(Arc<LoadError>),
    /// The sandbox stopped it, or it reported an error.
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// Its verdict says something the apiserver cannot take.
    #[error(transparent)]
    Output(#[from] Invalid),
    /// It is suspended after repeated misbehaviour.
    #[error(transparent)]
    Suspended(#[from] Suspended),
    /// The request's deadline had passed before its turn.
    #[error("the request's deadline passed before the policy ran")]
    NotRun,
    /// Its namespace selector could not be checked: the namespace's labels
    /// are unknown.
    #[error("its namespaceSelector cannot be checked: {0}")]
    Namespace(crate::context::Error),
}

impl Failure {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Load(_) => "load",
            Failure::Engine(error) => error.reason(),
            Failure::Output(_) => "output",
            Failure::Suspended(_) => "suspended",
            Failure::NotRun => "request-deadline",
            Failure::Namespace(_) => "namespace",
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
    /// Why it failed ([`Failure::reason`]), when it did.
    pub reason: Option<&'static str>,
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
    /// Each applied mutation as (index in `evaluations`, the object after
    /// it), kept only when the set keeps mutations (for the decision log).
    pub mutations: Vec<(usize, String)>,
}

impl Outcome {
    fn allowed() -> Self {
        Outcome {
            allowed: true,
            ..Outcome::default()
        }
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
    /// A verdict; `mutated` says whether it carried a mutated object (which
    /// the mutating chain may have taken out of it).
    Verdict {
        verdict: engine::Verdict,
        mutated: bool,
    },
    Failed(Failure),
}

impl PolicySet {
    /// Runs the mutating chain; it ends by `deadline`.
    pub async fn mutate(&self, request: &Request<'_>, deadline: Instant) -> Outcome {
        self.mutate_where(request, deadline, None).await
    }

    /// Runs the mutating policies whose failure policy is `only` (the
    /// webhook of that failure policy), in chain order.
    pub async fn mutate_only(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        only: FailurePolicy,
    ) -> Outcome {
        self.mutate_where(request, deadline, Some(only)).await
    }

    async fn mutate_where(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        only: Option<FailurePolicy>,
    ) -> Outcome {
        let mut outcome = Outcome::allowed();
        let mut current: Option<String> = None;
        // What every mutation must still be.
        let identity = Identity {
            api_version: match request.group.as_ref() {
                "" => Cow::Borrowed(request.version.as_ref()),
                group => Cow::Owned(format!("{group}/{}", request.version)),
            },
            kind: &request.kind,
            name: &request.name,
            namespace: &request.namespace,
        };
        for position in self.mutating.candidates(&request.group, &request.kind) {
            let policy = &self.policies[position];
            match self.applies(policy, request, only, deadline).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(failure) => {
                    record(&mut outcome, policy, Step::Failed(failure), Duration::ZERO);
                    if !outcome.allowed {
                        self.release_if_denied(&outcome, request);
                        return outcome;
                    }
                    continue;
                }
            }
            let text = current.as_ref().map(|object| request.with_object(object));
            let (step, duration) = self
                .run(
                    policy,
                    request,
                    text.as_deref().unwrap_or(request.text),
                    deadline,
                )
                .await;
            let step = match step {
                Step::Verdict {
                    mut verdict,
                    mutated: true,
                } if verdict.allowed => {
                    let object = verdict.mutated_object.take().unwrap_or_default();
                    let checked = match request.object {
                        Some(_) => output::check_mutation(&identity, &object),
                        None => Err(Invalid::NotAnObject(
                            "the request carries no object to mutate".into(),
                        )),
                    };
                    let immutable = match (checked.is_ok(), request.operation) {
                        (true, Operation::Update) => {
                            self.immutable_change(request, current.as_deref(), &object)
                        }
                        _ => None,
                    };
                    match (checked, immutable) {
                        // Applied, the whole UPDATE would be refused: the
                        // workload keeps running as it is, without it.
                        (Ok(()), Some(path)) => {
                            verdict.warnings.push(format!(
                                "its change of {path} was left out: {} {} may not change it on UPDATE",
                                request.kind, request.name
                            ));
                            Step::Verdict {
                                verdict,
                                mutated: false,
                            }
                        }
                        (Ok(()), None) => {
                            if policy.config.mode == Mode::Enforce {
                                if self.keep_mutations {
                                    outcome
                                        .mutations
                                        .push((outcome.evaluations.len(), object.clone()));
                                }
                                current = Some(object);
                            }
                            Step::Verdict {
                                verdict,
                                mutated: true,
                            }
                        }
                        (Err(invalid), _) => Step::Failed(invalid.into()),
                    }
                }
                step => step,
            };
            record(&mut outcome, policy, step, duration);
            if !outcome.allowed {
                self.release_if_denied(&outcome, request);
                return outcome;
            }
        }
        if let Some(object) = current
            && let Some(original) = request.object_text()
        {
            match patch::diff(original, &object) {
                Ok(patch) => {
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

    /// Runs every matching validating policy; they end by `deadline`.
    pub async fn validate(&self, request: &Request<'_>, deadline: Instant) -> Outcome {
        self.validate_where(request, deadline, None).await
    }

    /// Runs the matching validating policies whose failure policy is `only`.
    pub async fn validate_only(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        only: FailurePolicy,
    ) -> Outcome {
        self.validate_where(request, deadline, Some(only)).await
    }

    async fn validate_where(
        &self,
        request: &Request<'_>,
        deadline: Instant,
        only: Option<FailurePolicy>,
    ) -> Outcome {
        let mut outcome = Outcome::allowed();
        for position in self.validating.candidates(&request.group, &request.kind) {
            let policy = &self.policies[position];
            match self.applies(policy, request, only, deadline).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(failure) => {
                    record(&mut outcome, policy, Step::Failed(failure), Duration::ZERO);
                    continue;
                }
            }
            let (step, duration) = self.run(policy, request, request.text, deadline).await;
            record(&mut outcome, policy, step, duration);
        }
        self.release_if_denied(&outcome, request);
        outcome
    }

    /// Both calls of the apiserver: the mutating chain, then the validating
    /// policies on its result, all by `deadline`.
    pub async fn review(&self, request: &Request<'_>, deadline: Instant) -> Outcome {
        let mut outcome = self.mutate(request, deadline).await;
        if !outcome.allowed {
            return outcome;
        }
        let validated = match (outcome.final_object.as_deref(), &request.object) {
            (Some(object), Some(range)) => {
                let text = request.with_object(object);
                let end = range.start + object.len();
                self.validate(&request.with_text(&text, range.start..end), deadline)
                    .await
            }
            _ => self.validate(request, deadline).await,
        };
        outcome.allowed = validated.allowed;
        outcome.code = validated.code;
        outcome.message = validated.message;
        outcome.warnings.extend(validated.warnings);
        outcome
            .audit_annotations
            .extend(validated.audit_annotations);
        outcome.evaluations.extend(validated.evaluations);
        outcome
    }

    /// The first field an UPDATE may not change that `mutated` changes from
    /// the chain's current object (`current`, else the request's).
    fn immutable_change(
        &self,
        request: &Request<'_>,
        current: Option<&str>,
        mutated: &str,
    ) -> Option<String> {
        let before = current.or_else(|| request.object_text())?;
        let patch = patch::diff(before, mutated).ok()?;
        immutable::first_violation(&request.group, &request.kind, &patch).map(str::to_owned)
    }

    /// Whether `policy` runs for `request` in a call for `only` (`None`:
    /// every failure policy).
    ///
    /// # Errors
    ///
    /// Its namespace selector needs labels that could not be read.
    async fn applies(
        &self,
        policy: &LoadedPolicy,
        request: &Request<'_>,
        only: Option<FailurePolicy>,
        deadline: Instant,
    ) -> std::result::Result<bool, Failure> {
        if only.is_some_and(|only| policy.config.failure_policy != only) {
            return Ok(false);
        }
        let rule = &policy.config.matches;
        match matcher::matches(rule, request, self.context.as_ref()) {
            Matched::Yes => Ok(true),
            Matched::No => Ok(false),
            Matched::NeedsNamespace => {
                let labels = self
                    .context
                    .namespace_labels(&request.namespace, deadline)
                    .await
                    .map_err(Failure::Namespace)?;
                Ok(matcher::matches_with_labels(rule, request, Some(&labels)))
            }
        }
    }

    /// Evaluates one policy on `text` (the request, or the request with the
    /// chain's current object) and turns every way it can go wrong into a
    /// [`Step::Failed`].
    async fn run(
        &self,
        policy: &LoadedPolicy,
        request: &Request<'_>,
        text: &str,
        deadline: Instant,
    ) -> (Step, Duration) {
        let started = Instant::now();
        let step = match &policy.module {
            Err(error) => Step::Failed(Failure::Load(error.clone())),
            Ok(_) if started >= deadline => Step::Failed(Failure::NotRun),
            Ok(module) => match policy.breaker.admit(deadline).await {
                Err(suspended) => Step::Failed(suspended.into()),
                Ok(pass) => {
                    let host = self
                        .access(policy, request)
                        .map(|access| Box::new(access) as Box<dyn Host>);
                    let (settings, limits) = (&policy.settings, &policy.limits);
                    let result = if pass.aside() {
                        let (text, settings) = (text.to_owned(), settings.clone());
                        module
                            .evaluate_aside(text, settings, *limits, Some(deadline), host)
                            .await
                    } else {
                        module
                            .evaluate(text, settings, limits, Some(deadline), host)
                            .await
                    };
                    let misbehaviour = match &result {
                        Err(error) if error.is_misbehaviour() => Some(error.to_string()),
                        _ => None,
                    };
                    if pass.record(misbehaviour) {
                        tracing::warn!(
                            policy = &*policy.name,
                            "policy suspended after repeated failures; its failurePolicy applies until a trial call succeeds"
                        );
                    }
                    evaluated(policy, result)
                }
            },
        };
        (step, started.elapsed())
    }

    /// Gives back what a denied request reserved: it will never be used.
    fn release_if_denied(&self, outcome: &Outcome, request: &Request<'_>) {
        if !outcome.allowed && self.context.available() {
            self.context.release(&request.uid);
        }
    }

    /// What a context-aware policy's call may read and reserve.
    fn access(&self, policy: &LoadedPolicy, request: &Request<'_>) -> Option<Access> {
        if policy.grants.is_empty() {
            return None;
        }
        let object = (!request.name.is_empty()).then(|| ObjectKey {
            kind: Kind::new(
                &api_version(&request.group, &request.version),
                &request.kind,
            ),
            namespace: request.namespace.to_string(),
            name: request.name.to_string(),
        });
        Some(Access::new(
            self.context.clone(),
            policy.name.clone(),
            policy.grants.clone(),
            Subject {
                uid: request.uid.to_string(),
                object,
                dry_run: request.dry_run,
            },
        ))
    }
}

/// A deadline for offline evaluation (`tollgate run`, scans, tests), where
/// no apiserver waits: far enough that only each policy's own applies.
pub fn no_deadline() -> Instant {
    Instant::now() + Duration::from_secs(24 * 3600)
}

/// `apiVersion` from group and version.
fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// A policy's result as a [`Step`], its verdict checked.
fn evaluated(
    policy: &LoadedPolicy,
    result: std::result::Result<engine::Verdict, engine::Error>,
) -> Step {
    let verdict = match result {
        Ok(verdict) => verdict,
        Err(error) => return Step::Failed(error.into()),
    };
    let mutated = verdict.mutated_object.is_some();
    if mutated && !policy.config.mutating {
        return Step::Failed(Invalid::NotMutating.into());
    }
    match output::check(&policy.name, &verdict) {
        Ok(()) => Step::Verdict { verdict, mutated },
        Err(invalid) => Step::Failed(invalid.into()),
    }
}

/// Folds one policy's step into the outcome according to its mode and
/// failure policy.
fn record(outcome: &mut Outcome, policy: &LoadedPolicy, step: Step, duration: Duration) {
    let name = &policy.name;
    let mode = policy.config.mode;
    let (result, message, reason) = match step {
        Step::Failed(failure) => {
            let error = failure.to_string();
            match policy.config.failure_policy {
                FailurePolicy::Fail => outcome.deny(
                    500,
                    format!("policy {name:?} failed: {error} (failurePolicy: fail)"),
                ),
                FailurePolicy::Ignore => {
                    outcome
                        .warnings
                        .push(format!("policy {name:?} failed and was ignored: {error}"));
                }
            }
            (Result::Failed, Some(error), Some(failure.reason()))
        }
        Step::Verdict { verdict, mutated } => {
            for warning in verdict.warnings {
                outcome.warnings.push(format!("{name}: {warning}"));
            }
            for (key, value) in verdict.audit_annotations {
                outcome
                    .audit_annotations
                    .push((format!("{name}.{key}"), value));
            }
            if verdict.allowed {
                match (mutated, mode) {
                    (true, Mode::Warn) => outcome
                        .warnings
                        .push(format!("{name}: would change the object (mode: warn)")),
                    (true, Mode::Audit) => {
                        outcome
                            .audit_annotations
                            .push((format!("{name}.would-mutate"), "true".into()));
                    }
                    _ => {}
                }
                let result = if mutated {
                    Result::Mutated
                } else {
                    Result::Allowed
                };
                (result, None, None)
            } else {
                let reason = verdict
                    .message
                    .unwrap_or_else(|| "denied without a message".into());
                match mode {
                    Mode::Enforce => {
                        outcome.deny(verdict.code.unwrap_or(403), format!("{name}: {reason}"))
                    }
                    Mode::Warn => outcome.warnings.push(format!("{name}: {reason}")),
                    Mode::Audit => outcome
                        .audit_annotations
                        .push((format!("{name}.violation"), reason.clone())),
                }
                (Result::Denied, Some(reason), None)
            }
        }
    };
    outcome.evaluations.push(Evaluation {
        policy: name.clone(),
        mode,
        result,
        message,
        reason,
        duration,
    });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use futures::executor::block_on;
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::policy_set;

    fn request_text(object: &Value) -> String {
        json!({"uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
            "namespace": "ml", "name": "p", "userInfo": {"username": "alice"}, "object": object})
        .to_string()
    }

    fn request(text: &str) -> Request<'_> {
        Request::parse(text).unwrap()
    }

    fn pod(image: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
            "spec": {"containers": [{"name": "main", "image": image}]}})
    }

    fn apply(object: &Value, patch: &json_patch::Patch) -> Value {
        let mut object = object.clone();
        json_patch::patch(&mut object, patch).unwrap();
        object
    }

    #[test]
    fn a_mutation_of_a_field_fixed_after_creation_is_left_out_of_an_update() {
        let set = policy_set(
            r#"
policies:
  - name: defaults
    module: "{misbehave}"
    mutating: true
    settings: {behaviour: mutate-spec}
    match: {operations: [CREATE, UPDATE]}
"#,
        );
        let object = pod("nvcr.io/x:1");
        let mut text: Value = serde_json::from_str(&request_text(&object)).unwrap();
        text["operation"] = json!("UPDATE");
        text["oldObject"] = object.clone();
        let text = text.to_string();
        let outcome = block_on(set.mutate(&request(&text), no_deadline()));
        assert!(outcome.allowed);
        assert!(outcome.patch.is_none(), "{:?}", outcome.patch);
        assert_eq!(
            outcome.warnings,
            [
                "defaults: its change of /spec/priorityClassName was left out: Pod p may not change it on UPDATE"
            ]
        );
        // On CREATE the same mutation applies.
        let outcome = block_on(set.mutate(&request(&request_text(&object)), no_deadline()));
        assert!(outcome.patch.is_some());
    }

    /// A cluster whose Namespaces are never cached: each is read on demand,
    /// giving `labels`, or failing when `None`.
    struct Uncached {
        labels: Option<serde_json::Value>,
    }

    impl crate::context::Provider for Uncached {
        fn describe(&self) -> String {
            "uncached".into()
        }

        fn cache(&self, _kinds: &[Kind], _store: &Arc<crate::context::Store>) {}

        fn kinds(&self) -> Vec<crate::context::KindHealth> {
            Vec::new()
        }

        fn fetch(
            &self,
            _kind: &Kind,
            _namespace: &str,
            name: &str,
            _deadline: Instant,
        ) -> crate::context::Fetched<'_> {
            let answer = match &self.labels {
                Some(labels) => Ok(Some(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels}}))),
                None => Err("connection refused".to_owned()),
            };
            Box::pin(std::future::ready(answer))
        }
    }

    #[test]
    fn namespace_labels_the_cache_lacks_are_read_and_a_failed_read_applies_the_failure_policy() {
        let yaml = r#"
policies:
  - name: tier-gold
    module: builtin:image-registries
    settings: {allowedRegistries: [nvcr.io/]}
    match: {namespaceSelector: {matchLabels: {tier: gold}}}
"#;
        let context = |labels| {
            Arc::new(crate::context::Context::new(
                Some(Box::new(Uncached { labels })),
                Box::new(crate::context::ledger::Local::default()),
            ))
        };
        let text = request_text(&pod("docker.io/x:1"));
        let gold =
            crate::test_support::policy_set_with(yaml, context(Some(json!({"tier": "gold"}))));
        let outcome = block_on(gold.validate(&request(&text), no_deadline()));
        assert!(
            !outcome.allowed,
            "read from the apiserver: the selector matches"
        );
        assert!(outcome.message.unwrap().starts_with("tier-gold:"));
        let silver =
            crate::test_support::policy_set_with(yaml, context(Some(json!({"tier": "silver"}))));
        assert!(block_on(silver.validate(&request(&text), no_deadline())).allowed);
        let unknown = crate::test_support::policy_set_with(yaml, context(None));
        let outcome = block_on(unknown.validate(&request(&text), no_deadline()));
        assert!(
            !outcome.allowed,
            "unknown labels: the failurePolicy (fail) applies"
        );
        assert_eq!(
            outcome.message.unwrap(),
            "policy \"tier-gold\" failed: its namespaceSelector cannot be checked: cannot read v1/Namespace \"ml\": connection refused (failurePolicy: fail)"
        );
    }

    const TWO_DEFAULTS: &str = r#"
policies:
  - name: cpu-requests
    module: builtin:resource-defaults
    mutating: true
    settings: {requests: {cpu: 100m}}
  - name: cpu-limits
    module: builtin:resource-defaults
    mutating: true
    settings: {limits: {cpu: 50m, memory: 1Gi}}
"#;

    #[test]
    fn each_mutating_policy_sees_the_previous_ones_output_and_one_patch_results() {
        let set = policy_set(TWO_DEFAULTS);
        let object = pod("nvcr.io/x:1");
        let text = request_text(&object);
        let outcome = block_on(set.mutate(&request(&text), no_deadline()));
        assert!(outcome.allowed);
        // cpu-limits saw the 100m request that cpu-requests added, so it
        // refused to add a lower limit.
        assert_eq!(
            outcome.warnings,
            vec![
                "cpu-limits: container \"main\": its cpu request exceeds the default limit 50m, so no limit was added"
            ]
        );
        let patched = apply(&object, outcome.patch.as_ref().unwrap());
        assert_eq!(
            patched["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m"}, "limits": {"memory": "1Gi"}})
        );
        assert_eq!(
            serde_json::from_str::<Value>(outcome.final_object.as_ref().unwrap()).unwrap(),
            patched
        );
        // The chain on its own output changes nothing.
        let again = request_text(&patched);
        let outcome = block_on(set.mutate(&request(&again), no_deadline()));
        assert!(outcome.allowed && outcome.patch.is_none(), "{outcome:?}");
    }

    #[test]
    fn validating_policies_in_review_see_the_final_object() {
        let set = policy_set(
            r#"
policies:
  - name: label
    module: "{misbehave}"
    mutating: true
    settings: {behaviour: mutate}
  - name: registries
    module: builtin:image-registries
    settings: {allowedRegistries: [nvcr.io/]}
    match: {objectSelector: {matchLabels: {misbehave: was-here}}}
"#,
        );
        let text = request_text(&pod("quay.io/x:1"));
        assert!(
            block_on(set.validate(&request(&text), no_deadline())).allowed,
            "without the label the selector does not match"
        );
        let outcome = block_on(set.review(&request(&text), no_deadline()));
        assert!(!outcome.allowed);
        assert_eq!(outcome.code, 403);
        assert!(
            outcome
                .message
                .unwrap()
                .starts_with("registries: container \"main\" uses image \"quay.io/x:1\"")
        );
        assert_eq!(outcome.evaluations.len(), 2);
    }

    #[test]
    fn failure_policy_fail_denies_and_ignore_warns() {
        let set = policy_set(
            r#"
policies:
  - name: strict
    module: "{misbehave}"
    settings: {behaviour: trap}
    failurePolicy: fail
  - name: lenient
    module: "{misbehave}"
    settings: {behaviour: error}
    failurePolicy: ignore
"#,
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        let outcome = block_on(set.validate(&request(&text), no_deadline()));
        assert!(!outcome.allowed);
        assert_eq!(outcome.code, 500);
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("policy \"strict\" failed: policy trapped"),
            "{message}"
        );
        assert!(message.ends_with("(failurePolicy: fail)"));
        assert_eq!(
            outcome.warnings,
            vec![
                "policy \"lenient\" failed and was ignored: policy error: misbehave: no verdict on purpose"
            ]
        );
        assert!(
            outcome
                .evaluations
                .iter()
                .all(|e| e.result == Result::Failed)
        );
    }

    #[test]
    fn warn_and_audit_modes_turn_denials_into_warnings_and_annotations() {
        let set = policy_set(
            r#"
policies:
  - name: warned
    module: builtin:image-registries
    settings: {allowedRegistries: [nvcr.io/]}
    mode: warn
  - name: audited
    module: builtin:image-registries
    settings: {allowedRegistries: [nvcr.io/]}
    mode: audit
"#,
        );
        let text = request_text(&pod("quay.io/x:1"));
        let outcome = block_on(set.validate(&request(&text), no_deadline()));
        assert!(outcome.allowed);
        assert_eq!(outcome.warnings.len(), 1);
        assert!(outcome.warnings[0].starts_with("warned: container \"main\""));
        assert_eq!(outcome.audit_annotations.len(), 1);
        assert_eq!(outcome.audit_annotations[0].0, "audited.violation");
    }

    #[test]
    fn mutations_apply_only_in_enforce_mode() {
        let set = policy_set(
            "policies:\n  - {name: m, module: builtin:resource-defaults, mutating: true, mode: warn, settings: {requests: {cpu: 1}}}\n",
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        let outcome = block_on(set.mutate(&request(&text), no_deadline()));
        assert!(outcome.allowed && outcome.patch.is_none());
        assert_eq!(
            outcome.warnings,
            vec!["m: would change the object (mode: warn)"]
        );
    }

    #[test]
    fn a_mutation_from_a_policy_not_marked_mutating_is_a_failure() {
        let set = policy_set(
            "policies:\n  - {name: sneaky, module: \"{misbehave}\", settings: {behaviour: mutate}}\n",
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        let outcome = block_on(set.validate(&request(&text), no_deadline()));
        assert!(!outcome.allowed);
        assert!(
            outcome
                .message
                .unwrap()
                .contains("returned a mutation but is not configured with mutating: true")
        );
    }

    #[test]
    fn a_policy_that_failed_to_load_is_reported_and_gets_its_failure_policy() {
        let set = policy_set(
            r#"
policies:
  - name: bad-settings
    module: builtin:image-registries
    settings: {allowedRegistries: [nvcr.io]}
  - name: hangs-at-load
    module: "{misbehave}"
    settings: {behaviour: loop-in-settings}
    timeoutMs: 20
    failurePolicy: ignore
  - name: missing
    module: /nonexistent/policy.wasm
"#,
        );
        let failures: Vec<_> = set.failures().collect();
        assert_eq!(failures.len(), 3);
        assert!(
            failures[0]
                .1
                .to_string()
                .starts_with("settings rejected: allowedRegistries entry \"nvcr.io\"")
        );
        assert_eq!(
            failures[1].1.to_string(),
            "validate-settings failed: policy exceeded its deadline of 20 ms"
        );
        assert!(
            failures[2]
                .1
                .to_string()
                .starts_with("cannot read module /nonexistent/policy.wasm")
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        let outcome = block_on(set.validate(&request(&text), no_deadline()));
        assert!(!outcome.allowed);
        assert!(
            outcome
                .message
                .as_ref()
                .unwrap()
                .contains("policy \"bad-settings\" failed: the policy failed to load")
        );
        assert!(outcome.warnings[0].starts_with("policy \"hangs-at-load\" failed and was ignored"));
    }

    fn failure_of(behaviour: &str, mutating: bool, endpoint: &str) -> String {
        let set = policy_set(&format!(
            "policies:\n  - {{name: odd, module: \"{{misbehave}}\", mutating: {mutating}, settings: {{behaviour: {behaviour}}}}}\n"
        ));
        let text = request_text(&pod("nvcr.io/x:1"));
        let outcome = match endpoint {
            "mutate" => block_on(set.mutate(&request(&text), no_deadline())),
            _ => block_on(set.validate(&request(&text), no_deadline())),
        };
        assert!(!outcome.allowed, "{behaviour}: {outcome:?}");
        assert_eq!(outcome.code, 500);
        assert_eq!(outcome.evaluations[0].reason, Some("output"));
        outcome.message.unwrap()
    }

    #[test]
    fn verdicts_the_apiserver_could_not_take_are_the_policys_failure() {
        let cases = [
            (
                "mutate-garbage",
                true,
                "mutate",
                "the mutated object is not a JSON object",
            ),
            (
                "mutate-identity",
                true,
                "mutate",
                "the mutation changes metadata.name, which a mutating webhook may not change",
            ),
            (
                "bad-code",
                false,
                "validate",
                "status code 200 for a denial: use 400 to 599",
            ),
            (
                "duplicate-annotations",
                false,
                "validate",
                "audit annotation key \"same\" is returned twice",
            ),
        ];
        for (behaviour, mutating, endpoint, expected) in cases {
            let message = failure_of(behaviour, mutating, endpoint);
            assert!(
                message.starts_with(&format!("policy \"odd\" failed: {expected}")),
                "{behaviour}: {message}"
            );
        }
    }

    #[test]
    fn a_policy_that_keeps_timing_out_is_suspended_and_then_answers_at_once() {
        let set = policy_set(
            "policies:\n  - {name: spin, module: \"{misbehave}\", settings: {behaviour: loop}, timeoutMs: 20}\n",
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        for _ in 0..crate::policy::breaker::THRESHOLD {
            let outcome = block_on(set.validate(&request(&text), no_deadline()));
            assert_eq!(outcome.evaluations[0].reason, Some("timeout"));
        }
        let started = Instant::now();
        let outcome = block_on(set.validate(&request(&text), no_deadline()));
        assert!(started.elapsed() < Duration::from_millis(10), "not run");
        assert!(!outcome.allowed, "its failurePolicy (fail) still applies");
        assert_eq!(outcome.evaluations[0].reason, Some("suspended"));
        assert!(
            outcome.message.unwrap().starts_with(
                "policy \"spin\" failed: policy suspended after 3 consecutive failures (last: policy exceeded its deadline of 20 ms); next try in "
            )
        );
    }

    #[test]
    fn the_request_deadline_cuts_a_policy_short_and_skips_the_ones_after_it() {
        let set = policy_set(
            r#"
policies:
  - {name: spin, module: "{misbehave}", settings: {behaviour: loop}, timeoutMs: 5000, failurePolicy: ignore}
  - {name: after, module: builtin:image-registries, settings: {allowedRegistries: [nvcr.io/]}}
"#,
        );
        let text = request_text(&pod("nvcr.io/x:1"));
        let started = Instant::now();
        let deadline = started + Duration::from_millis(50);
        let outcome = block_on(set.validate(&request(&text), deadline));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
        let reasons: Vec<_> = outcome.evaluations.iter().map(|e| e.reason).collect();
        assert_eq!(
            reasons,
            [Some("request-deadline"), Some("request-deadline")]
        );
        assert_eq!(
            outcome.warnings,
            [
                "policy \"spin\" failed and was ignored: the request's deadline passed before the policy finished (its own deadline is 5000 ms)"
            ]
        );
        assert_eq!(
            outcome.message.as_deref(),
            Some(
                "policy \"after\" failed: the request's deadline passed before the policy ran (failurePolicy: fail)"
            )
        );
    }
}
