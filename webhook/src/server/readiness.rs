//! What `/readyz` answers. A replica is unready only while its first
//! configuration loads, while shutting down, or while a kind that a
//! fail-closed policy reads has no first list yet: a policy that failed to
//! load, or whose kind cannot be listed, answers with its failurePolicy and
//! never takes the replica out (every replica would fail the same way).

use std::fmt::Write as _;

use super::reload::Status;
use crate::context::{Kind, KindState};
use crate::policy::PolicySet;
use crate::policy::config::FailurePolicy;
use crate::policy::set::LoadedPolicy;

/// The answer of `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the replica should receive requests.
    pub ready: bool,
    /// What `/readyz` says.
    pub summary: String,
    /// What `/readyz?verbose` adds: the configuration, each policy, each
    /// cached kind.
    pub details: String,
}

/// Judges `set`, loaded from `configuration`.
pub fn assess(set: &PolicySet, configuration: Option<&Status>) -> Readiness {
    let mut summary = String::new();
    let mut details = String::new();
    let mut ready = true;
    let policies = set.policies();
    let failed = set.failures().count();
    if failed == 0 {
        let _ = writeln!(summary, "ready: {} policies loaded", policies.len());
    } else {
        let _ = writeln!(
            summary,
            "ready: {} policies loaded, {failed} failed to load and answer with their failurePolicy (see /readyz?verbose)",
            policies.len() - failed
        );
    }
    if let Some(status) = configuration {
        let _ = writeln!(
            details,
            "configuration: generation {} (#{}) from {}",
            status.generation, status.sequence, status.origin
        );
        if let Some(error) = &status.error {
            let _ = writeln!(details, "last change refused: {error}");
        }
    }
    for policy in policies {
        let failure_policy = match policy.config.failure_policy {
            FailurePolicy::Fail => "fail",
            FailurePolicy::Ignore => "ignore",
        };
        match &policy.module {
            Ok(_) => {
                let _ = writeln!(
                    details,
                    "policy {:?}: loaded (failurePolicy {failure_policy})",
                    &*policy.name
                );
            }
            Err(error) => {
                let _ = writeln!(
                    details,
                    "policy {:?} failed to load: {error}; its failurePolicy ({failure_policy}) answers its requests",
                    &*policy.name
                );
            }
        }
    }

    let readers: Vec<&LoadedPolicy> = policies
        .iter()
        .filter(|p| p.module.is_ok() && p.config.reads().next().is_some())
        .collect();
    if readers.is_empty() {
        return Readiness {
            ready,
            summary,
            details,
        };
    }
    let context = set.context();
    if !context.available() {
        let names: Vec<&str> = readers.iter().map(|p| &*p.name).collect();
        let _ = writeln!(
            summary,
            "{}; policies {} fail per their failurePolicy",
            crate::context::Error::NoContext,
            names.join(", ")
        );
        return Readiness {
            ready,
            summary,
            details,
        };
    }
    let names = |kind: &Kind, fail_closed_only: bool| -> Vec<&str> {
        readers
            .iter()
            .filter(|p| !fail_closed_only || p.config.failure_policy == FailurePolicy::Fail)
            .filter(|p| p.config.reads().any(|k| k == *kind))
            .map(|p| &*p.name)
            .collect()
    };
    for health in context.kinds() {
        let kind = &health.kind;
        let age = health.last_event.map_or_else(
            || "none yet".to_owned(),
            |t| format!("{:.0?} ago", t.elapsed()),
        );
        let _ = writeln!(
            details,
            "context {kind}: {}, {} objects, last event {age}, {} relists, {} errors",
            match &health.state {
                KindState::Listing => "listing".to_owned(),
                KindState::Synced => "synced".to_owned(),
                KindState::Failed(reason) => format!("failed ({reason})"),
            },
            health.objects,
            health.lists.saturating_sub(1),
            health.errors
        );
        match &health.state {
            KindState::Synced => {}
            KindState::Listing => {
                let waiting = names(kind, true);
                if !waiting.is_empty() {
                    ready = false;
                    let _ = writeln!(
                        summary,
                        "waiting for the first list of {kind} (read by fail-closed policies {})",
                        waiting.join(", ")
                    );
                }
            }
            KindState::Failed(reason) => {
                let _ = writeln!(
                    summary,
                    "{kind}: {reason}; policies {} fail per their failurePolicy",
                    names(kind, false).join(", ")
                );
            }
        }
    }
    if let Ok(line) = context.status() {
        let _ = writeln!(summary, "{line}");
    }
    Readiness {
        ready,
        summary,
        details,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::context::{Context, Fetched, KindHealth, Provider, Store, ledger};
    use crate::test_support::policy_set_with;

    /// A cluster whose Pods are still listing and whose Nodes cannot be.
    struct Starting;

    impl Provider for Starting {
        fn describe(&self) -> String {
            "starting".into()
        }

        fn cache(&self, _kinds: &[Kind], _store: &Arc<Store>) {}

        fn kinds(&self) -> Vec<KindHealth> {
            vec![
                KindHealth::new(Kind::new("v1", "Pod"), KindState::Listing),
                KindHealth::new(
                    Kind::new("v1", "Node"),
                    KindState::Failed("forbidden".into()),
                ),
            ]
        }

        fn fetch(&self, _: &Kind, _: &str, _: &str, _: Instant) -> Fetched<'_> {
            Box::pin(std::future::ready(Ok(None)))
        }
    }

    fn assessed(failure_policy: &str, kind: &str) -> Readiness {
        let yaml = format!(
            "policies:\n  - name: reader\n    module: builtin:image-registries\n    settings: {{allowedRegistries: [nvcr.io/]}}\n    failurePolicy: {failure_policy}\n    context: [{{apiVersion: v1, kind: {kind}}}]\n"
        );
        let context = Arc::new(Context::new(
            Some(Box::new(Starting)),
            Box::new(ledger::Local::default()),
        ));
        assess(&policy_set_with(&yaml, context), None)
    }

    #[test]
    fn only_a_list_a_fail_closed_policy_waits_for_makes_the_replica_unready() {
        let waiting = assessed("fail", "Pod");
        assert!(!waiting.ready);
        assert!(
            waiting.summary.contains(
                "waiting for the first list of v1/Pod (read by fail-closed policies reader)"
            ),
            "{}",
            waiting.summary
        );
        // Fail-open: it answers with its failurePolicy meanwhile.
        assert!(assessed("ignore", "Pod").ready);
        // A kind that cannot be listed never takes the replica out.
        let refused = assessed("fail", "Node");
        assert!(refused.ready, "{}", refused.summary);
        assert!(
            refused
                .summary
                .contains("v1/Node: forbidden; policies reader fail per their failurePolicy"),
            "{}",
            refused.summary
        );
        assert!(
            refused
                .details
                .contains("context v1/Node: failed (forbidden), 0 objects")
        );
    }
}
