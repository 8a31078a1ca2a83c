//! The policy's settings and their checks.

use std::fmt;

use serde::Deserialize;
use tollgate_sdk::pod::TemplatePathRule;
use tollgate_sdk::selector::Selector;

use crate::cidr::Cidr;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Namespaces where nothing is checked.
    #[serde(default)]
    pub exempt_namespaces: Vec<String>,
    /// Tenant namespaces (by label): their egress is bounded and their
    /// workloads need a default-deny NetworkPolicy. None when absent.
    #[serde(default)]
    pub tenant_namespaces: Option<Selector>,
    /// Tenant workloads also need a default-deny egress NetworkPolicy.
    #[serde(default)]
    pub require_default_deny_egress: bool,
    /// An `ipBlock` with a shorter prefix than these is open to the world.
    #[serde(default)]
    pub min_prefix_length: PrefixLengths,
    /// What ingress rules may open to every source.
    #[serde(default)]
    pub ingress: Ingress,
    /// Where tenant egress may go.
    #[serde(default)]
    pub egress: Egress,
    /// Cloud metadata addresses no egress rule may reach (empty: not
    /// checked).
    #[serde(default = "default_metadata_addresses")]
    pub metadata_addresses: Vec<Cidr>,
    /// Which Services may expose what.
    #[serde(default)]
    pub exposure: Exposure,
    /// Resources that make a pod a GPU pod, by name prefix.
    #[serde(default = "default_gpu_resource_prefixes")]
    pub gpu_resource_prefixes: Vec<String>,
    /// Where pod specs live in kinds the SDK does not know.
    #[serde(default)]
    pub template_paths: Vec<TemplatePathRule>,
}

/// Minimum `ipBlock` prefix lengths per address family.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLengths {
    /// IPv4 (0 to 32).
    #[serde(default = "default_ipv4_prefix")]
    pub ipv4: u8,
    /// IPv6 (0 to 128).
    #[serde(default = "default_ipv6_prefix")]
    pub ipv6: u8,
}

impl Default for PrefixLengths {
    fn default() -> Self {
        PrefixLengths {
            ipv4: default_ipv4_prefix(),
            ipv6: default_ipv6_prefix(),
        }
    }
}

impl PrefixLengths {
    /// Whether `block` is wider than the minimum of its family.
    pub fn too_wide(self, block: Cidr) -> bool {
        block.prefix()
            < if block.is_ipv4() {
                self.ipv4
            } else {
                self.ipv6
            }
    }

    /// The minimum for `block`'s family, as messages write it (`/8`).
    pub fn minimum_for(self, block: Cidr) -> String {
        format!(
            "/{}",
            if block.is_ipv4() {
                self.ipv4
            } else {
                self.ipv6
            }
        )
    }
}

fn default_ipv4_prefix() -> u8 {
    8
}

fn default_ipv6_prefix() -> u8 {
    32
}

/// Ingress settings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ingress {
    /// Ports a rule may open to every source (a public HTTPS endpoint).
    #[serde(default)]
    pub allowed_ports: Vec<PortRange>,
}

/// Egress settings for tenant namespaces.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Egress {
    /// When set, tenant `ipBlock` destinations must lie inside one of these.
    #[serde(default)]
    pub allowed_cidrs: Vec<Cidr>,
    /// Ports a tenant rule may open to every destination (DNS by default).
    #[serde(default = "dns")]
    pub allowed_ports: Vec<PortRange>,
}

impl Default for Egress {
    fn default() -> Self {
        Egress {
            allowed_cidrs: Vec::new(),
            allowed_ports: dns(),
        }
    }
}

fn dns() -> Vec<PortRange> {
    ["UDP", "TCP"]
        .into_iter()
        .map(|protocol| PortRange {
            protocol: protocol.into(),
            port: PortNumber::Number(53),
            end_port: None,
        })
        .collect()
}

fn default_metadata_addresses() -> Vec<Cidr> {
    ["169.254.169.254/32", "fd00:ec2::254/128"]
        .into_iter()
        .map(|text| text.parse().expect("well-formed"))
        .collect()
}

fn default_gpu_resource_prefixes() -> Vec<String> {
    vec!["nvidia.com/".into()]
}

/// Service exposure settings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exposure {
    /// Namespaces where Services may be `type: LoadBalancer`.
    #[serde(default)]
    pub load_balancer_namespaces: Vec<String>,
    /// Namespaces where Services may be `type: NodePort`.
    #[serde(default)]
    pub node_port_namespaces: Vec<String>,
    /// Namespaces where Services may set `spec.externalIPs`.
    #[serde(default, rename = "externalIPNamespaces")]
    pub external_ip_namespaces: Vec<String>,
    /// When set, Services that select GPU pods expose only these ports.
    #[serde(default)]
    pub gpu_service_ports: Option<Vec<PortRange>>,
    /// The kinds whose pods (or pod templates) a Service's selector is
    /// matched against to find GPU pods.
    #[serde(default = "default_gpu_workloads")]
    pub gpu_workloads: Vec<KindRef>,
}

impl Default for Exposure {
    fn default() -> Self {
        Exposure {
            load_balancer_namespaces: Vec::new(),
            node_port_namespaces: Vec::new(),
            external_ip_namespaces: Vec::new(),
            gpu_service_ports: None,
            gpu_workloads: default_gpu_workloads(),
        }
    }
}

fn default_gpu_workloads() -> Vec<KindRef> {
    [
        ("v1", "Pod"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
    ]
    .into_iter()
    .map(|(api_version, kind)| KindRef {
        api_version: api_version.into(),
        kind: kind.into(),
    })
    .collect()
}

/// A kind, as `context:` grants name it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KindRef {
    /// e.g. `apps/v1`.
    pub api_version: String,
    /// e.g. `Deployment`.
    pub kind: String,
}

/// A port or port range on one protocol; a bare number is that TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The first port, or a named port.
    pub port: PortNumber,
    /// The last port of a numeric range.
    pub end_port: Option<u16>,
}

/// A port by number or by name (a container port's name).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortNumber {
    /// `443`.
    Number(u16),
    /// `https`.
    Name(String),
}

impl PortRange {
    /// Whether every port of `other` is in this range.
    pub fn covers(&self, other: &PortRange) -> bool {
        if self.protocol != other.protocol {
            return false;
        }
        match (&self.port, &other.port) {
            (PortNumber::Name(a), PortNumber::Name(b)) => a == b,
            (PortNumber::Number(first), PortNumber::Number(port)) => {
                let last = self.end_port.unwrap_or(*first);
                *first <= *port && other.end_port.unwrap_or(*port) <= last
            }
            _ => false,
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.port, self.end_port) {
            (PortNumber::Number(first), Some(last)) => write!(f, "{first}-{last}")?,
            (PortNumber::Number(port), None) => write!(f, "{port}")?,
            (PortNumber::Name(name), _) => write!(f, "{name}")?,
        }
        write!(f, "/{}", self.protocol)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Bare(u16),
            Full(Full),
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Full {
            #[serde(default = "tcp")]
            protocol: String,
            port: PortNumber,
            #[serde(default)]
            end_port: Option<u16>,
        }
        fn tcp() -> String {
            "TCP".into()
        }
        Ok(
            match Form::deserialize(deserializer).map_err(|_| {
                serde::de::Error::custom(
                    "a port is a number (443) or {port: 53, protocol: UDP, endPort: …}",
                )
            })? {
                Form::Bare(port) => PortRange {
                    protocol: tcp(),
                    port: PortNumber::Number(port),
                    end_port: None,
                },
                Form::Full(full) => PortRange {
                    protocol: full.protocol,
                    port: full.port,
                    end_port: full.end_port,
                },
            },
        )
    }
}

/// Checks what deserialization cannot.
pub fn validate(settings: &Settings) -> Result<(), String> {
    let PrefixLengths { ipv4, ipv6 } = settings.min_prefix_length;
    if ipv4 > 32 || ipv6 > 128 {
        return Err(format!(
            "minPrefixLength: ipv4 must be 0 to 32 and ipv6 0 to 128 (got {ipv4} and {ipv6})"
        ));
    }
    let ports = settings
        .ingress
        .allowed_ports
        .iter()
        .map(|p| ("ingress.allowedPorts", p))
        .chain(
            settings
                .egress
                .allowed_ports
                .iter()
                .map(|p| ("egress.allowedPorts", p)),
        )
        .chain(
            settings
                .exposure
                .gpu_service_ports
                .iter()
                .flatten()
                .map(|p| ("exposure.gpuServicePorts", p)),
        );
    for (field, port) in ports {
        if !matches!(port.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
            return Err(format!(
                "{field}: protocol {:?} must be TCP, UDP or SCTP",
                port.protocol
            ));
        }
        match (&port.port, port.end_port) {
            (PortNumber::Number(first), Some(last)) if last < *first => {
                return Err(format!("{field}: endPort {last} is below port {first}"));
            }
            (PortNumber::Name(name), Some(_)) => {
                return Err(format!(
                    "{field}: the named port {name:?} cannot have an endPort"
                ));
            }
            _ => {}
        }
    }
    if settings.exposure.gpu_service_ports.is_some() && settings.exposure.gpu_workloads.is_empty() {
        return Err("exposure.gpuWorkloads is empty, so exposure.gpuServicePorts could never find a GPU pod: list kinds such as {apiVersion: v1, kind: Pod}".into());
    }
    if settings.require_default_deny_egress && settings.tenant_namespaces.is_none() {
        return Err("requireDefaultDenyEgress applies to tenant namespaces, but tenantNamespaces is not set: select them, e.g. tenantNamespaces: {matchLabels: {tollgate.dev/tenant: \"true\"}}".into());
    }
    Ok(())
}
