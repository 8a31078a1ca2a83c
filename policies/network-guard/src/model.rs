//! The fields of NetworkPolicies, Services and Namespaces the policy reads,
//! with NetworkPolicy's defaults applied as the apiserver reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use tollgate_sdk::selector::Selector;

use crate::settings::{PortNumber, PortRange};

/// `null` reads as the type's default, as the apiserver treats it.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    deserializer: D,
) -> Result<T, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

/// Object metadata.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// `metadata.name`.
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    /// `metadata.labels`.
    #[serde(default, deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// Set once the object is being deleted.
    #[serde(default)]
    pub deletion_timestamp: Option<String>,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Debug, Default, Deserialize)]
pub struct NetworkPolicy {
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Its spec.
    #[serde(default)]
    pub spec: NetworkPolicySpec,
}

/// `spec` of a NetworkPolicy.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// The pods it applies to; empty selects every pod of the namespace.
    #[serde(default, deserialize_with = "nullable")]
    pub pod_selector: Selector,
    /// `Ingress`, `Egress`; see [`NetworkPolicy::governs`].
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    /// Allowed incoming traffic.
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<Rule>,
    /// Allowed outgoing traffic.
    #[serde(default, deserialize_with = "nullable")]
    pub egress: Vec<Rule>,
}

/// An ingress rule (`from`) or an egress rule (`to`): both read the same.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The peers; empty means every peer.
    #[serde(default, alias = "to", deserialize_with = "nullable")]
    pub from: Vec<Peer>,
    /// The ports; empty means every port.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<Port>,
}

/// One peer of a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// Namespaces; `{}` selects every one.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// Addresses.
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// An `ipBlock` peer, as written (parsed where checked, so that a malformed
/// block is named in the message).
#[derive(Debug, Default, Deserialize)]
pub struct IpBlock {
    /// The block.
    #[serde(default)]
    pub cidr: String,
    /// Blocks inside it that are left out.
    #[serde(default, deserialize_with = "nullable")]
    pub except: Vec<String>,
}

/// A port of a rule.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// `TCP` when absent.
    #[serde(default)]
    pub protocol: Option<String>,
    /// Every port when absent.
    #[serde(default)]
    pub port: Option<PortNumber>,
    /// The last port of a range.
    #[serde(default)]
    pub end_port: Option<u16>,
}

impl Port {
    /// The range this port opens; `None` for every port of its protocol.
    pub fn range(&self) -> Option<PortRange> {
        Some(PortRange {
            protocol: self.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: self.port.clone()?,
            end_port: self.end_port,
        })
    }
}

/// Traffic direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Incoming.
    Ingress,
    /// Outgoing.
    Egress,
}

impl Direction {
    /// As `policyTypes` and messages write it.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

impl NetworkPolicy {
    /// Whether the policy governs `direction`: as the apiserver defaults
    /// `policyTypes`, Ingress always and Egress when it has egress rules.
    pub fn governs(&self, direction: Direction) -> bool {
        match &self.spec.policy_types {
            Some(types) => types.iter().any(|t| t == direction.name()),
            None => direction == Direction::Ingress || !self.spec.egress.is_empty(),
        }
    }

    /// Whether it denies all `direction` traffic of every pod in its
    /// namespace (a default-deny policy): it selects every pod, governs the
    /// direction and allows nothing in it.
    pub fn denies_all(&self, direction: Direction) -> bool {
        let rules = match direction {
            Direction::Ingress => &self.spec.ingress,
            Direction::Egress => &self.spec.egress,
        };
        self.spec.pod_selector.is_empty() && self.governs(direction) && rules.is_empty()
    }
}

/// A core `v1` Service.
#[derive(Debug, Default, Deserialize)]
pub struct Service {
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Its spec.
    #[serde(default)]
    pub spec: ServiceSpec,
}

/// `spec` of a Service.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `ClusterIP` when absent.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// External addresses routed to the Service.
    #[serde(default, rename = "externalIPs", deserialize_with = "nullable")]
    pub external_ips: Vec<String>,
    /// The pods it sends traffic to (none: endpoints managed by hand).
    #[serde(default, deserialize_with = "nullable")]
    pub selector: BTreeMap<String, String>,
    /// Its ports.
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ServicePort>,
}

/// A Service port.
#[derive(Debug, Default, Deserialize)]
pub struct ServicePort {
    /// `TCP` when absent.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The port the Service listens on.
    #[serde(default)]
    pub port: u16,
}

/// A Namespace.
#[derive(Debug, Default, Deserialize)]
pub struct Namespace {
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
    /// Its status.
    #[serde(default)]
    pub status: NamespaceStatus,
}

/// `status` of a Namespace.
#[derive(Debug, Default, Deserialize)]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default)]
    pub phase: Option<String>,
}

impl Namespace {
    /// Whether it is being deleted (its controller then deletes its
    /// NetworkPolicies too).
    pub fn terminating(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
            || self.status.phase.as_deref() == Some("Terminating")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    #[test]
    fn default_deny_policies_are_recognized_with_the_apiservers_defaults() {
        let deny_ingress = policy(json!({"podSelector": {}}));
        assert!(deny_ingress.denies_all(Direction::Ingress));
        assert!(!deny_ingress.denies_all(Direction::Egress));
        let deny_both = policy(json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}));
        assert!(
            deny_both.denies_all(Direction::Ingress) && deny_both.denies_all(Direction::Egress)
        );
        let deny_egress = policy(json!({"podSelector": {}, "policyTypes": ["Egress"]}));
        assert!(!deny_egress.denies_all(Direction::Ingress));
        assert!(deny_egress.denies_all(Direction::Egress));
        let allow_all = policy(json!({"podSelector": {}, "ingress": [{}]}));
        assert!(!allow_all.denies_all(Direction::Ingress));
        let some_pods = policy(json!({"podSelector": {"matchLabels": {"app": "db"}}}));
        assert!(!some_pods.denies_all(Direction::Ingress));
        let nulls = policy(json!({"podSelector": null, "ingress": null, "policyTypes": null}));
        assert!(nulls.denies_all(Direction::Ingress));
    }

    #[test]
    fn rules_read_from_and_to_alike_and_ports_default_to_tcp() {
        let p = policy(
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}],
            "ports": [{"port": 53, "protocol": "UDP"}, {"port": "dns"}, {}]}]}),
        );
        let rule = &p.spec.egress[0];
        assert_eq!(rule.from[0].ip_block.as_ref().unwrap().cidr, "10.0.0.0/8");
        assert_eq!(rule.ports[0].range().unwrap().to_string(), "53/UDP");
        assert_eq!(rule.ports[1].range().unwrap().to_string(), "dns/TCP");
        assert_eq!(rule.ports[2].range(), None);
        assert!(p.governs(Direction::Egress));
    }
}
