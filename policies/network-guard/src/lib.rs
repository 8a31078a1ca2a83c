//! `network-guard`: NetworkPolicies that open a namespace to the world are
//! refused, tenant namespaces stay isolated, and Services expose only what
//! is allowed.
//!
//! - **NetworkPolicy rules** (CREATE, UPDATE): ingress from every source
//!   (no `from`, a too-wide `ipBlock`, `namespaceSelector: {}`) unless the
//!   rule opens only allowed ports; in tenant namespaces, egress to
//!   everywhere but allowed CIDRs and ports; anywhere, egress that reaches
//!   the cloud metadata service.
//! - **Isolation**: in tenant namespaces, a Pod or workload is created only
//!   when the namespace has a default-deny NetworkPolicy (ingress, and
//!   egress where required), and the last one is neither deleted nor
//!   weakened.
//! - **Exposure**: `LoadBalancer` and `NodePort` Services and
//!   `externalIPs` only in allowed namespaces; Services that select GPU
//!   pods only on allowed ports.
//!
//! Cluster-scoped AdminNetworkPolicy and BaselineAdminNetworkPolicy objects
//! belong to cluster admins and are left alone. On UPDATE, a problem the
//! object already had is a warning, so an existing object stays editable.

mod cidr;
mod exposure;
mod isolation;
mod model;
mod rules;
mod settings;

use tollgate_sdk::pod::TemplatePaths;
use tollgate_sdk::{Policy, Request, Verdict, context};

use model::{Namespace, NetworkPolicy, Service};
pub use settings::Settings;

/// The account of Kubernetes' namespace controller, which deletes a
/// terminating namespace's NetworkPolicies.
const NAMESPACE_CONTROLLER: &str = "system:serviceaccount:kube-system:namespace-controller";

/// The policy.
pub struct NetworkGuard;

impl Policy for NetworkGuard {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        settings::validate(settings)
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let namespace = request.namespace.as_str();
        if namespace.is_empty()
            || !request.sub_resource.is_empty()
            || settings.exempt_namespaces.iter().any(|n| n == namespace)
        {
            return Ok(Verdict::allow());
        }
        let (group, kind) = (request.kind.group.as_str(), request.kind.kind.as_str());
        let mut tenancy = Tenancy {
            settings,
            namespace,
            read: None,
        };
        match (group, kind) {
            ("networking.k8s.io", "NetworkPolicy") => network_policy(request, &mut tenancy),
            ("", "Service") => {
                let judge = |service: &Service| exposure::problems(service, namespace, settings);
                let subject = |service: &Service| format!("Service {:?}", service.metadata.name);
                judged(request, judge, subject)
            }
            _ if request.operation == "CREATE"
                && TemplatePaths::with(&settings.template_paths).knows(group, kind) =>
            {
                if !tenancy.tenant()? {
                    return Ok(Verdict::allow());
                }
                Ok(isolation::missing(kind, namespace, settings)?
                    .map_or_else(Verdict::allow, Verdict::deny))
            }
            _ => Ok(Verdict::allow()),
        }
    }
}

tollgate_sdk::export!(NetworkGuard);

/// The request's namespace, read from the cluster context once, when a
/// check needs it.
struct Tenancy<'a> {
    settings: &'a Settings,
    namespace: &'a str,
    read: Option<Namespace>,
}

impl Tenancy<'_> {
    fn object(&mut self) -> tollgate_sdk::Result<&Namespace> {
        if self.read.is_none() {
            let namespace: Namespace = context::get_as("v1", "Namespace", "", self.namespace)?
                .ok_or_else(|| {
                    format!(
                        "namespace {:?} is not in the cluster context, so whether it is a tenant namespace cannot be known",
                        self.namespace
                    )
                })?;
            self.read = Some(namespace);
        }
        Ok(self.read.get_or_insert_default())
    }

    /// Whether the namespace is a tenant namespace.
    fn tenant(&mut self) -> tollgate_sdk::Result<bool> {
        let Some(selector) = &self.settings.tenant_namespaces else {
            return Ok(false);
        };
        Ok(selector.matches_labels(&self.object()?.metadata.labels))
    }
}

/// A NetworkPolicy CREATE, UPDATE or DELETE.
fn network_policy(
    request: &Request<'_>,
    tenancy: &mut Tenancy<'_>,
) -> tollgate_sdk::Result<Verdict> {
    let settings = tenancy.settings;
    let tenant = tenancy.tenant()?;
    let verdict = judged(
        request,
        |policy: &NetworkPolicy| Ok(rules::problems(policy, settings, tenant)),
        |policy| format!("NetworkPolicy {:?}", policy.metadata.name),
    )?;
    let old = parse::<NetworkPolicy>(request.raw_old_object())?;
    if !verdict.allowed
        || !tenant
        || request.user_info.username == NAMESPACE_CONTROLLER
        || !matches!(request.operation.as_str(), "UPDATE" | "DELETE")
    {
        return Ok(verdict);
    }
    let Some(old) = old else {
        return Ok(verdict);
    };
    if tenancy.object()?.terminating() {
        return Ok(verdict);
    }
    let new = match request.operation.as_str() {
        "UPDATE" => parse::<NetworkPolicy>(request.raw_object())?,
        _ => None,
    };
    Ok(
        match isolation::weakened(&old, new.as_ref(), tenancy.namespace, settings)? {
            Some(message) => Verdict::deny(message),
            None => verdict,
        },
    )
}

/// The verdict on a CREATE or UPDATE of an object `judge` finds problems
/// in ([`Verdict::on_problems`]: on UPDATE, the old object's are warnings).
fn judged<T: serde::de::DeserializeOwned>(
    request: &Request<'_>,
    judge: impl Fn(&T) -> tollgate_sdk::Result<Vec<String>>,
    subject: impl Fn(&T) -> String,
) -> tollgate_sdk::Result<Verdict> {
    if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
        return Ok(Verdict::allow());
    }
    let Some(object) = parse::<T>(request.raw_object())? else {
        return Ok(Verdict::allow());
    };
    let problems = judge(&object)?;
    if problems.is_empty() {
        return Ok(Verdict::allow());
    }
    let before = match parse::<T>(request.raw_old_object())? {
        Some(old) if request.operation == "UPDATE" => judge(&old)?,
        _ => Vec::new(),
    };
    Ok(Verdict::on_problems(&subject(&object), problems, &before))
}

/// An object of the request, typed.
fn parse<T: serde::de::DeserializeOwned>(text: Option<&str>) -> tollgate_sdk::Result<Option<T>> {
    Ok(text.map(serde_json::from_str).transpose()?)
}

#[cfg(test)]
mod tests;
