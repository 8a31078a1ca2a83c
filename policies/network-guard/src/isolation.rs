//! Tenant isolation: a tenant namespace's workloads need its default-deny
//! NetworkPolicies in place, and the last one may not be deleted or
//! weakened.

use tollgate_sdk::Result;
use tollgate_sdk::context;

use crate::model::{Direction, NetworkPolicy};
use crate::settings::Settings;

/// The directions a tenant namespace must deny by default.
fn required(settings: &Settings) -> Vec<Direction> {
    let mut directions = vec![Direction::Ingress];
    if settings.require_default_deny_egress {
        directions.push(Direction::Egress);
    }
    directions
}

/// Of `directions`, those no NetworkPolicy of `namespace` (other than one
/// named `except`) denies by default.
fn uncovered(
    namespace: &str,
    directions: Vec<Direction>,
    except: Option<&str>,
) -> Result<Vec<Direction>> {
    let policies: Vec<NetworkPolicy> =
        context::list_as("networking.k8s.io/v1", "NetworkPolicy", namespace, "")?;
    let others: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|p| Some(p.metadata.name.as_str()) != except)
        .collect();
    Ok(directions
        .into_iter()
        .filter(|d| !others.iter().any(|p| p.denies_all(*d)))
        .collect())
}

/// Why a new `kind` in tenant `namespace` is refused, if it is: a
/// default-deny policy it needs is missing. The message holds the
/// manifest to apply.
pub fn missing(kind: &str, namespace: &str, settings: &Settings) -> Result<Option<String>> {
    let missing = uncovered(namespace, required(settings), None)?;
    if missing.is_empty() {
        return Ok(None);
    }
    let consequences: Vec<&str> = missing
        .iter()
        .map(|d| match d {
            Direction::Ingress => "accept traffic from every pod of the cluster",
            Direction::Egress => "reach every destination",
        })
        .collect();
    Ok(Some(format!(
        "namespace {namespace:?} is a tenant namespace without a default-deny {} NetworkPolicy, so this {kind}'s pods would {}: apply one first (kubectl apply -f - with {})",
        names(&missing),
        consequences.join(" and "),
        manifest(namespace, &missing)
    )))
}

/// Why deleting `old` (`new` is `None`) or changing it into `new` is
/// refused, if it is: it is the last policy of tenant `namespace` that
/// denies a required direction by default.
pub fn weakened(
    old: &NetworkPolicy,
    new: Option<&NetworkPolicy>,
    namespace: &str,
    settings: &Settings,
) -> Result<Option<String>> {
    let lost: Vec<Direction> = required(settings)
        .into_iter()
        .filter(|d| old.denies_all(*d) && !new.is_some_and(|n| n.denies_all(*d)))
        .collect();
    if lost.is_empty() {
        return Ok(None);
    }
    let last = uncovered(namespace, lost, Some(&old.metadata.name))?;
    if last.is_empty() {
        return Ok(None);
    }
    let what = if new.is_some() {
        "changing it so that it no longer denies all of it"
    } else {
        "deleting it"
    };
    Ok(Some(format!(
        "NetworkPolicy {:?} is the last default-deny {} policy of tenant namespace {namespace:?}, and {what} would open every pod of the namespace: apply another default-deny policy first ({})",
        old.metadata.name,
        names(&last),
        manifest(namespace, &last)
    )))
}

/// `ingress`, `egress` or `ingress and egress`.
fn names(directions: &[Direction]) -> String {
    directions
        .iter()
        .map(|d| d.name().to_lowercase())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// The default-deny policy for `directions`, as one line of YAML that
/// `kubectl apply -f -` takes.
fn manifest(namespace: &str, directions: &[Direction]) -> String {
    let name = match directions {
        [one] => format!("default-deny-{}", one.name().to_lowercase()),
        _ => "default-deny".to_owned(),
    };
    let types: Vec<&str> = directions.iter().map(|d| d.name()).collect();
    format!(
        "{{apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {{name: {name}, namespace: {namespace}}}, spec: {{podSelector: {{}}, policyTypes: [{}]}}}}",
        types.join(", ")
    )
}
