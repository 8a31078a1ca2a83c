//! Privilege: privileged containers, privilege escalation, root, and the
//! `/proc` mount type.

use super::Failure;
use super::text::{containers, join_quote, setters, sorted_set};
use tollgate_sdk::pod::model::{Metadata, Spec};

/// No privileged container.
pub fn privileged(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let bad: Vec<&str> = spec
        .all_containers()
        .filter(|c| c.security().privileged == Some(true))
        .map(|c| c.name())
        .collect();
    if bad.is_empty() {
        return None;
    }
    Failure::new(
        "privileged",
        format!(
            "{} must not set securityContext.privileged=true",
            containers(&bad)
        ),
    )
}

/// `procMount` unset or `Default` in every container.
pub fn proc_mount(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut bad = Vec::new();
    let mut types = Vec::new();
    for container in spec.all_containers() {
        if let Some(kind) = &container.security().proc_mount
            && kind.as_str() != "Default"
        {
            bad.push(container.name());
            types.push(kind.as_str());
        }
    }
    if bad.is_empty() {
        return None;
    }
    Failure::new(
        "procMount",
        format!(
            "{} must not set securityContext.procMount to {}",
            containers(&bad),
            join_quote(&sorted_set(types))
        ),
    )
}

/// [`proc_mount`], except that pods in a user namespace may unmask `/proc`
/// (baseline v1.35+).
pub fn proc_mount_unless_user_namespaced(
    metadata: &Metadata<'_>,
    spec: &Spec<'_>,
) -> Option<Failure> {
    if spec.user_namespaced() {
        return None;
    }
    proc_mount(metadata, spec)
}

/// Every container sets `allowPrivilegeEscalation: false` explicitly.
pub fn allow_privilege_escalation(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let bad: Vec<&str> = spec
        .all_containers()
        .filter(|c| c.security().allow_privilege_escalation != Some(false))
        .map(|c| c.name())
        .collect();
    if bad.is_empty() {
        return None;
    }
    Failure::new(
        "allowPrivilegeEscalation != false",
        format!(
            "{} must set securityContext.allowPrivilegeEscalation=false",
            containers(&bad)
        ),
    )
}

/// `runAsNonRoot: true` on the pod or on every container, and `false`
/// nowhere.
pub fn run_as_non_root(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let pod = spec.security().run_as_non_root;
    let mut explicit = Vec::new();
    let mut implicit = Vec::new();
    for container in spec.all_containers() {
        match container.security().run_as_non_root {
            Some(false) => explicit.push(container.name()),
            Some(true) => {}
            None if pod != Some(true) => implicit.push(container.name()),
            None => {}
        }
    }
    if let Some(who) = setters(pod == Some(false), &explicit) {
        return Failure::new(
            "runAsNonRoot != true",
            format!("{who} must not set securityContext.runAsNonRoot=false"),
        );
    }
    if implicit.is_empty() {
        return None;
    }
    Failure::new(
        "runAsNonRoot != true",
        format!(
            "pod or {} must set securityContext.runAsNonRoot=true",
            containers(&implicit)
        ),
    )
}

/// `runAsUser` is never 0, on the pod or any container.
pub fn run_as_user(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let bad: Vec<&str> = spec
        .all_containers()
        .filter(|c| c.security().run_as_user == Some(0))
        .map(|c| c.name())
        .collect();
    let who = setters(spec.security().run_as_user == Some(0), &bad)?;
    Failure::new("runAsUser=0", format!("{who} must not set runAsUser=0"))
}
