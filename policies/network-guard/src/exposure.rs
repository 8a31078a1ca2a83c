//! Service exposure: load balancers and node ports only where allowed,
//! `externalIPs` refused (CVE-2020-8554), GPU pods exposed only on their
//! allowed ports.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_sdk::pod::model::Resources;
use tollgate_sdk::pod::{PodTemplate, TemplatePaths, group_of};
use tollgate_sdk::selector::{Requirement, Selector, Test};
use tollgate_sdk::{Result, context};

use crate::model::Service;
use crate::settings::{PortNumber, PortRange, Settings};

/// Every problem of `service` in `namespace`, each naming its field and
/// what to write instead.
pub fn problems(service: &Service, namespace: &str, settings: &Settings) -> Result<Vec<String>> {
    let exposure = &settings.exposure;
    let mut problems = Vec::new();
    let allowed_in = |namespaces: &[String]| namespaces.iter().any(|n| n == namespace);
    let where_allowed = |namespaces: &[String]| {
        if namespaces.is_empty() {
            "in no namespace".to_owned()
        } else {
            format!("only in {}", namespaces.join(", "))
        }
    };
    match service.spec.kind.as_deref() {
        Some("LoadBalancer") if !allowed_in(&exposure.load_balancer_namespaces) => {
            problems.push(format!(
                "spec.type LoadBalancer exposes it outside the cluster, which is allowed {}: use type: ClusterIP behind the cluster's ingress or gateway",
                where_allowed(&exposure.load_balancer_namespaces)
            ));
        }
        Some("NodePort") if !allowed_in(&exposure.node_port_namespaces) => {
            problems.push(format!(
                "spec.type NodePort opens its ports on every node, which is allowed {}: use type: ClusterIP behind the cluster's ingress or gateway",
                where_allowed(&exposure.node_port_namespaces)
            ));
        }
        _ => {}
    }
    if !service.spec.external_ips.is_empty() && !allowed_in(&exposure.external_ip_namespaces) {
        problems.push(format!(
            "spec.externalIPs ({}) lets a Service intercept traffic to any address (CVE-2020-8554), which is allowed {}: remove spec.externalIPs",
            service.spec.external_ips.join(", "),
            where_allowed(&exposure.external_ip_namespaces)
        ));
    }
    if let Some(allowed) = &exposure.gpu_service_ports {
        let outside: Vec<(usize, PortRange)> = service
            .spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let range = PortRange {
                    protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    port: PortNumber::Number(port.port),
                    end_port: None,
                };
                (i, range)
            })
            .filter(|(_, range)| !allowed.iter().any(|a| a.covers(range)))
            .collect();
        if !outside.is_empty() && selects_gpu_pods(&service.spec.selector, namespace, settings)? {
            let ports: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            for (i, range) in outside {
                problems.push(format!(
                    "spec.ports[{i}] ({range}) exposes GPU pods on a port not allowed for them: serve them on {}",
                    if ports.is_empty() {
                        "no port (exposure.gpuServicePorts is empty)".to_owned()
                    } else {
                        ports.join(", ")
                    }
                ));
            }
        }
    }
    Ok(problems)
}

/// The metadata of a pod or pod template the selector is matched on.
#[derive(Default, Deserialize)]
struct Meta {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The containers of a pod spec, as far as their resources.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec<'a> {
    #[serde(default, borrow)]
    init_containers: Vec<Container<'a>>,
    #[serde(default, borrow)]
    containers: Vec<Container<'a>>,
}

#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    resources: Resources<'a>,
}

impl Spec<'_> {
    /// Whether a container asks for a non-zero amount of a GPU resource.
    fn asks_gpus(&self, prefixes: &[String]) -> bool {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .any(|c| c.resources.asks_any(prefixes))
    }
}

/// Whether `selector` (a Service's) selects a pod, or the pod template of
/// a workload, in `namespace` that asks for GPUs.
fn selects_gpu_pods(
    selector: &BTreeMap<String, String>,
    namespace: &str,
    settings: &Settings,
) -> Result<bool> {
    if selector.is_empty() {
        return Ok(false);
    }
    let selector = Selector::new(
        selector
            .iter()
            .map(|(key, value)| Requirement {
                key: key.clone(),
                test: Test::Equals(value.clone()),
            })
            .collect(),
    );
    let paths = TemplatePaths::with(&settings.template_paths);
    for workload in &settings.exposure.gpu_workloads {
        let group = group_of(&workload.api_version);
        // Pods carry the labels the selector reads: let the host filter.
        let filter = if group.is_empty() && workload.kind == "Pod" {
            selector.to_string()
        } else {
            String::new()
        };
        let objects: Vec<Box<RawValue>> =
            context::list_as(&workload.api_version, &workload.kind, namespace, &filter)?;
        for object in &objects {
            let templates: Vec<(String, PodTemplate<Meta, Spec>)> =
                paths.pod_templates_in(group, &workload.kind, object.get())?;
            if templates.iter().any(|(_, t)| {
                selector.matches_labels(&t.metadata.labels)
                    && t.spec.asks_gpus(&settings.gpu_resource_prefixes)
            }) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
