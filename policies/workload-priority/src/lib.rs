//! `workload-priority`: which priority classes workloads may name, default
//! classes by workload type, who may create high PriorityClasses, and Kueue
//! queues for GPU workloads.
//!
//! - **Class use**: per namespace, the classes a workload may name (by
//!   name, or a value ceiling read from the PriorityClass); the system
//!   classes only in exempt namespaces; where configured, training and
//!   batch workloads only with classes that never preempt.
//! - **Default classes** (mutating): pods and templates that name no class
//!   get their workload type's default; a Pod also gets the priority its
//!   class gives.
//! - **PriorityClass objects**: above a value ceiling, or `globalDefault`,
//!   only by allowed users and groups.
//! - **Queues**: in queued namespaces, GPU workloads name one of the
//!   namespace's LocalQueues; unsuspended GPU jobs without one are refused.
//!
//! On UPDATE, a problem the old object already had is a warning.

mod checks;
mod classes;
mod defaults;
mod settings;
mod workload;

use tollgate_sdk::pod::TemplatePaths;
use tollgate_sdk::{Policy, Request, Verdict};

use checks::Check;
use classes::PriorityClass;
pub use settings::Settings;
use workload::Workload;

/// The policy.
pub struct WorkloadPriority;

impl Policy for WorkloadPriority {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings::validate(settings)
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let (group, kind) = (request.kind.group.as_str(), request.kind.kind.as_str());
        if !request.sub_resource.is_empty()
            || !matches!(request.operation.as_str(), "CREATE" | "UPDATE")
        {
            return Ok(Verdict::allow());
        }
        if (group, kind) == ("scheduling.k8s.io", "PriorityClass") {
            return priority_class(request, settings);
        }
        let namespace = request.namespace.as_str();
        let paths = TemplatePaths::with(&settings.template_paths);
        if namespace.is_empty()
            || settings.exempt_namespaces.iter().any(|n| n == namespace)
            || !paths.knows(group, kind)
        {
            return Ok(Verdict::allow());
        }
        let Some(text) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        workload(request, settings, &paths, text)
    }
}

/// A Pod or workload CREATE or UPDATE (`text`, its object): its classes and
/// queue checked, and with `defaultClasses`, the defaults written.
fn workload(
    request: &Request<'_>,
    settings: &Settings,
    paths: &TemplatePaths,
    text: &str,
) -> tollgate_sdk::Result<Verdict> {
    let (group, kind) = (request.kind.group.as_str(), request.kind.kind.as_str());
    let workload = Workload::read(group, kind, text, paths)?;
    let mutating =
        settings.default_classes.training.is_some() || settings.default_classes.inference.is_some();
    let may_add = mutating
        && paths.editable(group, kind)
        && match request.operation.as_str() {
            "CREATE" => true,
            _ => {
                !workload.is_pod()
                    && paths.may_add_on_update(group, kind, request.raw_old_object(), text)?
            }
        };
    let assigned = if may_add {
        defaults::assigned(&workload, settings)
    } else {
        vec![None; workload.templates.len()]
    };

    let mut check = Check::new(settings, &request.namespace);
    let verdict = judge(request, &mut check, paths, &workload, &assigned)?;
    if !verdict.allowed || !mutating {
        return Ok(verdict);
    }
    let priority = match (&workload.templates[..], &assigned[..]) {
        ([(_, pod)], [assigned]) if workload.is_pod() && request.operation == "CREATE" => {
            pod_priority(
                &mut check,
                pod.spec.priority_class_name.as_deref(),
                *assigned,
                pod.spec.priority,
            )?
        }
        _ => None,
    };
    let priority = priority
        .as_ref()
        .map(|(value, policy)| (*value, policy.as_str()));
    Ok(
        match defaults::write(text, group, kind, paths, &workload, &assigned, priority)? {
            Some(object) => Verdict {
                warnings: verdict.warnings,
                ..Verdict::mutate_json(object)
            },
            None => verdict,
        },
    )
}

/// The verdict on `workload`'s problems with the `assigned` default classes
/// (and on UPDATE, its old version's as warnings).
fn judge(
    request: &Request<'_>,
    check: &mut Check<'_>,
    paths: &TemplatePaths,
    workload: &Workload<'_>,
    assigned: &[Option<&str>],
) -> tollgate_sdk::Result<Verdict> {
    let (group, kind) = (request.kind.group.as_str(), request.kind.kind.as_str());
    let mut problems = check.problems(workload, assigned)?;
    for class in assigned.iter().flatten() {
        if check.classes.get(class)?.is_none() {
            let problem = format!(
                "the default class {class:?} (defaultClasses) does not exist in the cluster: create it, or name another in the policy's settings"
            );
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    let before = match request.raw_old_object() {
        Some(old) if request.operation == "UPDATE" => {
            let old = Workload::read(group, kind, old, paths)?;
            check.problems(&old, &vec![None; old.templates.len()])?
        }
        _ => Vec::new(),
    };
    let subject = if request.name.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} {:?}", request.name)
    };
    Ok(Verdict::on_problems(&subject, problems, &before))
}

tollgate_sdk::export!(WorkloadPriority);

/// The priority a Pod must carry when its class was given (or changed) in
/// the mutating chain: Kubernetes' Priority admission plugin computed
/// `spec.priority` before any webhook ran. `None` when it already matches.
fn pod_priority(
    check: &mut Check<'_>,
    named: Option<&str>,
    assigned: Option<&str>,
    priority: Option<i64>,
) -> tollgate_sdk::Result<Option<(i32, String)>> {
    let Some(name) = assigned.or(named) else {
        return Ok(None);
    };
    let Some(class) = check.classes.get(name)? else {
        return Ok(None);
    };
    let stale = assigned.is_some() || priority.is_some_and(|p| p != i64::from(class.value));
    Ok(stale.then(|| (class.value, class.preemption_policy().to_owned())))
}

/// A PriorityClass CREATE or UPDATE: high values and global defaults only
/// by allowed users and groups.
fn priority_class(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
    let Some(text) = request.raw_object() else {
        return Ok(Verdict::allow());
    };
    let class: PriorityClass = serde_json::from_str(text)?;
    let old: Option<PriorityClass> = request
        .raw_old_object()
        .map(serde_json::from_str)
        .transpose()?;
    let rules = &settings.priority_classes;
    let mut problems = Vec::new();
    if let Some(max) = rules.max_value
        && i64::from(class.value) > max
        && old.as_ref().is_none_or(|o| o.value != class.value)
    {
        problems.push(format!("value {} is above the ceiling {max}", class.value));
    }
    if rules.restrict_global_default
        && class.global_default
        && !old.as_ref().is_some_and(|o| o.global_default)
    {
        problems
            .push("globalDefault: true makes it the class of every pod that names none".to_owned());
    }
    let user = &request.user_info;
    let trusted = rules.allowed_users.contains(&user.username)
        || user.groups.iter().any(|g| rules.allowed_groups.contains(g));
    if problems.is_empty() || trusted {
        return Ok(Verdict::allow());
    }
    let mut who = Vec::new();
    if !rules.allowed_users.is_empty() {
        who.push(format!("users {}", rules.allowed_users.join(", ")));
    }
    if !rules.allowed_groups.is_empty() {
        who.push(format!("members of {}", rules.allowed_groups.join(", ")));
    }
    let who = if who.is_empty() {
        "no one".to_owned()
    } else {
        who.join(" or ")
    };
    Ok(Verdict::deny(format!(
        "PriorityClass {:?}: {}; only {who} may create or change such a class (you are {:?}): ask a cluster admin, or choose a lower value",
        class.metadata.name,
        problems.join(", and "),
        user.username
    )))
}

#[cfg(test)]
mod tests;
