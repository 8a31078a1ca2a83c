//! Sharing the host: namespaces, ports, probe and hook targets, sysctls and
//! Windows host processes.

use super::Failure;
use super::text::{containers, join_quote, pluralize, setters, sorted_set};
use tollgate_sdk::pod::model::{Handler, Metadata, Spec};

/// `hostNetwork`, `hostPID` and `hostIPC` stay unset or false.
pub fn namespaces(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let shared: Vec<&str> = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ]
    .into_iter()
    .filter(|(set, _)| *set == Some(true))
    .map(|(_, text)| text)
    .collect();
    if shared.is_empty() {
        return None;
    }
    Failure::new("host namespaces", shared.join(", "))
}

/// No container port is bound on the host.
pub fn ports(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut bad_containers = Vec::new();
    let mut ports = Vec::new();
    for container in spec.all_containers() {
        let before = ports.len();
        ports.extend(
            container
                .ports
                .iter()
                .flatten()
                .filter_map(|port| port.host_port)
                .filter(|port| *port != 0)
                .map(|port| port.to_string()),
        );
        if ports.len() > before {
            bad_containers.push(container.name());
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let ports = sorted_set(ports);
    Failure::new(
        "hostPort",
        format!(
            "{} {} {} {}",
            containers(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize("hostPort", "hostPorts", ports.len()),
            ports.join(", ")
        ),
    )
}

fn hosts<'h>(handler: &'h Option<Handler<'_>>) -> impl Iterator<Item = &'h str> {
    handler
        .iter()
        .flat_map(|h| [&h.http_get, &h.tcp_socket])
        .flatten()
        .filter_map(|endpoint| endpoint.host.as_ref())
        .map(|host| host.as_str())
        .filter(|host| !host.is_empty())
}

/// Probes and lifecycle hooks do not name a host (v1.34+): they would
/// reach beyond the pod with the kubelet's network identity.
pub fn probes_and_lifecycle(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let mut bad_containers = Vec::new();
    let mut forbidden = Vec::new();
    for container in spec.all_containers() {
        let before = forbidden.len();
        let lifecycle = container.lifecycle.as_ref();
        for handler in [
            &container.liveness_probe,
            &container.readiness_probe,
            &container.startup_probe,
        ]
        .into_iter()
        .chain(lifecycle.map(|l| &l.post_start))
        .chain(lifecycle.map(|l| &l.pre_stop))
        {
            forbidden.extend(hosts(handler));
        }
        if forbidden.len() > before {
            bad_containers.push(container.name());
        }
    }
    if bad_containers.is_empty() {
        return None;
    }
    let bad_containers = sorted_set(bad_containers);
    let forbidden = sorted_set(forbidden);
    Failure::new(
        "probe or lifecycle host",
        format!(
            "{} {} {} {}",
            containers(&bad_containers),
            pluralize("uses", "use", bad_containers.len()),
            pluralize(
                "probe or lifecycle host",
                "probe or lifecycle hosts",
                forbidden.len()
            ),
            join_quote(&forbidden)
        ),
    )
}

/// Safe sysctls, with the minor version that made each one allowed.
const SAFE_SYSCTLS: &[(u32, &str)] = &[
    (0, "kernel.shm_rmid_forced"),
    (0, "net.ipv4.ip_local_port_range"),
    (0, "net.ipv4.tcp_syncookies"),
    (0, "net.ipv4.ping_group_range"),
    (0, "net.ipv4.ip_unprivileged_port_start"),
    (27, "net.ipv4.ip_local_reserved_ports"),
    (29, "net.ipv4.tcp_keepalive_time"),
    (29, "net.ipv4.tcp_fin_timeout"),
    (29, "net.ipv4.tcp_keepalive_intvl"),
    (29, "net.ipv4.tcp_keepalive_probes"),
    (32, "net.ipv4.tcp_rmem"),
    (32, "net.ipv4.tcp_wmem"),
    (37, "net.ipv4.tcp_slow_start_after_idle"),
    (37, "net.ipv4.tcp_notsent_lowat"),
];

/// Only the sysctls that were safe as of the check version `since` (the
/// version's allowed set, which grows over releases).
pub fn sysctls(spec: &Spec<'_>, since: u32) -> Option<Failure> {
    let forbidden: Vec<&str> = spec
        .security()
        .sysctls
        .iter()
        .flatten()
        .map(|sysctl| sysctl.name.as_str())
        .filter(|name| {
            !SAFE_SYSCTLS
                .iter()
                .any(|(added, safe)| *added <= since && safe == name)
        })
        .collect();
    if forbidden.is_empty() {
        return None;
    }
    Failure::new("forbidden sysctls", forbidden.join(", "))
}

/// No Windows host process, for the pod or any container.
pub fn windows_host_process(_: &Metadata<'_>, spec: &Spec<'_>) -> Option<Failure> {
    let host_process = |options: &Option<tollgate_sdk::pod::model::WindowsOptions>| {
        options.as_ref().and_then(|o| o.host_process) == Some(true)
    };
    let bad_containers: Vec<&str> = spec
        .all_containers()
        .filter(|c| host_process(&c.security().windows_options))
        .map(|c| c.name())
        .collect();
    let who = setters(
        host_process(&spec.security().windows_options),
        &bad_containers,
    )?;
    Failure::new(
        "hostProcess",
        format!("{who} must not set securityContext.windowsOptions.hostProcess=true"),
    )
}
