//! `gpu-quota`: GPU budgets per namespace or team (summed across the team's
//! namespaces), per GPU product and per MIG profile, and per pod; exact when
//! many pods arrive at once.
//!
//! Usage is the GPU requests of the pods in a scope that have not ended
//! (phase not `Succeeded` or `Failed`). The policy's [`Policy::index`] says
//! what each cached pod counts for (`ns/<namespace>` keys), so the host keeps
//! per-namespace totals current and an admission reads one total per
//! namespace in scope. The check itself is the host ledger's atomic
//! check-and-reserve: admissions running in parallel see each other's
//! reservations. Settings are in `docs/policies/gpu-quota.md`.

mod pod;
mod settings;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;
use tollgate_sdk::pod::model::Pod;
use tollgate_sdk::quota::{self, Claim, Entry};
use tollgate_sdk::selector::{Requirement, Test};
use tollgate_sdk::{Policy, Request, Verdict, context};

use pod::{Asks, on_product};
pub use settings::{Aggregate, Scope, Settings};

/// The policy.
pub struct GpuQuota;

impl Policy for GpuQuota {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings.check()
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        if !request.kind.is_pod()
            || request.operation != "CREATE"
            || !request.sub_resource.is_empty()
        {
            return Ok(Verdict::allow());
        }
        let Some(text) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        let pod: Pod<'_> = serde_json::from_str(text)?;
        let namespace = if request.namespace.is_empty() {
            pod.metadata.namespace()
        } else {
            request.namespace.as_str()
        };
        if settings.require_limits_equal_requests {
            let unequal = pod::unequal_requests(&pod, settings);
            if !unequal.is_empty() {
                let list: Vec<String> = unequal
                    .iter()
                    .map(|(container, resource, request, limit)| {
                        format!("container {container:?} requests {request} {resource} with limit {limit}")
                    })
                    .collect();
                return Ok(Verdict::deny(format!(
                    "GPU requests must equal limits: {}; set limits equal to requests",
                    list.join(", ")
                )));
            }
        }
        let asks = pod::asks(&pod, settings);
        if asks.is_empty() {
            return Ok(Verdict::allow());
        }
        Quota {
            settings,
            namespace,
            asks,
            products: pod::products(&pod, settings),
            labels: None,
        }
        .decide()
    }

    fn index(object: &str, settings: &Settings) -> tollgate_sdk::Result<Vec<Entry>> {
        let pod: Pod<'_> = serde_json::from_str(object)?;
        if !pod::holds_resources(&pod) {
            return Ok(Vec::new());
        }
        let key = namespace_key(pod.metadata.namespace());
        let products = pod::products(&pod, settings);
        let mut entries = Vec::new();
        for (resource, amount) in pod::asks(&pod, settings) {
            for product in &products {
                entries.push(Entry {
                    key: key.clone(),
                    resource: on_product(&resource, product),
                    amount,
                });
            }
            entries.push(Entry {
                key: key.clone(),
                resource,
                amount,
            });
        }
        Ok(entries)
    }
}

tollgate_sdk::export!(GpuQuota);

/// The index key of a namespace's pods.
fn namespace_key(namespace: &str) -> String {
    format!("ns/{namespace}")
}

/// A Namespace as the policy reads it.
#[derive(Deserialize)]
struct Namespace {
    metadata: NamespaceMeta,
}

#[derive(Deserialize)]
struct NamespaceMeta {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// One scope the pod falls in, ready to claim.
struct Checked {
    /// `team "vision"` or `namespace "ml"`.
    subject: String,
    /// The scope's configured name, when it has one.
    scope_name: Option<String>,
    aggregate: Aggregate,
    claim: Claim,
    /// Usage per index key and resource: (amount, pods).
    by_namespace: BTreeMap<String, BTreeMap<String, (u64, u32)>>,
}

/// One pod's check.
struct Quota<'a> {
    settings: &'a Settings,
    namespace: &'a str,
    asks: Asks,
    products: Vec<String>,
    /// The namespace's labels, read once when a scope needs them.
    labels: Option<BTreeMap<String, String>>,
}

impl Quota<'_> {
    fn labels(&mut self) -> tollgate_sdk::Result<&BTreeMap<String, String>> {
        if self.labels.is_none() {
            let namespace: Namespace = context::get_as("v1", "Namespace", "", self.namespace)?
                .ok_or_else(|| {
                    format!(
                        "namespace {:?} is not in the cluster context, so its quota scope cannot be known",
                        self.namespace
                    )
                })?;
            self.labels = Some(namespace.metadata.labels);
        }
        Ok(self.labels.get_or_insert_default())
    }

    fn in_scope(&mut self, scope: &Scope) -> tollgate_sdk::Result<bool> {
        if let Some(selector) = &scope.namespace_selector {
            return Ok(selector.matches_labels(self.labels()?));
        }
        Ok(scope.namespaces.iter().any(|n| n == self.namespace))
    }

    fn decide(mut self) -> tollgate_sdk::Result<Verdict> {
        let mut checked = Vec::new();
        for (i, scope) in self.settings.scopes.iter().enumerate() {
            if !self.in_scope(scope)? {
                continue;
            }
            let name = self.settings.scope_name(i);
            for (resource, max) in &scope.max_per_pod {
                let ask = self.asks.get(resource).copied().unwrap_or(0);
                if ask > *max {
                    return Ok(Verdict::deny(format!(
                        "this pod asks {ask} {resource}, more than the {max} per pod that scope {name:?} allows; split the work across pods or ask for fewer"
                    )));
                }
            }
            if let Some(scope) = self.check(i, scope)? {
                checked.push(scope);
            }
        }
        if checked.is_empty() {
            return Ok(Verdict::allow());
        }
        let claims: Vec<Claim> = checked.iter().map(|c| c.claim.clone()).collect();
        let decision = quota::reserve(&claims)?;
        if decision.admitted {
            let mut usage = String::new();
            for c in &checked {
                for (resource, ask) in &c.claim.asks {
                    let Some(limit) = c.claim.limits.get(resource) else {
                        continue;
                    };
                    let after =
                        used(&c.claim, resource) + decision.held(&c.claim.scope, resource) + ask;
                    if !usage.is_empty() {
                        usage.push_str("; ");
                    }
                    let _ = write!(
                        usage,
                        "{} {after}/{limit} {}",
                        c.subject,
                        describe(resource)
                    );
                }
            }
            return Ok(Verdict::allow().annotate("usage", usage));
        }
        let reasons: Vec<String> = checked
            .iter()
            .flat_map(|c| {
                c.claim.asks.iter().filter_map(|(resource, ask)| {
                    let limit = *c.claim.limits.get(resource)?;
                    let used = used(&c.claim, resource);
                    let held = decision.held(&c.claim.scope, resource);
                    (used + held + ask > limit)
                        .then(|| explain(c, resource, *ask, limit, used, held))
                })
            })
            .collect();
        Ok(Verdict::deny(if reasons.is_empty() {
            // The ledger saw reservations this call's figures did not (a
            // shared ledger racing another replica): say what is known.
            "GPU quota exceeded by admissions in flight; retry shortly".to_owned()
        } else {
            reasons.join("; ")
        }))
    }

    /// The claim for scope `i`, or `None` when it sets no limits on what the
    /// pod asks (or, for a team scope, the namespace has no team).
    fn check(&mut self, i: usize, scope: &Scope) -> tollgate_sdk::Result<Option<Checked>> {
        let mut asks = BTreeMap::new();
        let mut limits = BTreeMap::new();
        for (resource, ask) in &self.asks {
            if let Some(limit) = scope.limits.get(resource) {
                asks.insert(resource.clone(), *ask);
                limits.insert(resource.clone(), *limit);
            }
            for product in &self.products {
                if let Some(limit) = scope.per_product.get(product).and_then(|l| l.get(resource)) {
                    let qualified = on_product(resource, product);
                    asks.insert(qualified.clone(), *ask);
                    limits.insert(qualified, *limit);
                }
            }
        }
        if asks.is_empty() {
            return Ok(None);
        }
        let (subject, instance, members) = match scope.aggregate {
            Aggregate::Namespace => (
                format!("namespace {:?}", self.namespace),
                format!("ns={}", self.namespace),
                vec![self.namespace.to_owned()],
            ),
            Aggregate::Team => {
                let Some(team) = self.labels()?.get(&scope.team_label).cloned() else {
                    return Ok(None);
                };
                (
                    format!("team {team:?}"),
                    format!("{}={team}", scope.team_label),
                    self.team(scope, &team)?,
                )
            }
        };
        let keys: Vec<String> = members.iter().map(|n| namespace_key(n)).collect();
        let mut by_namespace: BTreeMap<String, BTreeMap<String, (u64, u32)>> = BTreeMap::new();
        let mut usage = BTreeMap::new();
        for total in quota::usage(&keys)? {
            if !asks.contains_key(&total.resource) {
                continue;
            }
            *usage.entry(total.resource.clone()).or_default() += total.amount;
            let namespace = total
                .key
                .strip_prefix("ns/")
                .unwrap_or(&total.key)
                .to_owned();
            by_namespace
                .entry(total.resource)
                .or_default()
                .insert(namespace, (total.amount, total.objects));
        }
        Ok(Some(Checked {
            subject,
            scope_name: scope.name.clone(),
            aggregate: scope.aggregate,
            claim: Claim {
                scope: format!("{}/{instance}", self.settings.scope_name(i)),
                asks,
                limits,
                usage,
            },
            by_namespace,
        }))
    }

    /// The namespaces of `team` in `scope` (always including the pod's).
    fn team(&self, scope: &Scope, team: &str) -> tollgate_sdk::Result<Vec<String>> {
        let selector = scope
            .namespace_selector
            .clone()
            .unwrap_or_default()
            .with(Requirement {
                key: scope.team_label.clone(),
                test: Test::Equals(team.to_owned()),
            })
            .to_string();
        let mut members: Vec<String> =
            context::list_as::<Namespace>("v1", "Namespace", "", &selector)?
                .into_iter()
                .map(|n| n.metadata.name)
                .filter(|n| scope.namespaces.is_empty() || scope.namespaces.contains(n))
                .collect();
        if !members.iter().any(|n| n == self.namespace) {
            members.push(self.namespace.to_owned());
        }
        Ok(members)
    }
}

fn used(claim: &Claim, resource: &str) -> u64 {
    claim.usage.get(resource).copied().unwrap_or(0)
}

/// `nvidia.com/gpu`, or `nvidia.com/gpu on NVIDIA-H100-80GB-HBM3`.
fn describe(resource: &str) -> String {
    match resource.split_once('@') {
        Some((resource, product)) => format!("{resource} on {product}"),
        None => resource.to_owned(),
    }
}

/// `team "vision" would use 18 nvidia.com/gpu, limit 16: 12 in use by 5
/// pods in namespaces vision-a, vision-b; this pod asks 6`.
fn explain(c: &Checked, resource: &str, ask: u64, limit: u64, used: u64, held: u64) -> String {
    let mut text = format!(
        "{} would use {} {}, limit {limit}: {used} in use",
        c.subject,
        used + held + ask,
        describe(resource)
    );
    let namespaces = c.by_namespace.get(resource);
    let pods: u32 = namespaces
        .into_iter()
        .flatten()
        .map(|(_, (_, pods))| pods)
        .sum();
    if pods > 0 {
        let _ = write!(text, " by {pods} pod{}", if pods == 1 { "" } else { "s" });
        if c.aggregate == Aggregate::Team {
            let names: Vec<&str> = namespaces
                .into_iter()
                .flatten()
                .filter(|(_, (amount, _))| *amount > 0)
                .map(|(n, _)| n.as_str())
                .collect();
            let _ = write!(
                text,
                " in namespace{} {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
        }
    }
    if held > 0 {
        let _ = write!(text, ", {held} reserved by admissions in flight");
    }
    let _ = write!(text, "; this pod asks {ask}");
    if let Some(name) = &c.scope_name {
        let _ = write!(text, " (quota scope {name:?})");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use serde_json::{Value, json};
    use tollgate_sdk::testing::{self, Cluster};

    use super::*;

    const H100: &str = "NVIDIA-H100-80GB-HBM3";

    const SETTINGS: &str = r#"{
        "requireLimitsEqualRequests": true,
        "classes": {"h100": "NVIDIA-H100-80GB-HBM3"},
        "scopes": [
            {"name": "teams", "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
             "aggregate": "team", "limits": {"nvidia.com/gpu": 16, "nvidia.com/mig-1g.10gb": 4},
             "perProduct": {"NVIDIA-H100-80GB-HBM3": {"nvidia.com/gpu": 8}}},
            {"name": "per-namespace", "namespaces": ["vision-a"], "limits": {"nvidia.com/gpu": 10},
             "maxPerPod": {"nvidia.com/gpu": 8}}
        ]}"#;

    fn namespace(name: &str, team: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": team}}})
    }

    fn pod(namespace: &str, name: &str, gpus: u64, phase: &str, selector: Option<&str>) -> Value {
        let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string(), "cpu": "4"}}}]},
            "status": {"phase": phase}});
        if let Some(product) = selector {
            pod["spec"]["nodeSelector"] = json!({"nvidia.com/gpu.product": product});
        }
        pod
    }

    fn cluster() -> Vec<Value> {
        vec![
            namespace("vision-a", "vision"),
            namespace("vision-b", "vision"),
            namespace("nlp", "nlp"),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sandbox"}}),
            pod("vision-a", "a1", 4, "Running", None),
            pod("vision-a", "a2", 2, "Pending", Some(H100)),
            pod("vision-b", "b1", 2, "Running", Some(H100)),
            pod("vision-b", "b2", 2, "Running", None),
            pod("vision-b", "b3", 2, "Running", None),
            pod("vision-b", "done", 8, "Succeeded", None),
            pod("nlp", "n1", 12, "Running", None),
        ]
    }

    fn admit(cluster: &Rc<Cluster>, object: Value) -> Verdict {
        testing::with_host(cluster.clone(), || {
            testing::evaluate::<GpuQuota>(&testing::review(object), SETTINGS).unwrap()
        })
    }

    #[test]
    fn a_team_over_its_limit_is_told_where_its_gpus_are() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS));
        let verdict = admit(&cluster, pod("vision-b", "big", 6, "Pending", None));
        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "team \"vision\" would use 18 nvidia.com/gpu, limit 16: 12 in use by 5 pods in namespaces vision-a, vision-b; this pod asks 6 (quota scope \"teams\")"
            )
        );
        assert!(cluster.reserved().is_empty(), "a denial reserves nothing");
    }

    #[test]
    fn a_pod_that_fits_is_reserved_and_annotated_with_the_usage_after_it() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS));
        let verdict = admit(&cluster, pod("vision-b", "ok", 4, "Pending", None));
        assert!(verdict.allowed, "{:?}", verdict.message);
        assert_eq!(
            verdict.audit_annotations,
            vec![(
                "usage".into(),
                "team \"vision\" 16/16 nvidia.com/gpu".into()
            )]
        );
        assert_eq!(
            cluster.reserved(),
            vec![("teams/team=vision".into(), "nvidia.com/gpu".into(), 4)]
        );
        // The next one sees the reservation.
        let verdict = admit(&cluster, pod("vision-a", "late", 1, "Pending", None));
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "team \"vision\" would use 17 nvidia.com/gpu, limit 16: 12 in use by 5 pods in namespaces vision-a, vision-b, 4 reserved by admissions in flight; this pod asks 1 (quota scope \"teams\")"
            )
        );
    }

    #[test]
    fn per_product_limits_count_pods_by_node_selector_affinity_or_class() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS));
        // 4 on H100 already (a2, b1); 5 more would pass 8 (and the team's 16).
        let by_selector = admit(&cluster, pod("vision-b", "h", 5, "Pending", Some(H100)));
        assert_eq!(
            by_selector.message.as_deref(),
            Some(
                "team \"vision\" would use 17 nvidia.com/gpu, limit 16: 12 in use by 5 pods in namespaces vision-a, vision-b; this pod asks 5 (quota scope \"teams\"); \
                 team \"vision\" would use 9 nvidia.com/gpu on NVIDIA-H100-80GB-HBM3, limit 8: 4 in use by 2 pods in namespaces vision-a, vision-b; this pod asks 5 (quota scope \"teams\")"
            )
        );
        let on_h100 = |verdict: Verdict| {
            verdict
                .message
                .is_some_and(|m| m.contains("9 nvidia.com/gpu on NVIDIA-H100"))
        };
        let mut by_affinity = pod("vision-b", "h", 5, "Pending", None);
        by_affinity["spec"]["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": [H100]}]}]}}});
        assert!(on_h100(admit(&cluster, by_affinity)));
        let mut by_class = pod("vision-b", "h", 5, "Pending", None);
        by_class["metadata"]["annotations"] = json!({"gpu.tollgate.dev/class": "h100"});
        assert!(on_h100(admit(&cluster, by_class)));
        // Without a product the pod counts against the team limit only.
        assert!(admit(&cluster, pod("vision-b", "any", 4, "Pending", None)).allowed);
    }

    #[test]
    fn mig_profiles_have_their_own_limits() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS));
        let mig = |name: &str, slices: u64| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "nlp"},
                "spec": {"containers": [{"name": "infer", "resources": {"limits": {"nvidia.com/mig-1g.10gb": slices.to_string()}}}]}})
        };
        assert!(admit(&cluster, mig("m1", 3)).allowed);
        let verdict = admit(&cluster, mig("m2", 2));
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "team \"nlp\" would use 5 nvidia.com/mig-1g.10gb, limit 4: 0 in use, 3 reserved by admissions in flight; this pod asks 2 (quota scope \"teams\")"
            )
        );
    }

    #[test]
    fn namespace_scopes_max_per_pod_and_unequal_requests() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS));
        let verdict = admit(&cluster, pod("vision-a", "huge", 9, "Pending", None));
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "this pod asks 9 nvidia.com/gpu, more than the 8 per pod that scope \"per-namespace\" allows; split the work across pods or ask for fewer"
            )
        );
        let mut unequal = pod("vision-a", "u", 1, "Pending", None);
        unequal["spec"]["containers"][0]["resources"]["requests"] = json!({"nvidia.com/gpu": "1"});
        unequal["spec"]["containers"][0]["resources"]["limits"] = json!({"nvidia.com/gpu": "2"});
        assert_eq!(
            admit(&cluster, unequal).message.as_deref(),
            Some(
                "GPU requests must equal limits: container \"train\" requests 1 nvidia.com/gpu with limit 2; set limits equal to requests"
            )
        );
        // Namespaces outside every scope, and pods without GPUs, pass.
        assert!(admit(&cluster, pod("sandbox", "s", 64, "Pending", None)).allowed);
        assert!(admit(&cluster, pod("vision-a", "cpu", 0, "Pending", None)).allowed);
    }

    #[test]
    fn dry_runs_are_checked_and_reserve_nothing() {
        let cluster = Rc::new(Cluster::new::<GpuQuota>(cluster(), SETTINGS).dry_run());
        assert!(admit(&cluster, pod("vision-b", "ok", 4, "Pending", None)).allowed);
        assert!(cluster.reserved().is_empty());
        assert!(!admit(&cluster, pod("vision-b", "big", 5, "Pending", None)).allowed);
    }

    #[test]
    fn the_index_counts_running_pods_with_sidecars_and_init_peaks() {
        let settings: Settings = tollgate_sdk::parse_settings(SETTINGS).unwrap();
        let entries = |pod: Value| GpuQuota::index(&pod.to_string(), &settings).unwrap();
        assert!(entries(pod("nlp", "done", 8, "Failed", None)).is_empty());
        let with_product = entries(pod("nlp", "p", 2, "Running", Some(H100)));
        assert_eq!(
            with_product,
            vec![
                Entry {
                    key: "ns/nlp".into(),
                    resource: format!("nvidia.com/gpu@{H100}"),
                    amount: 2
                },
                Entry {
                    key: "ns/nlp".into(),
                    resource: "nvidia.com/gpu".into(),
                    amount: 2
                },
            ]
        );
        let init = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "i", "namespace": "nlp"},
            "spec": {
                "initContainers": [
                    {"name": "warmup", "resources": {"limits": {"nvidia.com/gpu": "3"}}},
                    {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}}}
                ],
                "containers": [{"name": "main", "resources": {"limits": {"nvidia.com/gpu": "1", "memory": "1Gi"}}}]}});
        // max(3, 1 + 1) = 3; memory is not counted.
        assert_eq!(entries(init)[0].amount, 3);
    }

    #[test]
    fn settings_errors_name_the_scope_and_field() {
        let error = |settings: &str| testing::validate_settings::<GpuQuota>(settings).unwrap_err();
        assert_eq!(
            error(r#"{"scopes": [{"name": "a", "limits": {"nvidia.com/gpu": 1}}]}"#),
            "scope \"a\": namespaces: select namespaces with namespaces (names) or namespaceSelector (labels)"
        );
        assert!(
            error(r#"{"scopes": [{"namespaces": ["x"], "limits": {"cpu": 1}}]}"#)
                .contains("\"cpu\" is not counted")
        );
        assert!(error(r#"{"scopes": [{"namespaces": ["x"], "aggregate": "cluster", "limits": {"nvidia.com/gpu": 1}}]}"#).contains("unknown variant `cluster`"));
        assert!(
            error(r#"{"scopes": [{"namespaces": ["x"], "limits": {"nvidia.com/gpu": -1}}]}"#)
                .contains("invalid value")
        );
        assert!(error("{}").contains("checks nothing"));
    }

    #[test]
    fn without_cluster_context_the_policy_cannot_decide() {
        let error = testing::evaluate::<GpuQuota>(
            &testing::review(pod("vision-a", "p", 1, "Pending", None)),
            SETTINGS,
        )
        .unwrap_err();
        assert!(error.0.contains("no cluster context"), "{error}");
    }
}
