use std::rc::Rc;

use serde_json::{Value, json};
use tollgate_sdk::testing::{self, Cluster};

use super::*;

fn class(name: &str, value: i32, never: bool, global_default: bool) -> Value {
    json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
        "value": value, "globalDefault": global_default,
        "preemptionPolicy": if never { "Never" } else { "PreemptLowerPriority" }})
}

/// PriorityClasses, namespaces `ml` (research, queued) and `serve`, and
/// `ml`'s LocalQueues.
fn cluster() -> Vec<Value> {
    vec![
        class("gpu-batch", 1000, true, false),
        class("gpu-serving", 10_000, false, false),
        class("urgent", 1_000_000, false, false),
        class("system-node-critical", 2_000_001_000, false, false),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml", "labels": {"tier": "research", "kueue": "on"}}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "serve"}}),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "research", "namespace": "ml"}}),
        json!({"apiVersion": "kueue.x-k8s.io/v1beta1", "kind": "LocalQueue", "metadata": {"name": "team-a", "namespace": "ml"}}),
    ]
}

fn with_global_default(mut objects: Vec<Value>) -> Vec<Value> {
    objects.push(class("default-low", 0, false, true));
    objects
}

fn verdict(objects: Vec<Value>, request: &str, settings: &Value) -> Verdict {
    let settings = settings.to_string();
    let cluster = Rc::new(Cluster::new::<WorkloadPriority>(objects, &settings));
    testing::with_host(cluster, || {
        testing::evaluate::<WorkloadPriority>(request, &settings).unwrap()
    })
}

fn job(namespace: &str, class: Option<&str>, gpus: u32) -> Value {
    let mut spec = json!({"restartPolicy": "Never", "containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
        "resources": {"limits": {"nvidia.com/gpu": gpus}}}]});
    if let Some(class) = class {
        spec["priorityClassName"] = json!(class);
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": namespace},
        "spec": {"template": {"spec": spec}}})
}

fn deployment(class: Option<&str>) -> Value {
    let mut object = job("serve", class, 1);
    object["apiVersion"] = json!("apps/v1");
    object["kind"] = json!("Deployment");
    object["metadata"]["name"] = json!("vllm");
    object
}

fn message(verdict: Verdict) -> String {
    assert!(!verdict.allowed, "{verdict:?}");
    verdict.message.unwrap()
}

#[test]
fn namespaces_name_only_their_classes_by_name_or_value() {
    let settings = json!({"classes": [
        {"namespaceSelector": {"matchLabels": {"tier": "research"}}, "allowed": ["gpu-batch"], "maxValue": 10000},
        {"namespaces": ["serve"], "allowed": ["gpu-serving"]}]});
    let review = |object: Value| testing::review(object);
    assert!(
        verdict(
            cluster(),
            &review(job("ml", Some("gpu-batch"), 1)),
            &settings
        )
        .allowed
    );
    assert!(
        verdict(
            cluster(),
            &review(job("ml", Some("gpu-serving"), 1)),
            &settings
        )
        .allowed,
        "by value"
    );
    assert_eq!(
        message(verdict(
            cluster(),
            &review(job("ml", Some("urgent"), 1)),
            &settings
        )),
        "Job \"train\": spec.template: priority class \"urgent\" has value 1000000, above the 10000 allowed in namespace \"ml\": name one of gpu-batch, or a class of value at most 10000"
    );
    assert!(
        message(verdict(
            cluster(),
            &review(job("ml", Some("missing"), 1)),
            &settings
        ))
        .contains("priority class \"missing\" does not exist: name one of gpu-batch")
    );
    assert_eq!(
        message(verdict(
            cluster(),
            &review(deployment(Some("gpu-batch"))),
            &settings
        )),
        "Deployment \"vllm\": spec.template: priority class \"gpu-batch\" is not allowed in namespace \"serve\": name one of gpu-serving"
    );
    // No rule for a namespace: any class but the system ones.
    let mut objects = cluster();
    objects.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}));
    let other = job("other", Some("urgent"), 1);
    assert!(verdict(objects, &review(other), &settings).allowed);
}

#[test]
fn system_classes_only_in_exempt_namespaces() {
    let settings = json!({});
    let critical =
        |namespace: &str| testing::review(job(namespace, Some("system-node-critical"), 0));
    assert!(
        message(verdict(cluster(), &critical("ml"), &settings))
            .contains("priority class \"system-node-critical\" is reserved for the cluster's own components (allowed only in kube-system)")
    );
    assert!(verdict(cluster(), &critical("kube-system"), &settings).allowed);
}

#[test]
fn training_uses_classes_that_never_preempt() {
    let settings = json!({"trainingMustNotPreempt": true});
    assert!(
        verdict(
            cluster(),
            &testing::review(job("ml", Some("gpu-batch"), 8)),
            &settings
        )
        .allowed
    );
    assert_eq!(
        message(verdict(
            cluster(),
            &testing::review(job("ml", Some("urgent"), 8)),
            &settings
        )),
        "Job \"train\": spec.template: a training workload with priority class \"urgent\" may preempt other pods (preemptionPolicy PreemptLowerPriority): name one with preemptionPolicy: Never (gpu-batch)"
    );
    // No class: the cluster's global default is what it gets.
    assert!(verdict(cluster(), &testing::review(job("ml", None, 8)), &settings).allowed);
    let message = message(verdict(
        with_global_default(cluster()),
        &testing::review(job("ml", None, 8)),
        &settings,
    ));
    assert!(message.contains("a training workload with no priority class, so it gets the cluster's default \"default-low\", which may preempt"), "{message}");
    // Serving may preempt; a label makes any kind training.
    assert!(
        verdict(
            cluster(),
            &testing::review(deployment(Some("urgent"))),
            &settings
        )
        .allowed
    );
    let mut labelled = deployment(Some("urgent"));
    labelled["metadata"]["labels"] = json!({"tollgate.dev/workload": "batch"});
    assert!(!verdict(cluster(), &testing::review(labelled), &settings).allowed);
    // A Job's pod is training through its owner.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train-0", "namespace": "ml",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]},
        "spec": {"priorityClassName": "urgent", "containers": [{"name": "c"}]}});
    assert!(!verdict(cluster(), &testing::review(pod), &settings).allowed);
}

#[test]
fn default_classes_fill_in_templates_and_pods_get_their_classes_priority() {
    let settings = json!({"defaultClasses": {"training": "gpu-batch", "inference": "gpu-serving"}});
    let placed = verdict(cluster(), &testing::review(job("ml", None, 1)), &settings)
        .mutated()
        .unwrap();
    assert_eq!(
        placed["spec"]["template"]["spec"]["priorityClassName"],
        "gpu-batch"
    );
    assert!(
        placed["spec"]["template"]["spec"].get("priority").is_none(),
        "templates carry no priority"
    );
    let placed = verdict(cluster(), &testing::review(deployment(None)), &settings)
        .mutated()
        .unwrap();
    assert_eq!(
        placed["spec"]["template"]["spec"]["priorityClassName"],
        "gpu-serving"
    );
    // A class the user named stays.
    let named = verdict(
        cluster(),
        &testing::review(job("ml", Some("urgent"), 1)),
        &settings,
    );
    assert!(named.allowed && named.mutated_object.is_none());

    // A Job's pod: the Priority admission plugin already gave it 0.
    let pod = |class: Option<&str>, priority: i64| {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train-0", "namespace": "ml",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]},
            "spec": {"priority": priority, "containers": [{"name": "c"}]}});
        if let Some(class) = class {
            pod["spec"]["priorityClassName"] = json!(class);
        }
        pod
    };
    let placed = verdict(cluster(), &testing::review(pod(None, 0)), &settings)
        .mutated()
        .unwrap();
    assert_eq!(placed["spec"]["priorityClassName"], "gpu-batch");
    assert_eq!(placed["spec"]["priority"], 1000);
    assert_eq!(placed["spec"]["preemptionPolicy"], "Never");
    // Another mutating policy (gpu-placement's label rule) named a class
    // after the Priority plugin ran: the priority is brought in line.
    let fixed = verdict(
        cluster(),
        &testing::review(pod(Some("gpu-serving"), 0)),
        &settings,
    )
    .mutated()
    .unwrap();
    assert_eq!(
        (
            fixed["spec"]["priority"].clone(),
            fixed["spec"]["preemptionPolicy"].clone()
        ),
        (json!(10_000), json!("PreemptLowerPriority"))
    );
    let consistent = verdict(
        cluster(),
        &testing::review(pod(Some("gpu-serving"), 10_000)),
        &settings,
    );
    assert!(consistent.allowed && consistent.mutated_object.is_none());

    // A default class the cluster lacks is refused, not written.
    let missing = json!({"defaultClasses": {"training": "gpu-spot"}});
    assert!(
        message(verdict(
            cluster(),
            &testing::review(job("ml", None, 1)),
            &missing
        ))
        .contains("the default class \"gpu-spot\" (defaultClasses) does not exist in the cluster")
    );
}

#[test]
fn defaults_on_update_only_ride_on_a_changed_template() {
    let settings = json!({"defaultClasses": {"inference": "gpu-serving"}});
    let stored = deployment(Some("gpu-serving"));
    let mut scaled = deployment(None);
    scaled["spec"]["replicas"] = json!(3);
    // The manifest without the class, re-applied: put back, so nothing rolls.
    let reapplied = verdict(
        cluster(),
        &testing::update(stored.clone(), scaled),
        &settings,
    );
    assert_eq!(
        reapplied.mutated().unwrap()["spec"]["template"]["spec"]["priorityClassName"],
        "gpu-serving"
    );
    // A Job's template never changes: no default added on UPDATE.
    let job_update = testing::update(job("ml", None, 1), job("ml", None, 1));
    assert!(
        verdict(cluster(), &job_update, &settings)
            .mutated_object
            .is_none()
    );
}

#[test]
fn high_and_default_priority_classes_only_by_admins() {
    let settings =
        json!({"priorityClasses": {"maxValue": 100_000, "allowedGroups": ["platform-admins"]}});
    let create = |object: Value, groups: &[&str]| {
        let mut request: Value = serde_json::from_str(&testing::review(object)).unwrap();
        request["namespace"] = json!("");
        request["userInfo"] = json!({"username": "alice", "groups": groups});
        request.to_string()
    };
    assert_eq!(
        message(verdict(
            vec![],
            &create(class("urgent", 1_000_000, false, true), &[]),
            &settings
        )),
        "PriorityClass \"urgent\": value 1000000 is above the ceiling 100000, and globalDefault: true makes it the class of every pod that names none; only members of platform-admins may create or change such a class (you are \"alice\"): ask a cluster admin, or choose a lower value"
    );
    assert!(
        verdict(
            vec![],
            &create(
                class("urgent", 1_000_000, false, true),
                &["platform-admins"]
            ),
            &settings
        )
        .allowed
    );
    assert!(
        verdict(
            vec![],
            &create(class("low", 10, true, false), &[]),
            &settings
        )
        .allowed
    );
    // An UPDATE that keeps what was already there passes.
    let old = class("urgent", 1_000_000, false, true);
    let mut relabelled = old.clone();
    relabelled["metadata"]["labels"] = json!({"owner": "platform"});
    let mut update: Value = serde_json::from_str(&testing::update(old, relabelled)).unwrap();
    update["namespace"] = json!("");
    assert!(verdict(vec![], &update.to_string(), &settings).allowed);
}

#[test]
fn gpu_workloads_of_queued_namespaces_name_one_of_their_local_queues() {
    let settings = json!({"queues": {"namespaceSelector": {"matchLabels": {"kueue": "on"}}}});
    let queued = |queue: Option<&str>, gpus: u32| {
        let mut object = job("ml", None, gpus);
        if let Some(queue) = queue {
            object["metadata"]["labels"] = json!({"kueue.x-k8s.io/queue-name": queue});
        }
        testing::review(object)
    };
    assert!(verdict(cluster(), &queued(Some("research"), 1), &settings).allowed);
    assert_eq!(
        message(verdict(cluster(), &queued(Some("fast"), 1), &settings)),
        "Job \"train\": label kueue.x-k8s.io/queue-name=fast names no LocalQueue of namespace \"ml\" (its LocalQueues: research, team-a)"
    );
    assert_eq!(
        message(verdict(cluster(), &queued(None, 1), &settings)),
        "Job \"train\": GPU workloads in namespace \"ml\" go through Kueue: add the label kueue.x-k8s.io/queue-name (its LocalQueues: research, team-a)"
    );
    assert!(
        verdict(cluster(), &queued(None, 0), &settings).allowed,
        "CPU jobs need no queue"
    );
    let serve = job("serve", None, 1);
    assert!(
        verdict(cluster(), &testing::review(serve), &settings).allowed,
        "serve is not queued"
    );

    // Queues optional: only unsuspended jobs without one are refused.
    let lenient = json!({"queues": {"namespaces": ["ml"], "requireQueue": false}});
    assert!(
        message(verdict(cluster(), &queued(None, 1), &lenient))
            .contains("a GPU job without a queue starts at once, outside Kueue's quota: add the label kueue.x-k8s.io/queue-name (its LocalQueues: research, team-a) or create it with suspend: true")
    );
    let mut suspended = job("ml", None, 1);
    suspended["spec"]["suspend"] = json!(true);
    assert!(verdict(cluster(), &testing::review(suspended), &lenient).allowed);
    let mut pytorch = job("ml", None, 1);
    pytorch["apiVersion"] = json!("kubeflow.org/v1");
    pytorch["kind"] = json!("PyTorchJob");
    pytorch["spec"] = json!({"runPolicy": {"suspend": true}, "pytorchReplicaSpecs": {"Worker": pytorch["spec"]["template"].clone()}});
    pytorch["spec"]["pytorchReplicaSpecs"]["Worker"] =
        json!({"template": job("ml", None, 1)["spec"]["template"]});
    assert!(verdict(cluster(), &testing::review(pytorch), &lenient).allowed);

    // A Job's pod is queued through its Job.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train-0", "namespace": "ml",
        "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train", "uid": "u", "controller": true}]},
        "spec": {"containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": 1}}}]}});
    assert!(verdict(cluster(), &testing::review(pod), &settings).allowed);
}

#[test]
fn updates_warn_about_what_was_already_there() {
    let settings = json!({"classes": [{"namespaces": ["serve"], "allowed": ["gpu-serving"]}]});
    let old = deployment(Some("urgent"));
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(4);
    let kept = verdict(cluster(), &testing::update(old.clone(), scaled), &settings);
    assert!(kept.allowed);
    assert!(kept.warnings[0].ends_with("(it was so before this update)"));
    let mut changed = old.clone();
    changed["spec"]["template"]["spec"]["priorityClassName"] = json!("gpu-batch");
    assert!(!verdict(cluster(), &testing::update(old, changed), &settings).allowed);
}

#[test]
fn bad_settings_are_refused() {
    let error = |settings: Value| {
        testing::validate_settings::<WorkloadPriority>(&settings.to_string()).unwrap_err()
    };
    assert!(
        error(json!({"classes": [{"allowed": ["a"]}]}))
            .contains("classes[0] needs exactly one of namespaces")
    );
    assert!(
        error(json!({"classes": [{"namespaces": ["a"]}]})).contains("classes[0] allows no class")
    );
    assert!(error(json!({"queues": {}})).contains("queues needs exactly one of namespaces"));
    assert!(
        error(json!({"defaultClasses": {"training": "system-cluster-critical"}}))
            .contains("is a system class")
    );
    assert!(error(json!({"defaultClass": "x"})).contains("unknown field `defaultClass`"));
    assert!(testing::validate_settings::<WorkloadPriority>("{}").is_ok());
}
