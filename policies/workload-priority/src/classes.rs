//! PriorityClasses, read from the cluster context once per request.

use std::collections::BTreeMap;

use serde::Deserialize;
use tollgate_sdk::{Result, context};

const API_VERSION: &str = "scheduling.k8s.io/v1";

/// A PriorityClass as the policy reads it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriorityClass {
    /// Its metadata (the name).
    #[serde(default)]
    pub metadata: Metadata,
    /// The priority of pods that name it.
    #[serde(default)]
    pub value: i32,
    /// Whether pods that name no class get it.
    #[serde(default)]
    pub global_default: bool,
    /// `PreemptLowerPriority` (the default) or `Never`.
    #[serde(default)]
    pub preemption_policy: Option<String>,
}

/// Object metadata: the name.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    /// `metadata.name`.
    #[serde(default)]
    pub name: String,
}

impl PriorityClass {
    /// `preemptionPolicy` as the apiserver defaults it.
    pub fn preemption_policy(&self) -> &str {
        self.preemption_policy
            .as_deref()
            .unwrap_or("PreemptLowerPriority")
    }

    /// Whether pods of this class may preempt others.
    pub fn preempts(&self) -> bool {
        self.preemption_policy() != "Never"
    }
}

/// The classes this request has read.
#[derive(Default)]
pub struct Classes {
    by_name: BTreeMap<String, Option<PriorityClass>>,
    all: Option<Vec<PriorityClass>>,
}

impl Classes {
    /// The class named `name`, or `None` when the cluster has none.
    pub fn get(&mut self, name: &str) -> Result<Option<&PriorityClass>> {
        if !self.by_name.contains_key(name) {
            let class = match &self.all {
                Some(all) => all.iter().find(|c| c.metadata.name == name).cloned(),
                None => context::get_as(API_VERSION, "PriorityClass", "", name)?,
            };
            self.by_name.insert(name.to_owned(), class);
        }
        Ok(self.by_name[name].as_ref())
    }

    /// Every class of the cluster.
    pub fn all(&mut self) -> Result<&[PriorityClass]> {
        if self.all.is_none() {
            self.all = Some(context::list_as(API_VERSION, "PriorityClass", "", "")?);
        }
        Ok(self.all.as_deref().unwrap_or_default())
    }

    /// The class pods that name none get: the cluster's global default.
    pub fn global_default(&mut self) -> Result<Option<PriorityClass>> {
        Ok(self.all()?.iter().find(|c| c.global_default).cloned())
    }

    /// The names of the classes that never preempt, for messages.
    pub fn never_preempting(&mut self) -> Result<Vec<String>> {
        Ok(self
            .all()?
            .iter()
            .filter(|c| !c.preempts() && !c.metadata.name.starts_with("system-"))
            .map(|c| c.metadata.name.clone())
            .collect())
    }
}
