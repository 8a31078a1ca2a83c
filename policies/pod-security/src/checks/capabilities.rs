//! Linux capabilities: `capabilities_baseline` and `capabilities_restricted`.

use super::Failure;
use super::text::{containers, join_quote, sorted_set};
use tollgate_sdk::pod::model::{Metadata, Spec, Text};

/// Capabilities a baseline container may add (the container runtime's
/// default set).
const BASELINE_ALLOWED: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn added<'c>(list: &'c Option<Vec<Text<'_>>>) -> impl Iterator<Item = &'c str> {
    list.iter().flatten().map(Text::as_str)
}

/// Only the default capabilities may be added (exact, case-sensitive).
pub fn baseline(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut bad_containers = Vec::new();
    let mut forbidden = Vec::new();
    for container in spec.all_containers() {
        let Some(capabilities) = &container.security().capabilities else {
            continue;
        };
        let before = forbidden.len();
        forbidden.extend(added(&capabilities.add).filter(|c| !BASELINE_ALLOWED.contains(c)));
        if forbidden.len() > before {
            bad_containers.push(container.name());
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    Failure::new(
        "non-default capabilities",
        format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers(&bad_containers),
            join_quote(&sorted_set(forbidden))
        ),
    )
}

/// Every container drops `ALL` and adds nothing but `NET_BIND_SERVICE`.
pub fn restricted(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut missing_drop_all = Vec::new();
    let mut adding_forbidden = Vec::new();
    let mut forbidden = Vec::new();
    for container in spec.all_containers() {
        let Some(capabilities) = &container.security().capabilities else {
            missing_drop_all.push(container.name());
            continue;
        };
        if !added(&capabilities.drop).any(|c| c == "ALL") {
            missing_drop_all.push(container.name());
        }
        let before = forbidden.len();
        forbidden.extend(added(&capabilities.add).filter(|c| *c != "NET_BIND_SERVICE"));
        if forbidden.len() > before {
            adding_forbidden.push(container.name());
        }
    }
    let mut details = Vec::new();
    if !missing_drop_all.is_empty() {
        details.push(format!(
            r#"{} must set securityContext.capabilities.drop=["ALL"]"#,
            containers(&missing_drop_all)
        ));
    }
    if !adding_forbidden.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            containers(&adding_forbidden),
            join_quote(&sorted_set(forbidden))
        ));
    }
    if details.is_empty() {
        return None;
    }
    Failure::new("unrestricted capabilities", details.join("; "))
}
