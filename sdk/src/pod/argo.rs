//! Argo Workflows' templates as pod specs. An Argo template is not a pod
//! spec: its main container is `container` or `script` (or the containers
//! of a `containerSet`), beside `initContainers` and `sidecars`, and its
//! pod-level fields (security context, node selection, volumes) are split
//! between the template and the workflow. Policies that read pod specs get
//! each pod-running template as the pod spec Argo builds from it.

use serde_json::{Map, Value, json};

/// Where the workflow spec of an Argo kind is, if `group`/`kind` is one.
pub fn workflow_spec(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("argoproj.io", "Workflow" | "WorkflowTemplate" | "ClusterWorkflowTemplate") => {
            Some("/spec")
        }
        ("argoproj.io", "CronWorkflow") => Some("/spec/workflowSpec"),
        _ => None,
    }
}

/// Pod-level fields a template sets, else takes from the workflow.
const INHERITED: [&str; 7] = [
    "securityContext",
    "nodeSelector",
    "tolerations",
    "affinity",
    "priorityClassName",
    "serviceAccountName",
    "automountServiceAccountToken",
];

/// Pod-level fields only the workflow sets.
const WORKFLOW_ONLY: [&str; 4] = ["hostNetwork", "dnsPolicy", "volumes", "hostAliases"];

/// Each template that runs a pod, as (JSON Pointer of the template, its
/// metadata, the pod spec Argo makes of it).
pub fn views(object: &Value, workflow: &str) -> Vec<(String, Value, Value)> {
    let Some(spec) = object.pointer(workflow) else {
        return Vec::new();
    };
    let templates = spec["templates"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    templates
        .iter()
        .enumerate()
        .filter_map(|(i, template)| {
            let view = pod_spec(template, spec)?;
            let metadata = template
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            Some((format!("{workflow}/templates/{i}"), metadata, view))
        })
        .collect()
}

/// The pod spec of one template, or `None` when it runs no pod (steps,
/// dag, suspend, resource).
fn pod_spec(template: &Value, workflow: &Value) -> Option<Value> {
    let mut containers = Vec::new();
    for main in ["container", "script"] {
        if let Some(container) = template.get(main).filter(|c| c.is_object()) {
            let mut container = container.clone();
            // Argo names the main container `main`.
            container
                .as_object_mut()?
                .entry("name")
                .or_insert_with(|| json!("main"));
            containers.push(container);
        }
    }
    let set = template["containerSet"]["containers"].as_array();
    containers.extend(set.into_iter().flatten().cloned());
    if containers.is_empty() {
        return None;
    }
    containers.extend(
        template["sidecars"]
            .as_array()
            .into_iter()
            .flatten()
            .cloned(),
    );
    let mut view = Map::new();
    view.insert("containers".into(), Value::Array(containers));
    if let Some(init) = template.get("initContainers") {
        view.insert("initContainers".into(), init.clone());
    }
    for field in INHERITED {
        if let Some(value) = template.get(field).or_else(|| workflow.get(field)) {
            view.insert(field.into(), value.clone());
        }
    }
    for field in WORKFLOW_ONLY {
        if let Some(value) = workflow.get(field) {
            view.insert(field.into(), value.clone());
        }
    }
    Some(Value::Object(view))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_running_templates_become_pod_specs_with_the_workflows_fields() {
        let workflow = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "spec": {
        "entrypoint": "main", "hostNetwork": true,
        "securityContext": {"runAsNonRoot": true},
        "volumes": [{"name": "data", "emptyDir": {}}],
        "templates": [
            {"name": "main", "steps": [[{"name": "train", "template": "train"}]]},
            {"name": "train", "metadata": {"labels": {"app": "t"}},
             "container": {"image": "nvcr.io/pytorch:24.05", "securityContext": {"privileged": true}},
             "sidecars": [{"name": "log", "image": "busybox:1"}],
             "initContainers": [{"name": "fetch", "image": "alpine:3"}],
             "nodeSelector": {"gpu": "h100"}},
            {"name": "eval", "script": {"image": "python:3", "source": "print(1)"}},
            {"name": "set", "containerSet": {"containers": [{"name": "a", "image": "a:1"}]}},
        ]}});
        let views = views(&workflow, workflow_spec("argoproj.io", "Workflow").unwrap());
        let pointers: Vec<&str> = views.iter().map(|(p, _, _)| p.as_str()).collect();
        assert_eq!(
            pointers,
            [
                "/spec/templates/1",
                "/spec/templates/2",
                "/spec/templates/3"
            ]
        );
        let (_, metadata, train) = &views[0];
        assert_eq!(metadata["labels"]["app"], "t");
        assert_eq!(train["containers"][0]["name"], "main");
        assert_eq!(
            train["containers"][0]["securityContext"]["privileged"],
            true
        );
        assert_eq!(train["containers"][1]["name"], "log");
        assert_eq!(train["initContainers"][0]["name"], "fetch");
        assert_eq!(train["nodeSelector"]["gpu"], "h100");
        assert_eq!(train["securityContext"]["runAsNonRoot"], true, "inherited");
        assert_eq!(
            (
                train["hostNetwork"].clone(),
                train["volumes"][0]["name"].clone()
            ),
            (json!(true), json!("data"))
        );
        assert_eq!(views[1].2["containers"][0]["name"], "main");
        assert_eq!(views[2].2["containers"][0]["name"], "a");

        let cron = json!({"spec": {"workflowSpec": {"templates": [{"name": "x", "container": {"image": "x:1"}}]}}});
        let found = super::views(&cron, workflow_spec("argoproj.io", "CronWorkflow").unwrap());
        assert_eq!(found[0].0, "/spec/workflowSpec/templates/0");
    }
}
