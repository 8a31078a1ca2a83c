//! The checks of the Pod Security Standards and the registry that picks, for
//! a level and a version, which ones apply and in which version.
//!
//! Mirrors PSA's registry: every check has versions (the minimum policy
//! version from which each applies); `restricted` runs every restricted check
//! plus the baseline checks that the active restricted ones do not override.
//! Failures are reported baseline first, then restricted, each sorted by
//! check ID, which is the order of [`CHECKS`].

mod capabilities;
mod host;
mod privilege;
mod profiles;
pub(crate) use profiles::SECCOMP_CONTAINER_ANNOTATION_PREFIX;
mod text;
mod volumes;

use crate::settings::Level;
use tollgate_sdk::pod::model::{Metadata, Spec};

/// A failed check: PSA's reason and detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Short reason, e.g. `allowPrivilegeEscalation != false`.
    pub reason: String,
    /// What is wrong and where, e.g. `container "a" must set …`.
    pub detail: String,
}

impl Failure {
    fn new(reason: impl Into<String>, detail: impl Into<String>) -> Option<Self> {
        Some(Failure {
            reason: reason.into(),
            detail: detail.into(),
        })
    }
}

/// A check function: `None` when the pod passes.
type CheckFn = fn(&Metadata<'_>, &Spec<'_>) -> Option<Failure>;

/// One version of a check.
struct Versioned {
    /// Minor version of the policy from which this function applies.
    since: u32,
    run: CheckFn,
    /// Baseline checks this restricted version replaces.
    overrides: &'static [&'static str],
}

/// A check with its versions, oldest first.
struct Check {
    id: &'static str,
    level: Level,
    versions: &'static [Versioned],
}

const fn v(since: u32, run: CheckFn) -> Versioned {
    Versioned {
        since,
        run,
        overrides: &[],
    }
}

const fn replacing(since: u32, run: CheckFn, overrides: &'static [&'static str]) -> Versioned {
    Versioned {
        since,
        run,
        overrides,
    }
}

/// Every check, baseline then restricted, each sorted by ID.
const CHECKS: &[Check] = &[
    Check {
        id: "appArmorProfile",
        level: Level::Baseline,
        versions: &[v(0, profiles::app_armor)],
    },
    Check {
        id: "capabilities_baseline",
        level: Level::Baseline,
        versions: &[v(0, capabilities::baseline)],
    },
    Check {
        id: "hostNamespaces",
        level: Level::Baseline,
        versions: &[v(0, host::namespaces)],
    },
    Check {
        id: "hostPathVolumes",
        level: Level::Baseline,
        versions: &[v(0, volumes::host_path)],
    },
    Check {
        id: "hostPorts",
        level: Level::Baseline,
        versions: &[v(0, host::ports)],
    },
    Check {
        id: "hostProbesAndHostLifecycle",
        level: Level::Baseline,
        versions: &[v(34, host::probes_and_lifecycle)],
    },
    Check {
        id: "privileged",
        level: Level::Baseline,
        versions: &[v(0, privilege::privileged)],
    },
    Check {
        id: "procMount",
        level: Level::Baseline,
        versions: &[
            v(0, privilege::proc_mount),
            v(35, privilege::proc_mount_unless_user_namespaced),
        ],
    },
    Check {
        id: "seLinuxOptions",
        level: Level::Baseline,
        versions: &[v(0, profiles::se_linux_1_0), v(31, profiles::se_linux_1_31)],
    },
    Check {
        id: "seccompProfile_baseline",
        level: Level::Baseline,
        versions: &[
            v(0, profiles::seccomp_annotations),
            v(19, profiles::seccomp_baseline),
        ],
    },
    Check {
        id: "sysctls",
        level: Level::Baseline,
        versions: &[
            v(0, |_, spec| host::sysctls(spec, 0)),
            v(27, |_, spec| host::sysctls(spec, 27)),
            v(29, |_, spec| host::sysctls(spec, 29)),
            v(32, |_, spec| host::sysctls(spec, 32)),
            v(37, |_, spec| host::sysctls(spec, 37)),
        ],
    },
    Check {
        id: "windowsHostProcess",
        level: Level::Baseline,
        versions: &[v(0, host::windows_host_process)],
    },
    Check {
        id: "allowPrivilegeEscalation",
        level: Level::Restricted,
        versions: &[
            v(8, privilege::allow_privilege_escalation),
            v(25, |meta, spec| {
                if spec.windows() {
                    return None;
                }
                privilege::allow_privilege_escalation(meta, spec)
            }),
        ],
    },
    Check {
        id: "capabilities_restricted",
        level: Level::Restricted,
        versions: &[
            replacing(22, capabilities::restricted, &["capabilities_baseline"]),
            replacing(
                25,
                |meta, spec| {
                    if spec.windows() {
                        return None;
                    }
                    capabilities::restricted(meta, spec)
                },
                &["capabilities_baseline"],
            ),
        ],
    },
    Check {
        id: "procMount_restricted",
        level: Level::Restricted,
        versions: &[replacing(35, privilege::proc_mount, &["procMount"])],
    },
    Check {
        id: "restrictedVolumes",
        level: Level::Restricted,
        versions: &[replacing(0, volumes::restricted, &["hostPathVolumes"])],
    },
    Check {
        id: "runAsNonRoot",
        level: Level::Restricted,
        versions: &[
            v(0, privilege::run_as_non_root),
            v(35, |meta, spec| {
                if spec.user_namespaced() {
                    return None;
                }
                privilege::run_as_non_root(meta, spec)
            }),
        ],
    },
    Check {
        id: "runAsUser",
        level: Level::Restricted,
        versions: &[
            v(23, privilege::run_as_user),
            v(35, |meta, spec| {
                if spec.user_namespaced() {
                    return None;
                }
                privilege::run_as_user(meta, spec)
            }),
        ],
    },
    Check {
        id: "seccompProfile_restricted",
        level: Level::Restricted,
        versions: &[
            replacing(
                19,
                profiles::seccomp_restricted,
                &["seccompProfile_baseline"],
            ),
            replacing(
                25,
                |meta, spec| {
                    if spec.windows() {
                        return None;
                    }
                    profiles::seccomp_restricted(meta, spec)
                },
                &["seccompProfile_baseline"],
            ),
        ],
    },
];

/// The version of a check in force at policy minor version `minor`, if the
/// check exists there.
fn active(check: &Check, minor: u32) -> Option<&Versioned> {
    check.versions.iter().rev().find(|v| v.since <= minor)
}

/// The checks of `level` at minor version `minor` (already clamped to the
/// newest known), each in the version in force there, in report order.
fn selected(level: Level, minor: u32) -> impl Iterator<Item = (&'static str, &'static Versioned)> {
    let overridden = move |id: &str| {
        level == Level::Restricted
            && CHECKS
                .iter()
                .filter(|c| c.level == Level::Restricted)
                .filter_map(|c| active(c, minor))
                .any(|v| v.overrides.contains(&id))
    };
    CHECKS
        .iter()
        .filter(move |check| check.level <= level && !overridden(check.id))
        .filter_map(move |check| active(check, minor).map(|v| (check.id, v)))
}

/// Runs every check of `level` at minor version `minor` on one pod template;
/// the failures, in PSA's order.
pub fn run(level: Level, minor: u32, metadata: &Metadata<'_>, spec: &Spec<'_>) -> Vec<Failure> {
    selected(level, minor)
        .filter_map(|(_, versioned)| (versioned.run)(metadata, spec))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_in_psa_report_order() {
        for level in [Level::Baseline, Level::Restricted] {
            let ids: Vec<_> = CHECKS
                .iter()
                .filter(|c| c.level == level)
                .map(|c| c.id)
                .collect();
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            assert_eq!(ids, sorted);
        }
        assert_eq!(CHECKS.len(), 19);
    }

    #[test]
    fn restricted_replaces_baseline_checks_per_version() {
        let applied = |level, minor| selected(level, minor).map(|(id, _)| id).collect::<Vec<_>>();
        let at = |minor| applied(Level::Restricted, minor);
        assert!(at(0).contains(&"capabilities_baseline"));
        assert!(at(0).contains(&"seccompProfile_baseline"));
        assert!(!at(0).contains(&"hostPathVolumes"));
        assert!(!at(0).contains(&"allowPrivilegeEscalation"));
        assert!(!at(22).contains(&"capabilities_baseline"));
        assert!(!at(19).contains(&"seccompProfile_baseline"));
        assert!(at(34).contains(&"procMount"));
        assert!(!at(35).contains(&"procMount"));
        assert!(at(35).contains(&"procMount_restricted"));
        assert_eq!(applied(Level::Baseline, 37).len(), 12);
        assert_eq!(applied(Level::Baseline, 33).len(), 11);
        assert!(applied(Level::Privileged, 37).is_empty());
    }
}
