//! Security profiles: AppArmor, SELinux and seccomp.

use super::Failure;
use super::text::{join_quote, key_value, pluralize, setters, sorted_set};
use tollgate_sdk::pod::model::{Metadata, Profile, SeLinuxOptions, Spec};

const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";
const SECCOMP_POD_ANNOTATION: &str = "seccomp.security.alpha.kubernetes.io/pod";
pub(crate) const SECCOMP_CONTAINER_ANNOTATION_PREFIX: &str =
    "container.seccomp.security.alpha.kubernetes.io/";

/// Who sets a profile field to a value `allowed` refuses, and the values.
fn bad_profiles<'s>(
    spec: &'s Spec<'_>,
    field: impl Fn(&'s tollgate_sdk::pod::model::SecurityContext<'_>) -> Option<&'s Profile<'s>>,
    allowed: impl Fn(&str) -> bool,
) -> (bool, Vec<&'s str>, Vec<&'s str>) {
    let mut values = Vec::new();
    let pod = match field(spec.security()) {
        Some(profile) if !allowed(profile.kind.as_str()) => {
            values.push(profile.kind.as_str());
            true
        }
        _ => false,
    };
    let mut bad_containers = Vec::new();
    for container in spec.all_containers() {
        if let Some(profile) = field(container.security())
            && !allowed(profile.kind.as_str())
        {
            bad_containers.push(container.name());
            values.push(profile.kind.as_str());
        }
    }
    (pod, bad_containers, values)
}

fn allowed_profile_type(kind: &str) -> bool {
    matches!(kind, "RuntimeDefault" | "Localhost")
}

/// AppArmor: profile types `RuntimeDefault` or `Localhost` only, and the
/// beta annotations only `runtime/default`, `localhost/*` or empty.
pub fn app_armor(metadata: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let (pod, bad_containers, values) = bad_profiles(
        spec,
        |sc| sc.app_armor_profile.as_ref(),
        allowed_profile_type,
    );
    let mut values: Vec<String> = sorted_set(values).into_iter().map(str::to_owned).collect();
    let annotations = sorted_set(
        metadata
            .annotations()
            .filter(|(key, value)| {
                key.starts_with(APPARMOR_ANNOTATION_PREFIX)
                    && !(value.is_empty()
                        || *value == "runtime/default"
                        || value.starts_with("localhost/"))
            })
            .map(|(key, value)| key_value(key, value))
            .collect(),
    );
    let mut who = setters(pod, &bad_containers);
    if !annotations.is_empty() {
        let noun = pluralize("annotation", "annotations", annotations.len());
        who = Some(match who {
            Some(who) => format!("{who} and {noun}"),
            None => noun.to_owned(),
        });
        values.extend(annotations);
    }
    let who = who?;
    Failure::new(
        pluralize(
            "forbidden AppArmor profile",
            "forbidden AppArmor profiles",
            values.len(),
        ),
        format!(
            "{who} must not set AppArmor profile type to {}",
            join_quote(&values)
        ),
    )
}

fn se_linux(spec: &Spec<'_>, allowed_types: &[&str]) -> Option<Failure> {
    let mut types = Vec::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |options: &Option<SeLinuxOptions<'_>>| {
        let Some(options) = options else {
            return true;
        };
        let mut ok = true;
        if !allowed_types.contains(&options.kind.as_str()) {
            types.push(options.kind.as_str().to_owned());
            ok = false;
        }
        if !options.user.as_str().is_empty() {
            user = true;
            ok = false;
        }
        if !options.role.as_str().is_empty() {
            role = true;
            ok = false;
        }
        ok
    };
    let pod = !valid(&spec.security().se_linux_options);
    let bad_containers: Vec<&str> = spec
        .all_containers()
        .filter(|c| !valid(&c.security().se_linux_options))
        .map(|c| c.name())
        .collect();
    let who = setters(pod, &bad_containers)?;
    let mut problems = Vec::new();
    if !types.is_empty() {
        let types = sorted_set(types);
        problems.push(format!(
            "{} {}",
            pluralize("type", "types", types.len()),
            join_quote(&types)
        ));
    }
    if user {
        problems.push("user may not be set".to_owned());
    }
    if role {
        problems.push("role may not be set".to_owned());
    }
    Failure::new(
        "seLinuxOptions",
        format!(
            "{who} set forbidden securityContext.seLinuxOptions: {}",
            problems.join("; ")
        ),
    )
}

/// SELinux: the container types only, and no user or role (v1.0–v1.30).
pub fn se_linux_1_0(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    se_linux(
        spec,
        &["", "container_t", "container_init_t", "container_kvm_t"],
    )
}

/// SELinux from v1.31, which also allows `container_engine_t`.
pub fn se_linux_1_31(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    se_linux(
        spec,
        &[
            "",
            "container_t",
            "container_init_t",
            "container_kvm_t",
            "container_engine_t",
        ],
    )
}

fn allowed_seccomp_annotation(value: &str) -> bool {
    value == "runtime/default" || value == "docker/default" || value.starts_with("localhost/")
}

/// Seccomp before its fields existed (v1.0–v1.18): the alpha annotations of
/// the pod and of each container it has.
pub fn seccomp_annotations(metadata: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut forbidden = Vec::new();
    if let Some(value) = metadata.annotation(SECCOMP_POD_ANNOTATION)
        && !allowed_seccomp_annotation(value)
    {
        forbidden.push(key_value(SECCOMP_POD_ANNOTATION, value));
    }
    for container in spec.all_containers() {
        let key = format!("{SECCOMP_CONTAINER_ANNOTATION_PREFIX}{}", container.name());
        if let Some(value) = metadata.annotation(&key)
            && !allowed_seccomp_annotation(value)
        {
            forbidden.push(key_value(&key, value));
        }
    }
    if forbidden.is_empty() {
        return None;
    }
    let forbidden = sorted_set(forbidden);
    Failure::new(
        "seccompProfile",
        format!(
            "forbidden {} {}",
            pluralize("annotation", "annotations", forbidden.len()),
            forbidden.join(", ")
        ),
    )
}

fn explicitly_bad_seccomp(spec: &Spec<'_>) -> Option<Failure> {
    let (pod, bad_containers, values) =
        bad_profiles(spec, |sc| sc.seccomp_profile.as_ref(), allowed_profile_type);
    let who = setters(pod, &bad_containers)?;
    Failure::new(
        "seccompProfile",
        format!(
            "{who} must not set securityContext.seccompProfile.type to {}",
            join_quote(&sorted_set(values))
        ),
    )
}

/// Seccomp (v1.19+, baseline): where a profile is set, it is not
/// `Unconfined`.
pub fn seccomp_baseline(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    explicitly_bad_seccomp(spec)
}

/// Seccomp (restricted): a valid profile on the pod, or on every container
/// that does not inherit one.
pub fn seccomp_restricted(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    if let Some(failure) = explicitly_bad_seccomp(spec) {
        return Some(failure);
    }
    let pod_set = spec.security().seccomp_profile.is_some();
    let implicit: Vec<&str> = spec
        .all_containers()
        .filter(|c| !pod_set && c.security().seccomp_profile.is_none())
        .map(|c| c.name())
        .collect();
    if implicit.is_empty() {
        return None;
    }
    Failure::new(
        "seccompProfile",
        format!(
            r#"pod or {} must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
            super::text::containers(&implicit)
        ),
    )
}
