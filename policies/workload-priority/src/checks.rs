//! The checks on a workload: the classes its pod templates name, training
//! that may preempt, and its Kueue queue.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::selector::Selector;
use tollgate_sdk::{Result, context};

use crate::classes::Classes;
use crate::settings::{ClassRule, Settings};
use crate::workload::{QUEUE_LABEL, Type, Workload, place};

/// The classes only the cluster's own components may name.
const SYSTEM_CLASSES: [&str; 2] = ["system-node-critical", "system-cluster-critical"];

/// The request's namespace and what has been read about it.
pub struct Check<'s> {
    settings: &'s Settings,
    namespace: &'s str,
    labels: Option<BTreeMap<String, String>>,
    /// The PriorityClasses read so far.
    pub classes: Classes,
}

/// A Namespace or a LocalQueue: what the policy reads of them.
#[derive(Default, Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Meta,
}

#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl<'s> Check<'s> {
    /// Checks in `namespace`.
    pub fn new(settings: &'s Settings, namespace: &'s str) -> Self {
        Check {
            settings,
            namespace,
            labels: None,
            classes: Classes::default(),
        }
    }

    /// Whether the namespace is one of `names` or selected by `selector`.
    fn selects(&mut self, names: &[String], selector: Option<&Selector>) -> Result<bool> {
        if names.iter().any(|n| n == self.namespace) {
            return Ok(true);
        }
        let Some(selector) = selector else {
            return Ok(false);
        };
        if self.labels.is_none() {
            let namespace: Object = context::get_as("v1", "Namespace", "", self.namespace)?
                .ok_or_else(|| {
                    format!(
                        "namespace {:?} is not in the cluster context, so the rules for it cannot be known",
                        self.namespace
                    )
                })?;
            self.labels = Some(namespace.metadata.labels);
        }
        Ok(selector.matches_labels(self.labels.get_or_insert_default()))
    }

    /// The class rule of the namespace, if one applies.
    fn rule(&mut self) -> Result<Option<&'s ClassRule>> {
        for rule in &self.settings.classes {
            if self.selects(&rule.namespaces, rule.namespace_selector.as_ref())? {
                return Ok(Some(rule));
            }
        }
        Ok(None)
    }

    /// Every problem of `workload` whose templates name, or are given
    /// (`defaults`, by template), these classes.
    pub fn problems(
        &mut self,
        workload: &Workload<'_>,
        defaults: &[Option<&str>],
    ) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let work = workload.kind_of_work(&self.settings.workload_label);
        for ((pointer, template), default) in workload.templates.iter().zip(defaults) {
            let class = template.spec.priority_class_name.as_deref().or(*default);
            let place = place(pointer);
            if let Some(class) = class
                && let Some(problem) = self.class_problem(class)?
            {
                problems.push(format!("{place}{problem}"));
                continue;
            }
            if work == Some(Type::Training) && self.settings.training_must_not_preempt {
                problems.extend(
                    self.preemption_problem(class)?
                        .map(|p| format!("{place}{p}")),
                );
            }
        }
        problems.extend(self.queue_problem(workload)?);
        Ok(problems)
    }

    /// Why naming `class` here is not allowed, if it is not.
    fn class_problem(&mut self, class: &str) -> Result<Option<String>> {
        if SYSTEM_CLASSES.contains(&class) {
            return Ok(Some(format!(
                "priority class {class:?} is reserved for the cluster's own components (allowed only in {}): name your namespace's class instead",
                self.settings.exempt_namespaces.join(", ")
            )));
        }
        let Some(rule) = self.rule()? else {
            return Ok(None);
        };
        if rule.allowed.iter().any(|a| a == class) {
            return Ok(None);
        }
        let allowed = describe(rule);
        let Some(max) = rule.max_value else {
            return Ok(Some(format!(
                "priority class {class:?} is not allowed in namespace {:?}: name {allowed}",
                self.namespace
            )));
        };
        Ok(match self.classes.get(class)? {
            None => Some(format!(
                "priority class {class:?} does not exist: name {allowed}"
            )),
            Some(found) if i64::from(found.value) > max => Some(format!(
                "priority class {class:?} has value {}, above the {max} allowed in namespace {:?}: name {allowed}",
                found.value, self.namespace
            )),
            Some(_) => None,
        })
    }

    /// Why a training workload with `class` (or none) may preempt others,
    /// if it may.
    fn preemption_problem(&mut self, class: Option<&str>) -> Result<Option<String>> {
        let effective = match class {
            Some(name) => self.classes.get(name)?.cloned(),
            None => self.classes.global_default()?,
        };
        let Some(effective) = effective.filter(|c| c.preempts()) else {
            return Ok(None);
        };
        let how = match class {
            Some(_) => format!("priority class {:?}", effective.metadata.name),
            None => format!(
                "no priority class, so it gets the cluster's default {:?}, which",
                effective.metadata.name
            ),
        };
        let never = self.classes.never_preempting()?;
        let instead = if never.is_empty() {
            "create one with preemptionPolicy: Never".to_owned()
        } else {
            format!(
                "name one with preemptionPolicy: Never ({})",
                never.join(", ")
            )
        };
        Ok(Some(format!(
            "a training workload with {how} may preempt other pods (preemptionPolicy {}): {instead}",
            effective.preemption_policy()
        )))
    }

    /// Why the workload's queue is wrong or missing, if it is.
    fn queue_problem(&mut self, workload: &Workload<'_>) -> Result<Option<String>> {
        let Some(queues) = &self.settings.queues else {
            return Ok(None);
        };
        if workload.controlled()
            || !workload.asks_gpus(&self.settings.gpu_resource_prefixes)
            || !self.selects(&queues.namespaces, queues.namespace_selector.as_ref())?
        {
            return Ok(None);
        }
        let local: Vec<Object> = context::list_as(
            &queues.local_queue_api_version,
            "LocalQueue",
            self.namespace,
            "",
        )?;
        let names: Vec<&str> = local.iter().map(|q| q.metadata.name.as_str()).collect();
        let valid = if names.is_empty() {
            "it has none: ask for one".to_owned()
        } else {
            format!("its LocalQueues: {}", names.join(", "))
        };
        let namespace = self.namespace;
        Ok(match workload.queue() {
            Some(queue) if !names.contains(&queue) => Some(format!(
                "label {QUEUE_LABEL}={queue} names no LocalQueue of namespace {namespace:?} ({valid})"
            )),
            Some(_) => None,
            None if queues.require_queue => Some(format!(
                "GPU workloads in namespace {namespace:?} go through Kueue: add the label {QUEUE_LABEL} ({valid})"
            )),
            None if queues.refuse_unsuspended_without_queue
                && workload.runs_unsuspended() == Some(true) =>
            {
                Some(format!(
                    "a GPU job without a queue starts at once, outside Kueue's quota: add the label {QUEUE_LABEL} ({valid}) or create it with suspend: true"
                ))
            }
            None => None,
        })
    }
}

/// What a class rule allows, for messages.
fn describe(rule: &ClassRule) -> String {
    let names = (!rule.allowed.is_empty()).then(|| format!("one of {}", rule.allowed.join(", ")));
    let values = rule
        .max_value
        .map(|max| format!("a class of value at most {max}"));
    names
        .into_iter()
        .chain(values)
        .collect::<Vec<_>>()
        .join(", or ")
}
