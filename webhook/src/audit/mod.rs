//! Audit: the decision log ([`log`], checked by [`verify`]), the scanner
//! that evaluates existing objects ([`scan`], from manifests or the cluster
//! through [`cluster`]) and the reports it writes ([`report`], [`format`]).

pub mod cluster;
pub mod format;
pub mod log;
pub mod report;
pub mod scan;
pub mod seal;
pub mod verify;

use std::time::SystemTime;

use log::{Decision, GroupVersionKind, Mutations, PolicyDecision};

use crate::policy::{Outcome, Request};

/// The decision-log entry for an answered request (built on the request
/// path: copies only; patch counts are computed by the writer, from the
/// mutations taken out of `outcome`).
pub fn decision(
    endpoint: &str,
    generation: &str,
    request: &Request<'_>,
    outcome: &mut Outcome,
) -> Decision {
    let operation = match request.operation {
        crate::policy::config::Operation::Create => "CREATE",
        crate::policy::config::Operation::Update => "UPDATE",
        crate::policy::config::Operation::Delete => "DELETE",
        crate::policy::config::Operation::Connect => "CONNECT",
    };
    let mut policies: Vec<PolicyDecision> = outcome
        .evaluations
        .iter()
        .map(|e| PolicyDecision {
            name: e.policy.to_string(),
            mode: e.mode.as_str().to_owned(),
            verdict: e.result.as_str().to_owned(),
            message: e.message.clone(),
            patch_operations: 0,
            micros: e.duration.as_micros() as u64,
        })
        .collect();
    let steps = std::mem::take(&mut outcome.mutations);
    let mutations = match (steps.as_slice(), &outcome.patch) {
        // One mutation: its operations are the request's patch; no diff.
        ([(index, _)], Some(patch)) => {
            if let Some(policy) = policies.get_mut(*index) {
                policy.patch_operations = patch.0.len();
            }
            None
        }
        ([], _) | ([_], None) => None,
        // Several: the writer diffs each step, off the request path.
        _ => Some(Mutations {
            original: request.object_text().unwrap_or("{}").to_owned(),
            steps,
        }),
    };
    Decision {
        time: SystemTime::now(),
        endpoint: endpoint.to_owned(),
        uid: request.uid.to_string(),
        user: request.username.to_string(),
        groups: request.groups.iter().map(|g| g.to_string()).collect(),
        operation: operation.to_owned(),
        kind: GroupVersionKind {
            group: request.group.to_string(),
            version: request.version.to_string(),
            kind: request.kind.to_string(),
        },
        namespace: request.namespace.to_string(),
        name: request.name.to_string(),
        dry_run: request.dry_run,
        config: generation.to_owned(),
        allowed: outcome.allowed,
        policies,
        mutations,
    }
}
