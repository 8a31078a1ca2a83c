//! The fields of a pod template that the Pod Security Standards read, and
//! nothing else: everything else in the object is skipped while parsing.
//!
//! Every field is optional, and JSON `null` counts as absent, as it does for
//! the API server.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

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

/// A pod template: the Pod itself, or the template inside a workload.
pub type Template<'a> = tollgate_sdk::pod::PodTemplate<Metadata<'a>, Spec<'a>>;

/// `metadata`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Metadata<'a> {
    /// `annotations` (AppArmor and seccomp profiles before their fields
    /// existed).
    #[serde(borrow)]
    pub annotations: Option<BTreeMap<Text<'a>, Text<'a>>>,
}

impl Metadata<'_> {
    /// Every annotation, in key order.
    pub fn annotations(&self) -> impl Iterator<Item = (&str, &str)> {
        self.annotations
            .iter()
            .flatten()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// One annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// `spec`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    #[serde(borrow)]
    pub init_containers: Option<Vec<Container<'a>>>,
    #[serde(borrow)]
    pub containers: Option<Vec<Container<'a>>>,
    #[serde(borrow)]
    pub ephemeral_containers: Option<Vec<Container<'a>>>,
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub host_users: Option<bool>,
    #[serde(borrow)]
    pub os: Option<Os<'a>>,
    #[serde(borrow)]
    pub security_context: Option<SecurityContext<'a>>,
    #[serde(borrow)]
    pub volumes: Option<Vec<Volume<'a>>>,
    #[serde(borrow)]
    pub runtime_class_name: Option<Text<'a>>,
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
    #[serde(borrow, default)]
    pub name: Text<'a>,
}

/// A container of any kind.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    #[serde(borrow, default)]
    pub name: Text<'a>,
    #[serde(borrow)]
    pub image: Option<Text<'a>>,
    pub ports: Option<Vec<Port>>,
    #[serde(borrow)]
    pub security_context: Option<SecurityContext<'a>>,
    #[serde(borrow)]
    pub liveness_probe: Option<Handler<'a>>,
    #[serde(borrow)]
    pub readiness_probe: Option<Handler<'a>>,
    #[serde(borrow)]
    pub startup_probe: Option<Handler<'a>>,
    #[serde(borrow)]
    pub lifecycle: Option<Lifecycle<'a>>,
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
}

/// `ports[*]`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    pub host_port: Option<i64>,
}

/// A probe or a lifecycle handler: only where it connects to.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Handler<'a> {
    #[serde(borrow)]
    pub http_get: Option<Endpoint<'a>>,
    #[serde(borrow)]
    pub tcp_socket: Option<Endpoint<'a>>,
}

/// `httpGet` or `tcpSocket`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Endpoint<'a> {
    #[serde(borrow)]
    pub host: Option<Text<'a>>,
}

/// `lifecycle`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle<'a> {
    #[serde(borrow)]
    pub post_start: Option<Handler<'a>>,
    #[serde(borrow)]
    pub pre_stop: Option<Handler<'a>>,
}

/// A pod's or a container's `securityContext` (the union of both: each
/// check reads only the fields its level defines).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext<'a> {
    pub privileged: Option<bool>,
    pub allow_privilege_escalation: Option<bool>,
    pub run_as_non_root: Option<bool>,
    pub run_as_user: Option<i64>,
    #[serde(borrow)]
    pub capabilities: Option<Capabilities<'a>>,
    #[serde(borrow)]
    pub proc_mount: Option<Text<'a>>,
    #[serde(borrow)]
    pub seccomp_profile: Option<Profile<'a>>,
    #[serde(borrow, rename = "seLinuxOptions")]
    pub se_linux_options: Option<SeLinuxOptions<'a>>,
    #[serde(borrow)]
    pub app_armor_profile: Option<Profile<'a>>,
    pub windows_options: Option<WindowsOptions>,
    #[serde(borrow)]
    pub sysctls: Option<Vec<Sysctl<'a>>>,
}

/// `capabilities`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Capabilities<'a> {
    #[serde(borrow)]
    pub add: Option<Vec<Text<'a>>>,
    #[serde(borrow)]
    pub drop: Option<Vec<Text<'a>>>,
}

/// `seccompProfile` or `appArmorProfile`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Profile<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Text<'a>,
}

/// `seLinuxOptions`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct SeLinuxOptions<'a> {
    #[serde(borrow, rename = "type", default)]
    pub kind: Text<'a>,
    #[serde(borrow, default)]
    pub user: Text<'a>,
    #[serde(borrow, default)]
    pub role: Text<'a>,
}

/// `windowsOptions`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowsOptions {
    pub host_process: Option<bool>,
}

/// `spec.securityContext.sysctls[*]`.
#[derive(Debug, Default, PartialEq, Deserialize)]
pub struct Sysctl<'a> {
    #[serde(borrow, default)]
    pub name: Text<'a>,
}

/// `spec.volumes[*]`: its name and the volume sources it sets (members other
/// than `name` whose value is not `null`).
#[derive(Debug, Default, PartialEq)]
pub struct Volume<'a> {
    pub name: Text<'a>,
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
