//! The parts of a Pod the quota reads: what it asks of the counted
//! resources, which GPU product it targets, and its phase.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::quantity;

use crate::settings::Settings;

/// A Pod, borrowed from its JSON text.
#[derive(Debug, Default, Deserialize)]
pub struct Pod<'a> {
    /// Metadata.
    #[serde(borrow, default)]
    pub metadata: Metadata<'a>,
    /// Spec.
    #[serde(borrow, default)]
    pub spec: Spec<'a>,
    /// Status.
    #[serde(borrow, default)]
    pub status: Status<'a>,
}

/// Metadata the quota reads.
#[derive(Debug, Default, Deserialize)]
pub struct Metadata<'a> {
    /// Namespace.
    #[serde(borrow, default)]
    pub namespace: Cow<'a, str>,
    /// Annotations (the GPU class).
    #[serde(borrow, default)]
    pub annotations: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

/// Spec fields the quota reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec<'a> {
    /// Containers.
    #[serde(borrow, default)]
    pub containers: Vec<Container<'a>>,
    /// Init containers (sidecars among them).
    #[serde(borrow, default)]
    pub init_containers: Vec<Container<'a>>,
    /// Node selector.
    #[serde(borrow, default)]
    pub node_selector: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
    /// Affinity.
    #[serde(borrow, default)]
    pub affinity: Option<Affinity<'a>>,
}

/// A container's name and resources.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container<'a> {
    /// Name.
    #[serde(borrow, default)]
    pub name: Cow<'a, str>,
    /// Resources.
    #[serde(borrow, default)]
    pub resources: Resources<'a>,
    /// `Always` makes an init container a sidecar.
    #[serde(borrow, default)]
    pub restart_policy: Option<Cow<'a, str>>,
}

/// Requests and limits, as quantity text.
#[derive(Debug, Default, Deserialize)]
pub struct Resources<'a> {
    /// Requests.
    #[serde(borrow, default)]
    pub requests: BTreeMap<Cow<'a, str>, Amount<'a>>,
    /// Limits.
    #[serde(borrow, default)]
    pub limits: BTreeMap<Cow<'a, str>, Amount<'a>>,
}

/// A quantity as JSON writes it: text (`"2"`), or a number from hand-written
/// manifests.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Amount<'a> {
    /// `"2"`.
    Text(#[serde(borrow)] Cow<'a, str>),
    /// `2`.
    Number(f64),
}

impl Amount<'_> {
    /// Whole units, rounded up (devices are whole; `0.5` would be refused
    /// by the apiserver anyway).
    pub fn units(&self) -> Option<u64> {
        let value = match self {
            Amount::Text(text) => quantity::parse(text)?,
            Amount::Number(number) => *number,
        };
        (value >= 0.0).then(|| value.ceil() as u64)
    }
}

/// Affinity: only node affinity matters here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity<'a> {
    /// Node affinity.
    #[serde(borrow, default)]
    pub node_affinity: Option<NodeAffinity<'a>>,
}

/// Required node affinity.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinity<'a> {
    /// The hard requirement.
    #[serde(borrow, default)]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector<'a>>,
}

/// Terms, any of which may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector<'a> {
    /// The terms.
    #[serde(borrow, default)]
    pub node_selector_terms: Vec<Term<'a>>,
}

/// Requirements that must all hold.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Term<'a> {
    /// Label requirements.
    #[serde(borrow, default)]
    pub match_expressions: Vec<Expression<'a>>,
}

/// One node label requirement.
#[derive(Debug, Default, Deserialize)]
pub struct Expression<'a> {
    /// Label.
    #[serde(borrow, default)]
    pub key: Cow<'a, str>,
    /// Operator.
    #[serde(borrow, default)]
    pub operator: Cow<'a, str>,
    /// Values.
    #[serde(borrow, default)]
    pub values: Vec<Cow<'a, str>>,
}

/// The phase.
#[derive(Debug, Default, Deserialize)]
pub struct Status<'a> {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(borrow, default)]
    pub phase: Option<Cow<'a, str>>,
}

/// Amounts per resource.
pub type Asks = BTreeMap<String, u64>;

impl Pod<'_> {
    /// Whether the pod holds its resources: not once it has succeeded or
    /// failed.
    pub fn holds_resources(&self) -> bool {
        !matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// What the pod asks of the counted resources, as the scheduler counts
    /// it: the larger of what runs together (containers and sidecars) and
    /// the largest init step (an init container with the sidecars started
    /// before it). Requests default to limits.
    pub fn asks(&self, settings: &Settings) -> Asks {
        let amounts = |c: &Container<'_>| -> Asks {
            let mut asks = Asks::new();
            for (resource, amount) in c.resources.limits.iter().chain(&c.resources.requests) {
                if settings.counts(resource) {
                    // Requests come second and win over limits.
                    asks.insert(resource.to_string(), amount.units().unwrap_or(0));
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
        for container in &self.spec.containers {
            add(&mut running, &amounts(container));
        }
        let mut sidecars = Asks::new();
        let mut peak = Asks::new();
        for init in &self.spec.init_containers {
            let own = amounts(init);
            if init.restart_policy.as_deref() == Some("Always") {
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

    /// The GPU products the pod may run on: from its node selector, else
    /// from required node affinity (every product any term allows), else
    /// from its GPU class annotation. Empty when it does not say (it then
    /// counts against no per-product limit).
    pub fn products(&self, settings: &Settings) -> Vec<String> {
        if let Some(product) = self.spec.node_selector.get(settings.product_label.as_str()) {
            return vec![product.to_string()];
        }
        let terms = self
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|s| s.node_selector_terms.as_slice())
            .unwrap_or_default();
        let mut products = Vec::new();
        for term in terms {
            let named = term
                .match_expressions
                .iter()
                .find(|e| e.key == settings.product_label && e.operator == "In");
            match named {
                Some(expression) => {
                    products.extend(expression.values.iter().map(|v| v.to_string()))
                }
                // A term that allows any product: the pod may land anywhere.
                None => return Vec::new(),
            }
        }
        if products.is_empty()
            && let Some(class) = self
                .metadata
                .annotations
                .get(settings.class_annotation.as_str())
            && let Some(product) = settings.classes.get(class.as_ref())
        {
            products.push(product.clone());
        }
        products.sort();
        products.dedup();
        products
    }

    /// Containers whose counted requests and limits differ (or that set
    /// requests without limits): `(container, resource, request, limit)`.
    pub fn unequal_requests(&self, settings: &Settings) -> Vec<(String, String, String, String)> {
        let mut found = Vec::new();
        for c in self
            .spec
            .init_containers
            .iter()
            .chain(&self.spec.containers)
        {
            let resources = &c.resources;
            for (resource, request) in &resources.requests {
                if !settings.counts(resource) {
                    continue;
                }
                let limit = resources.limits.get(resource);
                if limit.and_then(Amount::units) != request.units() {
                    found.push((
                        c.name.to_string(),
                        resource.to_string(),
                        text(Some(request)),
                        text(limit),
                    ));
                }
            }
        }
        found
    }
}

fn text(amount: Option<&Amount<'_>>) -> String {
    match amount {
        Some(Amount::Text(t)) => t.to_string(),
        Some(Amount::Number(n)) => n.to_string(),
        None => "unset".into(),
    }
}

/// The name of a product-qualified resource (`nvidia.com/gpu@NVIDIA-H100-80GB-HBM3`).
pub fn on_product(resource: &str, product: &str) -> String {
    format!("{resource}@{product}")
}
