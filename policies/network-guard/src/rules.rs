//! The rules of a NetworkPolicy: ingress open to every source, tenant
//! egress to everywhere, egress that reaches the cloud metadata service.

use crate::cidr::Cidr;
use crate::model::{NetworkPolicy, Peer, Rule};
use crate::settings::{PortRange, Settings};

/// Every problem of `policy`'s rules, each naming its field and what to
/// write instead. `tenant`: the namespace is a tenant namespace.
pub fn problems(policy: &NetworkPolicy, settings: &Settings, tenant: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, rule) in policy.spec.ingress.iter().enumerate() {
        if !only_opens(rule, &settings.ingress.allowed_ports) {
            open_sources(&format!("spec.ingress[{i}]"), rule, settings, &mut problems);
        }
    }
    for (i, rule) in policy.spec.egress.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        if tenant && !only_opens(rule, &settings.egress.allowed_ports) {
            open_destinations(&field, rule, settings, &mut problems);
        }
        metadata_reached(&field, rule, settings, &mut problems);
    }
    problems
}

/// Whether every port the rule opens is one of `allowed` (a rule without
/// ports opens them all).
fn only_opens(rule: &Rule, allowed: &[PortRange]) -> bool {
    !rule.ports.is_empty()
        && rule.ports.iter().all(|port| {
            port.range()
                .is_some_and(|range| allowed.iter().any(|a| a.covers(&range)))
        })
}

/// What an open rule may write instead, by direction.
fn ports_hint(allowed: &[PortRange]) -> String {
    if allowed.is_empty() {
        String::new()
    } else {
        let ports: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        format!(", or open only {}", ports.join(", "))
    }
}

fn open_sources(field: &str, rule: &Rule, settings: &Settings, problems: &mut Vec<String>) {
    let hint = ports_hint(&settings.ingress.allowed_ports);
    if rule.from.is_empty() {
        problems.push(format!(
            "{field} has no from, so it admits traffic from every pod, namespace and address: name the sources, e.g. from: [{{podSelector: {{matchLabels: {{app: frontend}}}}}}]{hint}"
        ));
        return;
    }
    for (j, peer) in rule.from.iter().enumerate() {
        let field = format!("{field}.from[{j}]");
        if every_namespace(peer) {
            problems.push(format!(
                "{field}.namespaceSelector is {{}}, which selects every namespace: select namespaces by label, e.g. namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: monitoring}}}}{hint}"
            ));
        }
        if let Some(block) = &peer.ip_block {
            match block.cidr.parse::<Cidr>() {
                Err(e) => problems.push(format!("{field}.ipBlock.cidr: {e}")),
                Ok(cidr) if settings.min_prefix_length.too_wide(cidr) => problems.push(format!(
                    "{field}.ipBlock.cidr {cidr} admits {}: name the networks traffic comes from, with a prefix of {} or longer{hint}",
                    reach(cidr),
                    settings.min_prefix_length.minimum_for(cidr)
                )),
                Ok(_) => {}
            }
        }
    }
}

fn open_destinations(field: &str, rule: &Rule, settings: &Settings, problems: &mut Vec<String>) {
    let hint = ports_hint(&settings.egress.allowed_ports);
    let allowed = &settings.egress.allowed_cidrs;
    let within = if allowed.is_empty() {
        String::new()
    } else {
        let cidrs: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        format!(" or an ipBlock inside {}", cidrs.join(", "))
    };
    if rule.from.is_empty() {
        problems.push(format!(
            "{field} has no to, so tenant pods may reach every destination: name them, e.g. to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: shared-services}}}}}}]{within}{hint}"
        ));
        return;
    }
    for (j, peer) in rule.from.iter().enumerate() {
        let field = format!("{field}.to[{j}]");
        if every_namespace(peer) {
            problems.push(format!(
                "{field}.namespaceSelector is {{}}, so tenant pods may reach every namespace: select namespaces by label{within}{hint}"
            ));
        }
        let Some(block) = &peer.ip_block else {
            continue;
        };
        let Ok(cidr) = block.cidr.parse::<Cidr>() else {
            problems.push(format!(
                "{field}.ipBlock.cidr: {:?} is not a CIDR block (write e.g. 10.0.0.0/8)",
                block.cidr
            ));
            continue;
        };
        if !allowed.is_empty() && !allowed.iter().any(|a| a.contains(cidr)) {
            problems.push(format!(
                "{field}.ipBlock.cidr {cidr} is outside the networks tenant pods may reach: write an ipBlock inside {}{hint}",
                allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
        } else if allowed.is_empty() && settings.min_prefix_length.too_wide(cidr) {
            problems.push(format!(
                "{field}.ipBlock.cidr {cidr} lets tenant pods reach {}: name the networks they need, with a prefix of {} or longer{hint}",
                reach(cidr),
                settings.min_prefix_length.minimum_for(cidr)
            ));
        }
    }
}

fn metadata_reached(field: &str, rule: &Rule, settings: &Settings, problems: &mut Vec<String>) {
    let metadata = &settings.metadata_addresses;
    if metadata.is_empty() {
        return;
    }
    if rule.from.is_empty() {
        let blocks: Vec<String> = metadata.iter().map(|m| world_except(*m)).collect();
        problems.push(format!(
            "{field} has no to, so it lets the pods reach the cloud metadata service ({}), which hands out the node's credentials: write to: [{}]",
            list(metadata),
            blocks.join(", ")
        ));
        return;
    }
    for (j, peer) in rule.from.iter().enumerate() {
        let Some(block) = &peer.ip_block else {
            continue;
        };
        let (Ok(cidr), Ok(except)) = (
            block.cidr.parse::<Cidr>(),
            block
                .except
                .iter()
                .map(|e| e.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>(),
        ) else {
            // A malformed block is reported by the open-destination check
            // in tenant namespaces and refused by the apiserver elsewhere.
            continue;
        };
        let reached: Vec<Cidr> = metadata
            .iter()
            .copied()
            .filter(|m| cidr.contains(*m) && !except.iter().any(|e| e.contains(*m)))
            .collect();
        if !reached.is_empty() {
            problems.push(format!(
                "{field}.to[{j}].ipBlock {cidr} contains the cloud metadata service ({}), which hands out the node's credentials: add except: [{}]",
                list(&reached),
                list(&reached)
            ));
        }
    }
}

/// Whether a peer selects every namespace: `namespaceSelector: {}`.
fn every_namespace(peer: &Peer) -> bool {
    peer.namespace_selector
        .as_ref()
        .is_some_and(|s| s.is_empty())
}

/// How a message names what a wide block reaches.
fn reach(cidr: Cidr) -> &'static str {
    if cidr.prefix() == 0 {
        "every address"
    } else {
        "a large part of the internet"
    }
}

/// `{ipBlock: {cidr: 0.0.0.0/0, except: [169.254.169.254/32]}}`.
fn world_except(address: Cidr) -> String {
    let world = if address.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    format!("{{ipBlock: {{cidr: {world}, except: [{address}]}}}}")
}

fn list(cidrs: &[Cidr]) -> String {
    cidrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
