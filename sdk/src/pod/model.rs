//! The Pod model policies share: the fields of a pod (or pod template) that
//! admission policies read (security, placement, resources), borrowed from
//! the request's text; everything else in the object is skipped while
//! parsing. Pod Security, the GPU quota and policy authors read pods
//! through it.
//!
//! Every field is optional, and JSON `null` counts as absent, as it does for
//! the API server.

use std::borrow::{Borrow, Cow};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::quantity;

/// A string borrowed from the request when it has no escapes.
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(transparent)]
pub struct Text<'a>(#[serde(borrow)] pub Cow<'a, str>);

impl Text<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Text<'_> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Labels, annotations or a node selector.
pub type Map<'a> = BTreeMap<Text<'a>, Text<'a>>;

/// A pod template: the Pod itself, or the template inside a workload.
pub type Template<'a> = super::PodTemplate<Metadata<'a>, Spec<'a>>;

/// A Pod object.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Pod<'a> {
    /// `metadata`.
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    /// `spec`.
    #[serde(borrow, default)]
    pub spec: Spec<'a>,
    /// `status`.
    #[serde(borrow)]
    pub status: Option<Status<'a>>,
}

impl Pod<'_> {
    /// `status.phase` (`Pending`, `Running`, `Succeeded`, `Failed`).
    pub fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_ref().map(Text::as_str)
    }
}

/// `metadata`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Metadata<'a> {
    /// `name`.
    #[serde(borrow)]
    pub name: Option<Text<'a>>,
    /// `namespace`.
    #[serde(borrow)]
    pub namespace: Option<Text<'a>>,
    /// `labels`.
    #[serde(borrow)]
    pub labels: Option<Map<'a>>,
    /// `annotations` (AppArmor and seccomp profiles before their fields
    /// existed; a GPU class).
    #[serde(borrow)]
    pub annotations: Option<Map<'a>>,
}

impl Metadata<'_> {
    /// The namespace, or `""`.
    pub fn namespace(&self) -> &str {
        self.namespace.as_ref().map_or("", Text::as_str)
    }

    /// Every annotation, in key order.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.annotations
            .iter()
            .flatten()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key).map(Text::as_str)
    }
}

/// `spec`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    /// `initContainers`.
    #[serde(borrow)]
    pub init_containers: Option<Vec<Container<'a>>>,
    /// `containers`.
    #[serde(borrow)]
    pub containers: Option<Vec<Container<'a>>>,
    /// `ephemeralContainers`.
    #[serde(borrow)]
    pub ephemeral_containers: Option<Vec<Container<'a>>>,
    /// `hostNetwork`.
    pub host_network: Option<bool>,
    /// `hostPID`.
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    /// `hostIPC`.
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    /// `hostUsers`.
    pub host_users: Option<bool>,
    /// `os`.
    #[serde(borrow)]
    pub os: Option<Os<'a>>,
    /// `securityContext`.
    #[serde(borrow)]
    pub security_context: Option<SecurityContext<'a>>,
    /// `volumes`.
    #[serde(borrow)]
    pub volumes: Option<Vec<Volume<'a>>>,
    /// `runtimeClassName`.
    #[serde(borrow)]
    pub runtime_class_name: Option<Text<'a>>,
    /// `nodeSelector`.
    #[serde(borrow)]
    pub node_selector: Option<Map<'a>>,
    /// `affinity` (node affinity's hard requirement).
    #[serde(borrow)]
    pub affinity: Option<Affinity<'a>>,
}

impl<'a> Spec<'a> {
    /// Every container: init, regular, then ephemeral, as PSA visits them.
    pub fn all_containers(&self) -> impl Iterator<Item = &Container<'a>> {
        [
            &self.init_containers,
            &self.containers,
            &self.ephemeral_containers,
        ]
        .into_iter()
        .flatten()
        .flatten()
    }

    /// The pod-level security context, or an empty one.
    pub fn security(&self) -> &SecurityContext<'a> {
        self.security_context.as_ref().unwrap_or(&EMPTY_CONTEXT)
    }

    /// `spec.hostUsers: false` (user namespaces), which relaxes some checks
    /// from v1.35; absent or `true` does not.
    pub fn user_namespaced(&self) -> bool {
        self.host_users == Some(false)
    }

    /// The required node affinity's terms (empty without one).
    pub fn required_node_terms(&self) -> &[Term<'a>] {
        self.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|s| s.node_selector_terms.as_deref())
            .unwrap_or_default()
    }

    /// `spec.os.name: windows`.
    pub fn windows(&self) -> bool {
        self.os
            .as_ref()
            .is_some_and(|os| os.name.as_str() == "windows")
    }
}

static EMPTY_CONTEXT: SecurityContext<'static> = SecurityContext {
    privileged: None,
    allow_privilege_escalation: None,
    run_as_non_root: None,
    run_as_user: None,
    capabilities: None,
    proc_mount: None,
    seccomp_profile: None,
    se_linux_options: None,
    app_armor_profile: None,
    windows_options: None,
    sysctls: None,
};

/// `spec.os`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Os<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Text<'a>,
}

/// A container of any kind.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Text<'a>,
    /// `image`.
    #[serde(borrow)]
    pub image: Option<Text<'a>>,
    /// `ports`.
    pub ports: Option<Vec<Port>>,
    /// `securityContext`.
    #[serde(borrow)]
    pub security_context: Option<SecurityContext<'a>>,
    /// `livenessProbe`.
    #[serde(borrow)]
    pub liveness_probe: Option<Handler<'a>>,
    /// `readinessProbe`.
    #[serde(borrow)]
    pub readiness_probe: Option<Handler<'a>>,
    /// `startupProbe`.
    #[serde(borrow)]
    pub startup_probe: Option<Handler<'a>>,
    /// `lifecycle`.
    #[serde(borrow)]
    pub lifecycle: Option<Lifecycle<'a>>,
    /// `resources`.
    #[serde(borrow)]
    pub resources: Option<Resources<'a>>,
    /// `restartPolicy` (`Always` makes an init container a sidecar).
    #[serde(borrow)]
    pub restart_policy: Option<Text<'a>>,
}

impl<'a> Container<'a> {
    /// The container's name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The container's security context, or an empty one.
    pub fn security(&self) -> &SecurityContext<'a> {
        self.security_context.as_ref().unwrap_or(&EMPTY_CONTEXT)
    }

    /// `resources.requests`, by resource name (none when unset).
    pub fn requests(&self) -> impl Iterator<Item = (&str, &Amount<'a>)> {
        quantities(self.resources.as_ref().and_then(|r| r.requests.as_ref()))
    }

    /// `resources.limits`, by resource name (none when unset).
    pub fn limits(&self) -> impl Iterator<Item = (&str, &Amount<'a>)> {
        quantities(self.resources.as_ref().and_then(|r| r.limits.as_ref()))
    }

    /// The request for one resource.
    pub fn request(&self, resource: &str) -> Option<&Amount<'a>> {
        self.resources.as_ref()?.request(resource)
    }

    /// The limit for one resource.
    pub fn limit(&self, resource: &str) -> Option<&Amount<'a>> {
        self.resources.as_ref()?.limit(resource)
    }
}

fn quantities<'c, 'a>(
    list: Option<&'c BTreeMap<Text<'a>, Amount<'a>>>,
) -> impl Iterator<Item = (&'c str, &'c Amount<'a>)> {
    list.into_iter()
        .flatten()
        .map(|(resource, amount)| (resource.as_str(), amount))
}

/// `resources`: quantities per resource name.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Resources<'a> {
    /// `requests`.
    #[serde(borrow)]
    pub requests: Option<BTreeMap<Text<'a>, Amount<'a>>>,
    /// `limits`.
    #[serde(borrow)]
    pub limits: Option<BTreeMap<Text<'a>, Amount<'a>>>,
}

impl<'a> Resources<'a> {
    /// Whether a request or limit asks for a non-zero amount of a resource
    /// whose name starts with one of `prefixes` (`nvidia.com/`).
    pub fn asks_any(&self, prefixes: &[String]) -> bool {
        quantities(self.requests.as_ref())
            .chain(quantities(self.limits.as_ref()))
            .any(|(resource, amount)| {
                prefixes.iter().any(|p| resource.starts_with(p.as_str()))
                    && amount.units().is_some_and(|units| units > 0)
            })
    }

    /// The request for one resource.
    pub fn request(&self, resource: &str) -> Option<&Amount<'a>> {
        self.requests.as_ref()?.get(resource)
    }

    /// The limit for one resource.
    pub fn limit(&self, resource: &str) -> Option<&Amount<'a>> {
        self.limits.as_ref()?.get(resource)
    }
}

/// A quantity as JSON writes it: text (`"2"`, `"500m"`), or a number from
/// hand-written manifests.
#[derive(Debug, PartialEq)]
pub enum Amount<'a> {
    /// `"2"`.
    Text(Text<'a>),
    /// `2`.
    Number(f64),
}

/// Read directly rather than as an untagged enum, which would buffer every
/// value first.
impl<'de: 'a, 'a> Deserialize<'de> for Amount<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AmountVisitor(PhantomData))
    }
}

struct AmountVisitor<'a>(PhantomData<Amount<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for AmountVisitor<'a> {
    type Value = Amount<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quantity (a string or a number)")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Amount<'a>, E> {
        Ok(Amount::Text(Text(Cow::Borrowed(text))))
    }

    fn visit_str<E>(self, text: &str) -> Result<Amount<'a>, E> {
        Ok(Amount::Text(Text(Cow::Owned(text.to_owned()))))
    }

    fn visit_f64<E>(self, number: f64) -> Result<Amount<'a>, E> {
        Ok(Amount::Number(number))
    }

    fn visit_u64<E>(self, number: u64) -> Result<Amount<'a>, E> {
        Ok(Amount::Number(number as f64))
    }

    fn visit_i64<E>(self, number: i64) -> Result<Amount<'a>, E> {
        Ok(Amount::Number(number as f64))
    }
}

impl Amount<'_> {
    /// The value, or `None` when the text is not a quantity.
    pub fn value(&self) -> Option<f64> {
        match self {
            Amount::Text(text) => quantity::parse(text.as_str()),
            Amount::Number(number) => Some(*number),
        }
    }

    /// Whole units, rounded up (devices are whole; the apiserver refuses
    /// fractions of them anyway).
    pub fn units(&self) -> Option<u64> {
        self.value()
            .filter(|value| *value >= 0.0)
            .map(|value| value.ceil() as u64)
    }
}

impl fmt::Display for Amount<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Text(text) => text.fmt(f),
            Amount::Number(number) => number.fmt(f),
        }
    }
}

/// `affinity`: node affinity.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity<'a> {
    /// `nodeAffinity`.
    #[serde(borrow)]
    pub node_affinity: Option<NodeAffinity<'a>>,
}

/// `nodeAffinity`: its hard requirement.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity<'a> {
    /// `requiredDuringSchedulingIgnoredDuringExecution`.
    #[serde(borrow)]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector<'a>>,
}

/// Node selector terms, any of which may hold.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector<'a> {
    /// `nodeSelectorTerms`.
    #[serde(borrow)]
    pub node_selector_terms: Option<Vec<Term<'a>>>,
}

/// A node selector term: requirements that must all hold.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term<'a> {
    /// `matchExpressions`.
    #[serde(borrow)]
    pub match_expressions: Option<Vec<Expression<'a>>>,
}

/// One node label requirement.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Expression<'a> {
    /// `key`.
    #[serde(borrow, default)]
    pub key: Text<'a>,
    /// `operator` (`In`, `NotIn`, `Exists`, …).
    #[serde(borrow, default)]
    pub operator: Text<'a>,
    /// `values`.
    #[serde(borrow)]
    pub values: Option<Vec<Text<'a>>>,
}

/// `status`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Status<'a> {
    /// `phase`.
    #[serde(borrow)]
    pub phase: Option<Text<'a>>,
}

/// `ports[*]`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// `hostPort`.
    pub host_port: Option<i64>,
}

/// A probe or a lifecycle handler: only where it connects to.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handler<'a> {
    /// `httpGet`.
    #[serde(borrow)]
    pub http_get: Option<Endpoint<'a>>,
    /// `tcpSocket`.
    #[serde(borrow)]
    pub tcp_socket: Option<Endpoint<'a>>,
}

/// `httpGet` or `tcpSocket`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Endpoint<'a> {
    /// `host`.
    #[serde(borrow)]
    pub host: Option<Text<'a>>,
}

/// `lifecycle`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle<'a> {
    /// `postStart`.
    #[serde(borrow)]
    pub post_start: Option<Handler<'a>>,
    /// `preStop`.
    #[serde(borrow)]
    pub pre_stop: Option<Handler<'a>>,
}

/// A pod's or a container's `securityContext` (the union of both: each
/// check reads only the fields its level defines).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext<'a> {
    /// `privileged`.
    pub privileged: Option<bool>,
    /// `allowPrivilegeEscalation`.
    pub allow_privilege_escalation: Option<bool>,
    /// `runAsNonRoot`.
    pub run_as_non_root: Option<bool>,
    /// `runAsUser`.
    pub run_as_user: Option<i64>,
    /// `capabilities`.
    #[serde(borrow)]
    pub capabilities: Option<Capabilities<'a>>,
    /// `procMount`.
    #[serde(borrow)]
    pub proc_mount: Option<Text<'a>>,
    /// `seccompProfile`.
    #[serde(borrow)]
    pub seccomp_profile: Option<Profile<'a>>,
    /// `seLinuxOptions`.
    #[serde(borrow, rename = "seLinuxOptions")]
    pub se_linux_options: Option<SeLinuxOptions<'a>>,
    /// `appArmorProfile`.
    #[serde(borrow)]
    pub app_armor_profile: Option<Profile<'a>>,
    /// `windowsOptions`.
    pub windows_options: Option<WindowsOptions>,
    /// `sysctls`.
    #[serde(borrow)]
    pub sysctls: Option<Vec<Sysctl<'a>>>,
}

/// `capabilities`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Capabilities<'a> {
    /// `add`.
    #[serde(borrow)]
    pub add: Option<Vec<Text<'a>>>,
    /// `drop`.
    #[serde(borrow)]
    pub drop: Option<Vec<Text<'a>>>,
}

/// `seccompProfile` or `appArmorProfile`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Profile<'a> {
    /// `type`.
    #[serde(borrow, rename = "type", default)]
    pub kind: Text<'a>,
}

/// `seLinuxOptions`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct SeLinuxOptions<'a> {
    /// `type`.
    #[serde(borrow, rename = "type", default)]
    pub kind: Text<'a>,
    /// `user`.
    #[serde(borrow, default)]
    pub user: Text<'a>,
    /// `role`.
    #[serde(borrow, default)]
    pub role: Text<'a>,
}

/// `windowsOptions`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptions {
    /// `hostProcess`.
    pub host_process: Option<bool>,
}

/// `spec.securityContext.sysctls[*]`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Sysctl<'a> {
    /// `name`.
    #[serde(borrow, default)]
    pub name: Text<'a>,
}

/// `spec.volumes[*]`: its name and the volume sources it sets (members other
/// than `name` whose value is not `null`).
#[derive(Debug, Default, PartialEq)]
pub struct Volume<'a> {
    /// `name`.
    pub name: Text<'a>,
    /// The volume sources it sets (`hostPath`, `emptyDir`, …).
    pub sources: Vec<Text<'a>>,
}

impl Volume<'_> {
    /// Whether the volume sets this source.
    pub fn has(&self, source: &str) -> bool {
        self.sources.iter().any(|s| s.as_str() == source)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Volume<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(VolumeVisitor(PhantomData))
    }
}

struct VolumeVisitor<'a>(PhantomData<Volume<'a>>);

impl<'de: 'a, 'a> Visitor<'de> for VolumeVisitor<'a> {
    type Value = Volume<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a volume")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Volume<'a>, A::Error> {
        let mut volume = Volume::default();
        while let Some(key) = map.next_key::<Text<'de>>()? {
            if key.as_str() == "name" {
                volume.name = map.next_value::<Option<Text<'de>>>()?.unwrap_or_default();
            } else if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                volume.sources.push(key);
            }
        }
        Ok(volume)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_policies_need_with_null_as_absent() {
        let text = r#"{"metadata": {"namespace": "ml", "labels": null,
            "annotations": {"gpu.tollgate.dev/class": "large"}},
          "spec": {"containers": [{"name": "main", "image": "nvcr.io/a:1",
              "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": 1.5}, "requests": null}}],
            "initContainers": null, "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
              {"nodeSelectorTerms": [{"matchExpressions": [{"key": "k", "operator": "In", "values": ["v"]}]}]}}},
            "volumes": [{"name": "data", "hostPath": {"path": "/d"}, "emptyDir": null}]},
          "status": {"phase": "Running"}}"#;
        let pod: Pod<'_> = serde_json::from_str(text).unwrap();
        assert_eq!(pod.metadata.namespace(), "ml");
        assert_eq!(
            pod.metadata.annotation("gpu.tollgate.dev/class"),
            Some("large")
        );
        assert_eq!(pod.phase(), Some("Running"));
        let spec = &pod.spec;
        assert_eq!(spec.all_containers().count(), 1);
        let main = &spec.containers.as_ref().unwrap()[0];
        assert_eq!(
            main.limit("nvidia.com/gpu").and_then(Amount::units),
            Some(2)
        );
        assert_eq!(main.limit("cpu").and_then(Amount::units), Some(2));
        assert_eq!(
            main.limit("cpu").map(Amount::to_string).as_deref(),
            Some("1.5")
        );
        assert_eq!(main.requests().count(), 0);
        assert_eq!(
            spec.node_selector
                .as_ref()
                .unwrap()
                .get("nvidia.com/gpu.product")
                .map(Text::as_str),
            Some("H100")
        );
        assert_eq!(spec.required_node_terms().len(), 1);
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert!(volume.has("hostPath") && !volume.has("emptyDir"));
    }

    #[test]
    fn an_empty_object_is_an_empty_pod() {
        let pod: Pod<'_> = serde_json::from_str("{}").unwrap();
        assert_eq!(pod, Pod::default());
        assert_eq!(pod.metadata.namespace(), "");
        assert!(pod.spec.required_node_terms().is_empty());
    }
}
