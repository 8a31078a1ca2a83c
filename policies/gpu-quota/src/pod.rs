//! What the quota reads of a Pod (the SDK's shared model): what it asks of
//! the counted resources, which GPU product it targets, and whether it
//! still holds them.

use std::collections::BTreeMap;

use tollgate_sdk::pod::model::{Amount, Container, Pod, Text};

use crate::settings::Settings;

/// Amounts per resource.
pub type Asks = BTreeMap<String, u64>;

/// Whether the pod holds its resources: not once it has succeeded or failed.
pub fn holds_resources(pod: &Pod<'_>) -> bool {
    !matches!(pod.phase(), Some("Succeeded" | "Failed"))
}

/// What the pod asks of the counted resources, as the scheduler counts it:
/// the larger of what runs together (containers and sidecars) and the
/// largest init step (an init container with the sidecars started before
/// it). Requests default to limits.
pub fn asks(pod: &Pod<'_>, settings: &Settings) -> Asks {
    let amounts = |c: &Container<'_>| -> Asks {
        let mut asks = Asks::new();
        // Requests come second and win over limits.
        for (resource, amount) in c.limits().chain(c.requests()) {
            if settings.counts(resource) {
                asks.insert(resource.to_owned(), amount.units().unwrap_or(0));
            }
        }
        asks
    };
    let add = |total: &mut Asks, more: &Asks| {
        for (r, a) in more {
            *total.entry(r.clone()).or_default() += a;
        }
    };
    let mut running = Asks::new();
    for container in pod.spec.containers.iter().flatten() {
        add(&mut running, &amounts(container));
    }
    let mut sidecars = Asks::new();
    let mut peak = Asks::new();
    for init in pod.spec.init_containers.iter().flatten() {
        let own = amounts(init);
        if init.restart_policy.as_ref().map(Text::as_str) == Some("Always") {
            add(&mut sidecars, &own);
            continue;
        }
        let mut step = sidecars.clone();
        add(&mut step, &own);
        for (r, a) in step {
            let p = peak.entry(r).or_default();
            *p = (*p).max(a);
        }
    }
    add(&mut running, &sidecars);
    for (r, a) in peak {
        let total = running.entry(r).or_default();
        *total = (*total).max(a);
    }
    running.retain(|_, a| *a > 0);
    running
}

/// The GPU products the pod may run on: from its node selector, else from
/// required node affinity (every product any term allows), else from its
/// GPU class annotation. Empty when it does not say (it then counts against
/// no per-product limit).
pub fn products(pod: &Pod<'_>, settings: &Settings) -> Vec<String> {
    let spec = &pod.spec;
    if let Some(product) = spec
        .node_selector
        .as_ref()
        .and_then(|selector| selector.get(settings.product_label.as_str()))
    {
        return vec![product.to_string()];
    }
    let mut products = Vec::new();
    for term in spec.required_node_terms() {
        let named = term
            .match_expressions
            .iter()
            .flatten()
            .find(|e| e.key.as_str() == settings.product_label && e.operator.as_str() == "In");
        match named {
            Some(expression) => {
                products.extend(expression.values.iter().flatten().map(Text::to_string))
            }
            // A term that allows any product: the pod may land anywhere.
            None => return Vec::new(),
        }
    }
    if products.is_empty()
        && let Some(class) = pod.metadata.annotation(&settings.class_annotation)
        && let Some(product) = settings.classes.get(class)
    {
        products.push(product.clone());
    }
    products.sort();
    products.dedup();
    products
}

/// Containers whose counted requests and limits differ (or that set requests
/// without limits): `(container, resource, request, limit)`.
pub fn unequal_requests(
    pod: &Pod<'_>,
    settings: &Settings,
) -> Vec<(String, String, String, String)> {
    let spec = &pod.spec;
    let mut found = Vec::new();
    for c in spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .flatten()
    {
        for (resource, request) in c.requests().filter(|(r, _)| settings.counts(r)) {
            let limit = c.limit(resource);
            if limit.and_then(Amount::units) != request.units() {
                found.push((
                    c.name().to_owned(),
                    resource.to_owned(),
                    request.to_string(),
                    limit.map_or_else(|| "unset".into(), Amount::to_string),
                ));
            }
        }
    }
    found
}

/// The name of a product-qualified resource (`nvidia.com/gpu@NVIDIA-H100-80GB-HBM3`).
pub fn on_product(resource: &str, product: &str) -> String {
    format!("{resource}@{product}")
}
