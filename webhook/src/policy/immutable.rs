//! The fields the apiserver refuses to change on UPDATE, per kind: a
//! mutation that touches one would make the whole UPDATE fail, so the chain
//! drops it (with a warning) instead of breaking a running workload.

use json_patch::Patch;

/// Whether `pointer` (a JSON Pointer in an object of `group`/`kind`) may
/// not change on UPDATE.
pub fn immutable(group: &str, kind: &str, pointer: &str) -> bool {
    let under = |prefix: &str| {
        pointer == prefix
            || pointer
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    match (group, kind) {
        // A Pod's spec is fixed at creation, but for what Kubernetes lets
        // change: images, the active deadline, added tolerations, removed
        // scheduling gates, the grace period.
        ("", "Pod") => under("/spec") && !pod_spec_may_change(pointer),
        ("batch", "Job") => under("/spec/template") || under("/spec/selector"),
        ("apps", "StatefulSet") => {
            under("/spec/selector")
                || under("/spec/volumeClaimTemplates")
                || under("/spec/serviceName")
                || under("/spec/podManagementPolicy")
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("", "ReplicationController") => {
            under("/spec/selector")
        }
        _ => false,
    }
}

/// The parts of a Pod's spec an UPDATE may change.
fn pod_spec_may_change(pointer: &str) -> bool {
    let segments: Vec<&str> = pointer.split('/').skip(2).collect();
    matches!(
        segments.as_slice(),
        ["containers" | "initContainers", _, "image"]
            | ["activeDeadlineSeconds"]
            | ["terminationGracePeriodSeconds"]
            | ["tolerations", ..]
            | ["schedulingGates", ..]
    )
}

/// The first path of `patch` that an UPDATE of `group`/`kind` may not
/// change, if any.
pub fn first_violation<'p>(group: &str, kind: &str, patch: &'p Patch) -> Option<&'p str> {
    patch
        .0
        .iter()
        .map(|operation| operation.path().as_str())
        .find(|path| immutable(group, kind, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_keeps_what_the_apiserver_keeps() {
        for (group, kind, pointer, fixed) in [
            ("", "Pod", "/spec/affinity", true),
            ("", "Pod", "/spec/volumes/0", true),
            ("", "Pod", "/spec/containers/0/resources", true),
            ("", "Pod", "/spec/containers/0/image", false),
            ("", "Pod", "/spec/tolerations/-", false),
            ("", "Pod", "/metadata/labels/a", false),
            ("batch", "Job", "/spec/template/spec/tolerations", true),
            ("batch", "Job", "/spec/parallelism", false),
            (
                "batch",
                "CronJob",
                "/spec/jobTemplate/spec/template/spec",
                false,
            ),
            ("apps", "Deployment", "/spec/template/spec/affinity", false),
            ("apps", "Deployment", "/spec/selector/matchLabels/app", true),
            ("apps", "StatefulSet", "/spec/volumeClaimTemplates/0", true),
            ("apps", "StatefulSet", "/spec/serviceNameX", false),
            (
                "kubeflow.org",
                "PyTorchJob",
                "/spec/pytorchReplicaSpecs",
                false,
            ),
        ] {
            assert_eq!(immutable(group, kind, pointer), fixed, "{kind} {pointer}");
        }
    }
}
