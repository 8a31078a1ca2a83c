//! `pod-security`: the Kubernetes Pod Security Standards (`baseline`,
//! `restricted`), with the verdicts and messages of Kubernetes' Pod Security
//! Admission for every policy version from v1.0 to v1.37, applied to Pods and
//! to the pod templates of workloads and ML jobs.
//!
//! Where it differs from the built-in admission: it enforces on pod
//! templates too (PSA only warns there), and an UPDATE of a workload is
//! checked only when a field the checks read changed, so scaling an existing
//! workload is never refused. Pod UPDATEs follow PSA: only a new image, a
//! changed container count or a new ephemeral container is checked.

mod checks;
mod labels;
mod settings;

use tollgate_sdk::pod::model::{self, Template};
use tollgate_sdk::pod::{TemplatePaths, field_path};
use tollgate_sdk::{Policy, Request, Verdict};

use checks::Failure;
use labels::{Modes, Standard};
pub use settings::{Exemptions, Level, Override, Settings, Version};

/// Subresources of a Pod that PSA does not check; `ephemeralcontainers` is
/// checked.
const IGNORED_POD_SUBRESOURCES: &[&str] = &[
    "attach",
    "binding",
    "eviction",
    "exec",
    "log",
    "portforward",
    "proxy",
    "status",
];

/// The policy.
pub struct PodSecurity;

impl Policy for PodSecurity {
    type Settings = Settings;

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let Some(object) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        let exemptions = &settings.exemptions;
        if exemptions.usernames.contains(&request.user_info.username)
            || exemptions.namespaces.contains(&request.namespace)
        {
            return Ok(Verdict::allow());
        }
        let kind = &request.kind;
        if settings.namespace_labels && kind.group.is_empty() && kind.kind == "Namespace" {
            return namespace_change(request, object, settings);
        }
        let is_pod = kind.is_pod();
        let checked_subresource = request.sub_resource.is_empty()
            || (is_pod && !IGNORED_POD_SUBRESOURCES.contains(&request.sub_resource.as_str()));
        let modes = if settings.namespace_labels {
            Modes::from_labels(&labels::of_namespace(&request.namespace)?, settings)
        } else {
            let (level, version) = settings.for_namespace(&request.namespace);
            Modes::enforce((level, version.clone()))
        };
        let standards = [
            Some(&modes.enforce),
            modes.warn.as_ref(),
            modes.audit.as_ref(),
        ];
        let anything = standards
            .iter()
            .flatten()
            .any(|(level, _)| *level != Level::Privileged);
        if !checked_subresource || !anything {
            return Ok(Verdict::allow());
        }
        let paths = TemplatePaths::with(&settings.template_paths);
        let templates: Vec<(String, Template<'_>)> =
            paths.pod_templates_in(&kind.group, &kind.kind, object)?;
        if request.operation == "UPDATE"
            && let Some(old) = request.raw_old_object()
        {
            let old: Vec<(String, Template<'_>)> =
                paths.pod_templates_in(&kind.group, &kind.kind, old)?;
            if !changed(is_pod, &templates, &old) {
                return Ok(Verdict::allow());
            }
        }
        let judge = |(level, version): &Standard| judge(*level, version, &templates, exemptions);
        let mut verdict = match judge(&modes.enforce) {
            Some(message) => Verdict::deny(message),
            None => Verdict::allow(),
        };
        if let Some(message) = modes.warn.as_ref().and_then(judge) {
            verdict = verdict.warn(format!(
                "would {}",
                message.replacen("violates", "violate", 1)
            ));
        }
        if let Some(message) = modes.audit.as_ref().and_then(judge) {
            verdict = verdict.annotate(
                "audit-violations",
                format!("would {}", message.replacen("violates", "violate", 1)),
            );
        }
        Ok(verdict)
    }
}

/// PSA's message for the templates that break `level` at `version`, if any.
fn judge(
    level: Level,
    version: &Version,
    templates: &[(String, Template<'_>)],
    exemptions: &Exemptions,
) -> Option<String> {
    if level == Level::Privileged {
        return None;
    }
    let minor = version.effective_minor();
    let violations: Vec<(&str, Vec<Failure>)> = templates
        .iter()
        .filter(|(_, template)| !exempt_runtime_class(template, exemptions))
        .map(|(pointer, template)| {
            let failures = checks::run(level, minor, &template.metadata, &template.spec);
            (pointer.as_str(), failures)
        })
        .filter(|(_, failures)| !failures.is_empty())
        .collect();
    (!violations.is_empty()).then(|| message(level, version, templates.len(), &violations))
}

/// Most pods named in the warnings of a tightened namespace.
const MAX_NAMED_PODS: usize = 10;

/// A Namespace created or relabelled: allowed, with PSA's warnings when the
/// new `enforce` standard is stricter than the old and pods already in the
/// namespace (read through context, granted `v1/Pod`) would violate it.
fn namespace_change(
    request: &Request<'_>,
    object: &str,
    settings: &Settings,
) -> tollgate_sdk::Result<Verdict> {
    let new = Modes::from_labels(&labels::of(object)?, settings).enforce;
    let old = match request.raw_old_object() {
        Some(old) => Modes::from_labels(&labels::of(old)?, settings).enforce,
        None => return Ok(Verdict::allow()),
    };
    if new == old || new.0 == Level::Privileged {
        return Ok(Verdict::allow());
    }
    let pods = match tollgate_sdk::context::list("v1", "Pod", &request.name, "") {
        Ok(pods) => pods,
        Err(error) => {
            return Ok(Verdict::allow().warn(format!(
                "cannot check the pods in namespace {:?} against the new PodSecurity enforce level: {error}",
                request.name
            )));
        }
    };
    let pods: Vec<&serde_json::value::RawValue> = serde_json::from_str(&pods)?;
    let paths = TemplatePaths::with(&settings.template_paths);
    let mut violating = Vec::new();
    for pod in pods {
        let templates = paths.pod_templates_in("", "Pod", pod.get())?;
        if let Some(message) = judge(new.0, &new.1, &templates, &settings.exemptions) {
            let name = templates
                .first()
                .and_then(|(_, t)| t.metadata.name.as_ref().map(model::Text::as_str))
                .unwrap_or("")
                .to_owned();
            violating.push((name, message));
        }
    }
    if violating.is_empty() {
        return Ok(Verdict::allow());
    }
    let mut verdict = Verdict::allow().warn(format!(
        "existing pods in namespace {:?} violate the new PodSecurity enforce level \"{}:{}\"",
        request.name, new.0, new.1
    ));
    let total = violating.len();
    for (name, message) in violating.into_iter().take(MAX_NAMED_PODS) {
        let reasons = message
            .split_once("\": ")
            .map_or(message.as_str(), |(_, r)| r);
        verdict = verdict.warn(format!("{name}: {reasons}"));
    }
    if total > MAX_NAMED_PODS {
        verdict = verdict.warn(format!("(and {} other pods)", total - MAX_NAMED_PODS));
    }
    Ok(verdict)
}

tollgate_sdk::export!(PodSecurity);

fn exempt_runtime_class(template: &Template<'_>, exemptions: &Exemptions) -> bool {
    template
        .spec
        .runtime_class_name
        .as_ref()
        .is_some_and(|class| {
            exemptions
                .runtime_classes
                .iter()
                .any(|e| e == class.as_str())
        })
}

/// Whether an UPDATE changed something worth checking: for a Pod, what PSA
/// calls significant (container count, an image, the seccomp annotation of a
/// container, an ephemeral container added or changed); for a workload, any
/// field the checks read.
fn changed(is_pod: bool, new: &[(String, Template<'_>)], old: &[(String, Template<'_>)]) -> bool {
    if !is_pod {
        return new != old;
    }
    let (Some((_, new)), Some((_, old))) = (new.first(), old.first()) else {
        return true;
    };
    let differs = |a: &model::Container<'_>, b: &model::Container<'_>| {
        let seccomp = format!(
            "{}{}",
            checks::SECCOMP_CONTAINER_ANNOTATION_PREFIX,
            a.name()
        );
        a.image != b.image || new.metadata.annotation(&seccomp) != old.metadata.annotation(&seccomp)
    };
    let (new_spec, old_spec) = (&new.spec, &old.spec);
    let lists_differ = |n: &Option<Vec<model::Container<'_>>>,
                        o: &Option<Vec<model::Container<'_>>>| {
        let (n, o) = (
            n.as_deref().unwrap_or_default(),
            o.as_deref().unwrap_or_default(),
        );
        n.len() != o.len() || n.iter().zip(o).any(|(a, b)| differs(a, b))
    };
    lists_differ(&new_spec.containers, &old_spec.containers)
        || lists_differ(&new_spec.init_containers, &old_spec.init_containers)
        || new_spec.ephemeral_containers.iter().flatten().any(|added| {
            old_spec
                .ephemeral_containers
                .iter()
                .flatten()
                .find(|c| c.name == added.name)
                .is_none_or(|before| differs(added, before))
        })
}

/// `violates PodSecurity "restricted:v1.30": reason (detail), …`; an object
/// with several pod templates names each failing one by its path.
fn message(
    level: Level,
    version: &Version,
    templates: usize,
    violations: &[(&str, Vec<Failure>)],
) -> String {
    let reasons = |failures: &[Failure]| {
        failures
            .iter()
            .map(|f| {
                if f.detail.is_empty() {
                    f.reason.clone()
                } else {
                    format!("{} ({})", f.reason, f.detail)
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let body = if templates == 1 {
        reasons(&violations[0].1)
    } else {
        violations
            .iter()
            .map(|(pointer, failures)| format!("{}: {}", field_path(pointer), reasons(failures)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    format!("violates PodSecurity \"{level}:{version}\": {body}")
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tollgate_sdk::testing;

    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}, "spec": spec})
    }

    fn restricted_spec() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
        })
    }

    fn verdict(request: &str, settings: Value) -> Verdict {
        testing::evaluate::<PodSecurity>(request, &settings.to_string()).unwrap()
    }

    fn message(object: Value, settings: Value) -> Option<String> {
        verdict(&testing::review(object), settings).message
    }

    #[test]
    fn reports_every_failing_check_in_psa_order_and_words() {
        let spec = json!({
            "hostNetwork": true, "hostPID": true,
            "containers": [
                {"name": "a", "ports": [{"containerPort": 80, "hostPort": 80}],
                 "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}},
                {"name": "b", "securityContext": {"runAsUser": 0}},
            ],
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}, {"name": "scratch"}],
        });
        assert_eq!(
            message(
                pod(spec),
                json!({"level": "restricted", "version": "v1.30"})
            )
            .unwrap(),
            concat!(
                r#"violates PodSecurity "restricted:v1.30": "#,
                r#"host namespaces (hostNetwork=true, hostPID=true), "#,
                r#"hostPort (container "a" uses hostPort 80), "#,
                r#"privileged (container "a" must not set securityContext.privileged=true), "#,
                r#"allowPrivilegeEscalation != false (containers "a", "b" must set securityContext.allowPrivilegeEscalation=false), "#,
                r#"unrestricted capabilities (containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; container "a" must not include "CHOWN", "NET_ADMIN" in securityContext.capabilities.add), "#,
                r#"restricted volume types (volume "host" uses restricted volume type "hostPath"), "#,
                r#"runAsNonRoot != true (pod or containers "a", "b" must set securityContext.runAsNonRoot=true), "#,
                r#"runAsUser=0 (container "b" must not set runAsUser=0), "#,
                r#"seccompProfile (pod or containers "a", "b" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")"#,
            )
        );
    }

    #[test]
    fn baseline_reports_only_baseline_checks() {
        let spec = json!({"containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]});
        assert_eq!(
            message(pod(spec), json!({"level": "baseline"})).unwrap(),
            r#"violates PodSecurity "baseline:latest": non-default capabilities (container "a" must not include "SYS_ADMIN" in securityContext.capabilities.add)"#
        );
        assert!(
            message(
                pod(json!({"containers": [{"name": "a"}]})),
                json!({"level": "baseline"})
            )
            .is_none()
        );
    }

    #[test]
    fn profile_and_sysctl_messages() {
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"container.apparmor.security.beta.kubernetes.io/a": "unconfined"}},
            "spec": {
                "securityContext": {"seccompProfile": {"type": "Unconfined"}, "sysctls": [{"name": "kernel.msgmax"}],
                    "seLinuxOptions": {"type": "spc_t", "user": "root"}},
                "containers": [{"name": "a", "securityContext": {"appArmorProfile": {"type": "Unconfined"}}}]}});
        assert_eq!(
            message(object, json!({"level": "baseline", "version": "v1.31"})).unwrap(),
            concat!(
                r#"violates PodSecurity "baseline:v1.31": "#,
                r#"forbidden AppArmor profiles (container "a" and annotation must not set AppArmor profile type to "Unconfined", "container.apparmor.security.beta.kubernetes.io/a="unconfined""), "#,
                r#"seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set), "#,
                r#"seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined"), "#,
                r#"forbidden sysctls (kernel.msgmax)"#,
            )
        );
    }

    #[test]
    fn checks_follow_the_policy_version() {
        let spec = json!({"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem"}]}, "containers": [{"name": "a"}]});
        let at = |version: &str| {
            message(
                pod(spec.clone()),
                json!({"level": "baseline", "version": version}),
            )
        };
        assert!(
            at("v1.31")
                .unwrap()
                .contains("forbidden sysctls (net.ipv4.tcp_rmem)")
        );
        assert!(at("v1.32").is_none());
        // Newer than the newest known: evaluated as the newest, named as written.
        let probe = json!({"containers": [{"name": "a", "livenessProbe": {"httpGet": {"host": "10.0.0.1", "port": 80}}}]});
        let at = |version: &str| {
            message(
                pod(probe.clone()),
                json!({"level": "baseline", "version": version}),
            )
        };
        assert!(at("v1.33").is_none());
        assert_eq!(
            at("v1.99").unwrap(),
            r#"violates PodSecurity "baseline:v1.99": probe or lifecycle host (container "a" uses probe or lifecycle host "10.0.0.1")"#
        );
    }

    #[test]
    fn user_namespaces_relax_root_checks_from_v1_35() {
        let mut spec = restricted_spec();
        spec["hostUsers"] = json!(false);
        spec["securityContext"] =
            json!({"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}});
        let at = |version: &str| {
            message(
                pod(spec.clone()),
                json!({"level": "restricted", "version": version}),
            )
        };
        assert!(at("v1.35").is_none());
        let before = at("v1.34").unwrap();
        assert!(
            before.contains("runAsNonRoot != true") && before.contains("runAsUser=0"),
            "{before}"
        );
    }

    #[test]
    fn windows_pods_are_exempt_from_linux_only_checks_from_v1_25() {
        let spec = json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true}, "containers": [{"name": "a"}]});
        let at = |version: &str| {
            message(
                pod(spec.clone()),
                json!({"level": "restricted", "version": version}),
            )
        };
        assert!(at("v1.25").is_none());
        assert!(
            at("v1.24")
                .unwrap()
                .contains("allowPrivilegeEscalation != false")
        );
    }

    #[test]
    fn enforces_on_every_template_of_an_ml_job_and_names_each() {
        let privileged =
            json!({"containers": [{"name": "w", "securityContext": {"privileged": true}}]});
        let job = json!({"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "j", "namespace": "ml"},
        "spec": {"pytorchReplicaSpecs": {
            "Master": {"template": {"spec": {"containers": [{"name": "m"}]}}},
            "Worker": {"template": {"spec": privileged}},
        }}});
        assert_eq!(
            message(job, json!({"level": "baseline"})).unwrap(),
            r#"violates PodSecurity "baseline:latest": spec.pytorchReplicaSpecs.Worker.template: privileged (container "w" must not set securityContext.privileged=true)"#
        );
        let jobset = json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet", "metadata": {"name": "s"},
            "spec": {"replicatedJobs": [{"template": {"spec": {"template": {"spec": privileged}}}}]}});
        assert!(
            message(jobset, json!({"level": "baseline"}))
                .unwrap()
                .contains("privileged (")
        );
    }

    #[test]
    fn every_workload_kind_with_a_pod_template_is_checked() {
        let template = json!({"spec": {"hostIPC": true, "containers": [{"name": "a"}]}});
        let kinds = [
            ("v1", "PodTemplate", json!({"template": template})),
            (
                "v1",
                "ReplicationController",
                json!({"spec": {"template": template}}),
            ),
            (
                "apps/v1",
                "ReplicaSet",
                json!({"spec": {"template": template}}),
            ),
            (
                "apps/v1",
                "StatefulSet",
                json!({"spec": {"template": template}}),
            ),
            (
                "apps/v1",
                "DaemonSet",
                json!({"spec": {"template": template}}),
            ),
            ("batch/v1", "Job", json!({"spec": {"template": template}})),
            (
                "batch/v1",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
            ),
            (
                "kubeflow.org/v1",
                "TFJob",
                json!({"spec": {"tfReplicaSpecs": {"Chief": {"template": template}}}}),
            ),
            (
                "kubeflow.org/v1",
                "PaddleJob",
                json!({"spec": {"paddleReplicaSpecs": {"Worker": {"template": template}}}}),
            ),
            (
                "kubeflow.org/v1",
                "XGBoostJob",
                json!({"spec": {"xgbReplicaSpecs": {"Worker": {"template": template}}}}),
            ),
            (
                "kubeflow.org/v2beta1",
                "MPIJob",
                json!({"spec": {"mpiReplicaSpecs": {"Launcher": {"template": template}}}}),
            ),
            (
                "ray.io/v1",
                "RayCluster",
                json!({"spec": {"headGroupSpec": {"template": template}, "workerGroupSpecs": [{"template": template}]}}),
            ),
            (
                "ray.io/v1",
                "RayJob",
                json!({"spec": {"submitterPodTemplate": template}}),
            ),
            (
                "ray.io/v1",
                "RayService",
                json!({"spec": {"rayClusterConfig": {"workerGroupSpecs": [{"template": template}]}}}),
            ),
            (
                "trainer.kubeflow.org/v1alpha1",
                "TrainJob",
                json!({"spec": {"podTemplateOverrides": [{"targetJobs": [{"name": "node"}], "spec": template["spec"]}]}}),
            ),
            (
                "leaderworkerset.x-k8s.io/v1",
                "LeaderWorkerSet",
                json!({"spec": {"leaderWorkerTemplate": {"leaderTemplate": template, "workerTemplate": template}}}),
            ),
            (
                "batch.volcano.sh/v1alpha1",
                "Job",
                json!({"spec": {"tasks": [{"name": "t", "template": template}]}}),
            ),
        ];
        for (api_version, kind, body) in kinds {
            let mut object =
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "w"}});
            object
                .as_object_mut()
                .unwrap()
                .extend(body.as_object().unwrap().clone());
            let denial = message(object, json!({"level": "baseline"}))
                .unwrap_or_else(|| panic!("{kind} was not checked"));
            assert!(
                denial.contains("host namespaces (hostIPC=true)"),
                "{kind}: {denial}"
            );
        }
    }

    #[test]
    fn argo_workflow_templates_are_checked_as_the_pods_argo_makes() {
        let workflow = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "w"},
            "spec": {"hostNetwork": true, "templates": [
                {"name": "main", "steps": [[{"name": "a", "template": "train"}]]},
                {"name": "train", "container": {"image": "t:1", "securityContext": {"privileged": true}}},
                {"name": "eval", "script": {"image": "p:3", "source": "print(1)"}}]}});
        let denial = message(workflow, json!({"level": "baseline"})).unwrap();
        assert!(denial.contains("spec.templates[1]: "), "{denial}");
        assert!(
            denial.contains(
                "privileged (container \"main\" must not set securityContext.privileged=true)"
            ),
            "{denial}"
        );
        assert!(
            denial.contains("host namespaces (hostNetwork=true)"),
            "{denial}"
        );
        let cron = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "c"},
            "spec": {"schedule": "0 * * * *", "workflowSpec": {"templates": [{"name": "t", "container": {"image": "t:1"}}]}}});
        assert!(message(cron, json!({"level": "baseline"})).is_none());
    }

    #[test]
    fn template_paths_in_settings_reach_new_crds() {
        let trainer = json!({"apiVersion": "example.com/v1", "kind": "Trainer", "metadata": {"name": "t"},
            "spec": {"workers": [{"template": {"spec": {"hostPID": true, "containers": [{"name": "a"}]}}}]}});
        assert!(message(trainer.clone(), json!({"level": "baseline"})).is_none());
        let settings = json!({"level": "baseline", "templatePaths": [
            {"group": "example.com", "kind": "Trainer", "paths": ["spec.workers[*].template.spec"]}]});
        assert!(
            message(trainer, settings)
                .unwrap()
                .ends_with(r#""baseline:latest": host namespaces (hostPID=true)"#)
        );
    }

    #[test]
    fn template_metadata_carries_the_annotations_checks_read() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {
                "metadata": {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}},
                "spec": {"containers": [{"name": "a"}]}}}});
        assert_eq!(
            message(deployment, json!({"level": "baseline", "version": "v1.18"})).unwrap(),
            r#"violates PodSecurity "baseline:v1.18": seccompProfile (forbidden annotation seccomp.security.alpha.kubernetes.io/pod="unconfined")"#
        );
    }

    #[test]
    fn exemptions_and_namespace_overrides() {
        let bad =
            json!({"hostNetwork": true, "runtimeClassName": "kata", "containers": [{"name": "a"}]});
        let settings = |extra: Value| {
            let mut s = json!({"level": "baseline"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            s
        };
        assert!(message(pod(bad.clone()), settings(json!({}))).is_some());
        for exemption in [
            json!({"namespaces": ["ml"]}),
            json!({"usernames": ["tester"]}),
            json!({"runtimeClasses": ["kata"]}),
        ] {
            assert!(
                message(pod(bad.clone()), settings(json!({"exemptions": exemption}))).is_none()
            );
        }
        let overrides = json!({"namespaceOverrides": {"ml": {"level": "privileged"}}});
        assert!(message(pod(bad.clone()), settings(overrides)).is_none());
        let overrides =
            json!({"namespaceOverrides": {"ml": {"level": "restricted", "version": "v1.20"}}});
        assert!(
            message(pod(bad), settings(overrides))
                .unwrap()
                .starts_with(r#"violates PodSecurity "restricted:v1.20""#)
        );
    }

    #[test]
    fn updates_are_checked_only_when_something_checked_changed() {
        let update = |old: Value, new: Value| {
            let mut request: Value =
                serde_json::from_str(&testing::request("UPDATE", new)).unwrap();
            request["oldObject"] = old;
            verdict(&request.to_string(), json!({"level": "baseline"}))
        };
        let privileged = |image: &str| {
            pod(
                json!({"containers": [{"name": "a", "image": image, "securityContext": {"privileged": true}}]}),
            )
        };
        let mut labelled = privileged("x:1");
        labelled["metadata"]["labels"] = json!({"team": "vision"});
        assert!(update(privileged("x:1"), labelled).allowed);
        assert!(!update(privileged("x:1"), privileged("x:2")).allowed);
        let deployment = |replicas: u32, privileged: bool| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": replicas,
                "template": {"spec": {"containers": [{"name": "a", "securityContext": {"privileged": privileged}}]}}}})
        };
        assert!(update(deployment(1, true), deployment(5, true)).allowed);
        assert!(!update(deployment(1, false), deployment(1, true)).allowed);
    }

    #[test]
    fn ignored_subresources_and_deletes_pass() {
        let bad = pod(json!({"hostPID": true, "containers": [{"name": "a"}]}));
        let mut request: Value = serde_json::from_str(&testing::review(bad.clone())).unwrap();
        request["subResource"] = json!("status");
        assert!(verdict(&request.to_string(), json!({"level": "baseline"})).allowed);
        request["subResource"] = json!("ephemeralcontainers");
        assert!(!verdict(&request.to_string(), json!({"level": "baseline"})).allowed);
        let mut delete: Value = serde_json::from_str(&testing::request("DELETE", bad)).unwrap();
        delete["object"] = Value::Null;
        assert!(verdict(&delete.to_string(), json!({"level": "baseline"})).allowed);
    }

    #[test]
    fn bad_settings_are_refused_with_the_field_named() {
        let error = |settings: Value| {
            testing::validate_settings::<PodSecurity>(&settings.to_string()).unwrap_err()
        };
        assert!(error(json!({})).contains("missing field `level`"));
        assert!(error(json!({"level": "strict"})).contains("unknown variant `strict`"));
        assert!(
            error(json!({"level": "baseline", "version": "1.30"}))
                .contains(r#"version "1.30" is not"#)
        );
        assert!(
            error(json!({"level": "baseline", "exemptions": {"users": []}}))
                .contains("unknown field `users`")
        );
        assert!(
            error(json!({"level": "baseline", "namespaceOverrides": {"a": {"level": "none"}}}))
                .contains("unknown variant `none`")
        );
    }

    #[test]
    fn namespace_labels_set_each_mode_and_tightening_a_namespace_names_its_pods() {
        use std::rc::Rc;
        let namespace = |labels: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml", "labels": labels}});
        let running = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "runner", "namespace": "ml"},
            "spec": {"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}});
        let settings = r#"{"level": "privileged", "namespaceLabels": true}"#;
        let labelled = namespace(json!({
            "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted",
            "pod-security.kubernetes.io/audit": "restricted",
        }));
        let cluster = Rc::new(testing::Cluster::new::<PodSecurity>(
            vec![labelled.clone(), running.clone()],
            settings,
        ));
        let evaluate = |request: String| {
            testing::with_host(cluster.clone(), || {
                testing::evaluate::<PodSecurity>(&request, settings).unwrap()
            })
        };
        // enforce baseline: the privileged pod is refused.
        let refused = evaluate(testing::review(running.clone()));
        assert!(!refused.allowed);
        assert!(
            refused
                .message
                .unwrap()
                .starts_with("violates PodSecurity \"baseline:latest\": privileged")
        );
        // Baseline but not restricted: admitted, warned and audited.
        let plain = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let admitted = evaluate(testing::review(plain));
        assert!(admitted.allowed);
        assert!(
            admitted.warnings[0].starts_with("would violate PodSecurity \"restricted:latest\": "),
            "{:?}",
            admitted.warnings
        );
        assert_eq!(admitted.audit_annotations[0].0, "audit-violations");
        // Tightening the namespace to baseline names the pod that breaks it.
        let before = namespace(json!({}));
        let tightened = evaluate(testing::update(before, labelled));
        assert!(tightened.allowed);
        assert_eq!(
            tightened.warnings,
            [
                "existing pods in namespace \"ml\" violate the new PodSecurity enforce level \"baseline:latest\"".to_owned(),
                "runner: privileged (container \"c\" must not set securityContext.privileged=true)".to_owned(),
            ]
        );
    }
}
