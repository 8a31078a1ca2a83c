//! Default classes: written into the pod templates that name none, and on
//! a Pod with the priority its class gives (Kubernetes' Priority admission
//! plugin ran before any webhook, so it cannot).

use serde_json::Value;
use tollgate_sdk::edit::{Node, Shape};
use tollgate_sdk::pod::TemplatePaths;

use crate::settings::Settings;
use crate::workload::{Type, Workload};

/// The class each template of `workload` is given: its type's default
/// where it names none.
pub fn assigned<'s>(workload: &Workload<'_>, settings: &'s Settings) -> Vec<Option<&'s str>> {
    let default = match workload.kind_of_work(&settings.workload_label) {
        Some(Type::Training) => settings.default_classes.training.as_deref(),
        Some(Type::Inference) => settings.default_classes.inference.as_deref(),
        None => None,
    };
    workload
        .templates
        .iter()
        .map(|(_, t)| default.filter(|_| t.spec.priority_class_name.is_none()))
        .collect()
}

/// A Pod's priority as its class gives it: (value, preemption policy).
pub type Priority<'c> = (i32, &'c str);

/// The object `text` (of `group`/`kind`) with the `assigned` classes (by
/// template, in `workload`'s order) written, and, for a Pod, `priority`;
/// `None` when that changes nothing.
///
/// # Errors
///
/// The text is not JSON.
pub fn write(
    text: &str,
    group: &str,
    kind: &str,
    paths: &TemplatePaths,
    workload: &Workload<'_>,
    assigned: &[Option<&str>],
    priority: Option<Priority<'_>>,
) -> Result<Option<String>, serde_json::Error> {
    if assigned.iter().all(Option::is_none) && priority.is_none() {
        return Ok(None);
    }
    let spec = Shape::object([
        ("priorityClassName", Shape::Value),
        ("priority", Shape::Value),
        ("preemptionPolicy", Shape::Value),
    ]);
    let template = Shape::object([("spec", spec)]);
    let mut root = Node::read(text, &paths.template_shape(group, kind, &template))?;
    for found in paths.template_pointers(group, kind, &root) {
        let Some(index) = workload
            .templates
            .iter()
            .position(|(p, _)| *p == found.pointer)
        else {
            continue;
        };
        let pointer = if found.bare {
            found.pointer
        } else {
            format!("{}/spec", found.pointer)
        };
        let Some(node) = root.pointer_mut(&pointer) else {
            continue;
        };
        if let Some(class) = assigned[index]
            && let Some(slot) = node.entry("priorityClassName", || Value::Null)
        {
            *slot = Value::from(class);
        }
        if let Some((value, policy)) = priority {
            if let Some(slot) = node.entry("priority", || Value::Null) {
                *slot = Value::from(value);
            }
            if let Some(slot) = node.entry("preemptionPolicy", || Value::Null) {
                *slot = Value::from(policy);
            }
        }
    }
    Ok(Some(root.to_json()))
}
