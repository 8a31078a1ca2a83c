use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_sdk::testing::{self, Cluster};

use super::*;

/// The Kubernetes documentation's examples and their expected verdicts.
#[derive(Deserialize)]
struct Fixtures {
    settings: Value,
    namespaces: Vec<Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    namespace: String,
    allowed: bool,
    #[serde(default)]
    contains: Option<String>,
    why: String,
    object: Value,
}

fn fixtures() -> Fixtures {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/kubernetes-docs.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn tenant() -> Value {
    namespace("team-a", json!({"tollgate.dev/tenant": "true"}))
}

fn deny_all(name: &str, types: &[&str]) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"podSelector": {}, "policyTypes": types}})
}

const TENANTS: &str = r#"{"tenantNamespaces": {"matchLabels": {"tollgate.dev/tenant": "true"}}}"#;

/// Evaluates `request` with `objects` as the cluster context.
fn verdict(objects: Vec<Value>, request: &str, settings: &str) -> Verdict {
    let cluster = Rc::new(Cluster::new::<NetworkGuard>(objects, settings));
    testing::with_host(cluster, || {
        testing::evaluate::<NetworkGuard>(request, settings).unwrap()
    })
}

fn in_namespace(mut object: Value, namespace: &str) -> Value {
    object["metadata"]["namespace"] = json!(namespace);
    object
}

fn delete(old: Value) -> String {
    let mut request: Value =
        serde_json::from_str(&testing::request("DELETE", old.clone())).unwrap();
    request["object"] = Value::Null;
    request["oldObject"] = old;
    request.to_string()
}

#[test]
fn the_documentations_examples_get_the_expected_verdicts() {
    let fixtures = fixtures();
    let settings = fixtures.settings.to_string();
    assert!(fixtures.cases.len() >= 12);
    for case in fixtures.cases {
        let object = in_namespace(case.object, &case.namespace);
        let got = verdict(
            fixtures.namespaces.clone(),
            &testing::review(object),
            &settings,
        );
        let message = got.message.clone().unwrap_or_default();
        assert_eq!(
            got.allowed, case.allowed,
            "{}: expected because {}; got {message:?}",
            case.name, case.why
        );
        if let Some(expected) = &case.contains {
            assert!(message.contains(expected), "{}: {message}", case.name);
        }
    }
}

#[test]
fn a_denial_names_the_object_each_rule_and_what_to_write_instead() {
    let policy = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": "web"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "::/0"}}]}],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}});
    let message = verdict(vec![], &testing::review(policy), "{}")
        .message
        .unwrap();
    assert_eq!(
        message,
        "NetworkPolicy \"open\": spec.ingress[0].from[0].ipBlock.cidr ::/0 admits every address: name the networks traffic comes from, with a prefix of /32 or longer; \
         spec.egress[0].to[0].ipBlock 0.0.0.0/0 contains the cloud metadata service (169.254.169.254/32), which hands out the node's credentials: add except: [169.254.169.254/32]"
    );
}

#[test]
fn wide_blocks_follow_the_configured_minimum_and_allowed_ports_cover_ranges() {
    let policy = |cidr: &str, ports: Value| {
        testing::review(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "web"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}], "ports": ports}]}}),
        )
    };
    let strict = r#"{"minPrefixLength": {"ipv4": 16}}"#;
    assert!(verdict(vec![], &policy("10.0.0.0/8", json!([])), "{}").allowed);
    let refused = verdict(vec![], &policy("10.0.0.0/8", json!([])), strict);
    assert!(refused.message.unwrap().contains("a large part of the internet: name the networks traffic comes from, with a prefix of /16 or longer"));
    let ranges = r#"{"minPrefixLength": {"ipv4": 16}, "ingress": {"allowedPorts": [{"port": 8000, "endPort": 8100}]}}"#;
    let inside = json!([{"port": 8080}, {"port": 8000, "endPort": 8010}]);
    assert!(verdict(vec![], &policy("10.0.0.0/8", inside), ranges).allowed);
    let beyond = json!([{"port": 8090, "endPort": 8200}]);
    assert!(!verdict(vec![], &policy("10.0.0.0/8", beyond), ranges).allowed);
    let udp = json!([{"port": 8080, "protocol": "UDP"}]);
    assert!(!verdict(vec![], &policy("10.0.0.0/8", udp), ranges).allowed);
    let malformed = verdict(vec![], &policy("10.0.0/8", json!([])), "{}");
    assert!(
        malformed
            .message
            .unwrap()
            .contains("spec.ingress[0].from[0].ipBlock.cidr: \"10.0.0/8\" is not a CIDR block")
    );
}

#[test]
fn tenant_egress_must_stay_inside_the_allowed_networks() {
    let settings = r#"{"tenantNamespaces": {"matchLabels": {"tollgate.dev/tenant": "true"}},
        "egress": {"allowedCidrs": ["10.0.0.0/8"]}}"#;
    let egress = |cidr: &str| {
        testing::review(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "out", "namespace": "team-a"},
            "spec": {"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": cidr}}]}]}}),
        )
    };
    assert!(verdict(vec![tenant()], &egress("10.20.0.0/16"), settings).allowed);
    let outside = verdict(vec![tenant()], &egress("192.168.0.0/24"), settings);
    assert!(outside.message.unwrap().contains(
        "spec.egress[0].to[0].ipBlock.cidr 192.168.0.0/24 is outside the networks tenant pods may reach: write an ipBlock inside 10.0.0.0/8, or open only 53/UDP, 53/TCP"
    ));
    // The same policy outside a tenant namespace is no one's business.
    let web = in_namespace(
        serde_json::from_str::<Value>(&egress("192.168.0.0/24")).unwrap()["object"].clone(),
        "web",
    );
    let objects = vec![tenant(), namespace("web", json!({}))];
    assert!(verdict(objects, &testing::review(web), settings).allowed);
}

#[test]
fn tenant_workloads_need_a_default_deny_policy_and_are_told_which_to_apply() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "team-a"},
        "spec": {"containers": [{"name": "c", "image": "i"}]}});
    let denied = verdict(vec![tenant()], &testing::review(pod.clone()), TENANTS);
    assert_eq!(
        denied.message.unwrap(),
        "namespace \"team-a\" is a tenant namespace without a default-deny ingress NetworkPolicy, so this Pod's pods would accept traffic from every pod of the cluster: \
         apply one first (kubectl apply -f - with {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: default-deny-ingress, namespace: team-a}, spec: {podSelector: {}, policyTypes: [Ingress]}})"
    );
    let isolated = vec![tenant(), deny_all("deny", &["Ingress"])];
    assert!(verdict(isolated.clone(), &testing::review(pod.clone()), TENANTS).allowed);

    let both = r#"{"tenantNamespaces": {"matchLabels": {"tollgate.dev/tenant": "true"}}, "requireDefaultDenyEgress": true}"#;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train", "namespace": "team-a"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let message = verdict(isolated, &testing::review(job.clone()), both)
        .message
        .unwrap();
    assert!(message.contains("without a default-deny egress NetworkPolicy, so this Job's pods would reach every destination"), "{message}");
    assert!(message.contains("metadata: {name: default-deny-egress, namespace: team-a}"));
    let message = verdict(vec![tenant()], &testing::review(job.clone()), both)
        .message
        .unwrap();
    assert!(message.contains("default-deny ingress and egress NetworkPolicy"));
    assert!(message.contains("name: default-deny, namespace: team-a}, spec: {podSelector: {}, policyTypes: [Ingress, Egress]}"));
    let sealed = vec![tenant(), deny_all("all", &["Ingress", "Egress"])];
    assert!(verdict(sealed, &testing::review(job), both).allowed);

    // Outside tenant namespaces, and on UPDATE, nothing is asked.
    let web = in_namespace(pod.clone(), "web");
    assert!(
        verdict(
            vec![namespace("web", json!({}))],
            &testing::review(web),
            TENANTS
        )
        .allowed
    );
    assert!(
        verdict(
            vec![tenant()],
            &testing::update(pod.clone(), pod.clone()),
            TENANTS
        )
        .allowed
    );
    // A namespace the context does not hold is an error, not a guess.
    let error = {
        let cluster = Rc::new(Cluster::new::<NetworkGuard>(vec![], TENANTS));
        testing::with_host(cluster, || {
            testing::evaluate::<NetworkGuard>(&testing::review(pod), TENANTS).unwrap_err()
        })
    };
    assert!(
        error
            .0
            .contains("namespace \"team-a\" is not in the cluster context")
    );
}

#[test]
fn the_last_default_deny_policy_of_a_tenant_is_neither_deleted_nor_weakened() {
    let deny = deny_all("deny", &["Ingress"]);
    let message = verdict(vec![tenant(), deny.clone()], &delete(deny.clone()), TENANTS)
        .message
        .unwrap();
    assert!(message.starts_with("NetworkPolicy \"deny\" is the last default-deny ingress policy of tenant namespace \"team-a\", and deleting it would open every pod of the namespace"), "{message}");
    let mut opened = deny.clone();
    opened["spec"]["ingress"] = json!([{"from": [{"podSelector": {}}]}]);
    let message = verdict(
        vec![tenant(), deny.clone()],
        &testing::update(deny.clone(), opened),
        TENANTS,
    )
    .message
    .unwrap();
    assert!(message.contains("changing it so that it no longer denies all of it"));

    // Another default-deny policy remains: fine.
    let spare = deny_all("spare", &["Ingress", "Egress"]);
    assert!(
        verdict(
            vec![tenant(), deny.clone(), spare],
            &delete(deny.clone()),
            TENANTS
        )
        .allowed
    );
    // The namespace is going away, or its controller is cleaning up: fine.
    let mut terminating = tenant();
    terminating["status"] = json!({"phase": "Terminating"});
    assert!(
        verdict(
            vec![terminating, deny.clone()],
            &delete(deny.clone()),
            TENANTS
        )
        .allowed
    );
    let mut by_controller: Value = serde_json::from_str(&delete(deny.clone())).unwrap();
    by_controller["userInfo"]["username"] = json!(NAMESPACE_CONTROLLER);
    assert!(
        verdict(
            vec![tenant(), deny.clone()],
            &by_controller.to_string(),
            TENANTS
        )
        .allowed
    );
    // Egress default-deny only counts where it is required.
    let egress_only = deny_all("egress", &["Egress"]);
    assert!(
        verdict(
            vec![tenant(), egress_only.clone()],
            &delete(egress_only),
            TENANTS
        )
        .allowed
    );
}

#[test]
fn services_are_exposed_only_where_allowed() {
    let settings = r#"{"exposure": {"loadBalancerNamespaces": ["gateway"], "nodePortNamespaces": ["gateway"]}}"#;
    let service = |namespace: &str, spec: Value| {
        testing::review(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": namespace}, "spec": spec}))
    };
    let lb = json!({"type": "LoadBalancer", "ports": [{"port": 80}]});
    assert!(verdict(vec![], &service("gateway", lb.clone()), settings).allowed);
    assert_eq!(
        verdict(vec![], &service("web", lb), settings)
            .message
            .unwrap(),
        "Service \"s\": spec.type LoadBalancer exposes it outside the cluster, which is allowed only in gateway: use type: ClusterIP behind the cluster's ingress or gateway"
    );
    let node_port = json!({"type": "NodePort", "ports": [{"port": 80}]});
    assert!(!verdict(vec![], &service("web", node_port), settings).allowed);
    let external = json!({"externalIPs": ["203.0.113.7"], "ports": [{"port": 80}]});
    let message = verdict(vec![], &service("gateway", external), settings)
        .message
        .unwrap();
    assert!(message.contains("spec.externalIPs (203.0.113.7) lets a Service intercept traffic to any address (CVE-2020-8554), which is allowed in no namespace"));
    assert!(
        verdict(
            vec![],
            &service("web", json!({"ports": [{"port": 80}]})),
            settings
        )
        .allowed
    );
}

#[test]
fn services_of_gpu_pods_only_on_their_allowed_ports() {
    let settings = r#"{"exposure": {"gpuServicePorts": [443, 8000]}}"#;
    let deployment = |gpus: u32| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "vllm", "namespace": "serve"},
            "spec": {"template": {"metadata": {"labels": {"app": "vllm"}}, "spec": {"containers": [
                {"name": "server", "image": "vllm/vllm-openai:v0.6", "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}}})
    };
    let service = |ports: Value| {
        testing::review(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "llm", "namespace": "serve"},
            "spec": {"selector": {"app": "vllm"}, "ports": ports}}))
    };
    let debug_port = json!([{"port": 8000}, {"port": 5678}]);
    let message = verdict(vec![deployment(1)], &service(debug_port.clone()), settings)
        .message
        .unwrap();
    assert_eq!(
        message,
        "Service \"llm\": spec.ports[1] (5678/TCP) exposes GPU pods on a port not allowed for them: serve them on 443/TCP, 8000/TCP"
    );
    assert!(
        verdict(
            vec![deployment(1)],
            &service(json!([{"port": 8000}])),
            settings
        )
        .allowed
    );
    assert!(verdict(vec![deployment(0)], &service(debug_port.clone()), settings).allowed);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "serve", "labels": {"app": "vllm"}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"nvidia.com/mig-1g.10gb": 1}}}]}});
    assert!(!verdict(vec![pod.clone()], &service(debug_port.clone()), settings).allowed);
    let mut elsewhere = pod;
    elsewhere["metadata"]["labels"]["app"] = json!("other");
    assert!(verdict(vec![elsewhere], &service(debug_port), settings).allowed);
}

#[test]
fn updates_refuse_new_problems_and_only_warn_about_old_ones() {
    let open = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "legacy", "namespace": "web"},
        "spec": {"podSelector": {}, "ingress": [{}]}});
    let mut relabelled = open.clone();
    relabelled["metadata"]["labels"] = json!({"owner": "web"});
    let kept = verdict(vec![], &testing::update(open.clone(), relabelled), "{}");
    assert!(kept.allowed);
    assert_eq!(kept.warnings.len(), 1);
    assert!(
        kept.warnings[0].contains("spec.ingress[0] has no from")
            && kept.warnings[0].ends_with("(it was so before this update)")
    );
    let mut worse = open.clone();
    worse["spec"]["ingress"] = json!([{}, {"from": [{"namespaceSelector": {}}]}]);
    let refused = verdict(vec![], &testing::update(open, worse), "{}");
    assert!(!refused.allowed);
    assert!(
        refused
            .message
            .unwrap()
            .contains("spec.ingress[1].from[0].namespaceSelector is {}")
    );
}

#[test]
fn exempt_namespaces_cluster_admin_policies_and_other_kinds_pass() {
    let open = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "o", "namespace": "kube-system"}, "spec": {"podSelector": {}, "ingress": [{}]}});
    assert!(
        verdict(
            vec![],
            &testing::review(open),
            r#"{"exemptNamespaces": ["kube-system"]}"#
        )
        .allowed
    );
    let mut admin: Value = serde_json::from_str(&testing::review(json!({
        "apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
        "metadata": {"name": "cluster-wide"}, "spec": {"priority": 10, "subject": {"namespaces": {}},
        "ingress": [{"action": "Allow", "from": [{"namespaces": {}}]}]}}))).unwrap();
    admin["namespace"] = json!("");
    assert!(verdict(vec![], &admin.to_string(), TENANTS).allowed);
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "team-a"}});
    assert!(verdict(vec![], &testing::review(config_map), TENANTS).allowed);
}

#[test]
fn bad_settings_are_refused() {
    let error = |settings: &str| testing::validate_settings::<NetworkGuard>(settings).unwrap_err();
    assert!(error(r#"{"tenants": {}}"#).contains("unknown field `tenants`"));
    assert!(error(r#"{"minPrefixLength": {"ipv4": 40}}"#).contains("ipv4 must be 0 to 32"));
    assert!(
        error(r#"{"metadataAddresses": ["metadata"]}"#)
            .contains("\"metadata\" is not a CIDR block")
    );
    assert!(
        error(r#"{"ingress": {"allowedPorts": ["https"]}}"#)
            .contains("a port is a number (443) or {port: 53")
    );
    assert!(
        error(r#"{"ingress": {"allowedPorts": [{"port": 53, "protocol": "ICMP"}]}}"#)
            .contains("protocol \"ICMP\" must be TCP, UDP or SCTP")
    );
    assert!(
        error(r#"{"egress": {"allowedPorts": [{"port": 90, "endPort": 80}]}}"#)
            .contains("endPort 80 is below port 90")
    );
    assert!(error(r#"{"requireDefaultDenyEgress": true}"#).contains("tenantNamespaces is not set"));
    assert!(
        error(r#"{"exposure": {"gpuServicePorts": [443], "gpuWorkloads": []}}"#)
            .contains("exposure.gpuWorkloads is empty")
    );
    assert!(testing::validate_settings::<NetworkGuard>("{}").is_ok());
}
