//! Run a policy natively in `cargo test`: the same code paths as the Wasm
//! export glue (settings parsing, request parsing, dropping no-op
//! mutations), without building a component. Context-aware policies run
//! inside [`with_host`] with a [`Cluster`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::{Value, json};

use crate::quota::{Claim, Decision, Entry, Held, Usage};
use crate::selector::Selector;
use crate::{Policy, Result, Verdict};

/// Wraps an object in an AdmissionRequest for a CREATE in the object's
/// namespace, as JSON text.
pub fn review(object: Value) -> String {
    request("CREATE", object)
}

/// Wraps an object in an AdmissionRequest for `operation`, as JSON text.
pub fn request(operation: &str, object: Value) -> String {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    json!({
        "uid": "00000000-0000-0000-0000-000000000000",
        "kind": {"group": group, "version": version, "kind": object["kind"]},
        "name": object["metadata"]["name"],
        "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
        "operation": operation,
        "userInfo": {"username": "tester", "groups": ["system:authenticated"]},
        "object": object,
    })
    .to_string()
}

/// An AdmissionRequest for an UPDATE of `old` into `object`, as JSON text.
pub fn update(old: Value, object: Value) -> String {
    let mut request: Value =
        serde_json::from_str(&self::request("UPDATE", object)).expect("request is JSON");
    request["oldObject"] = old;
    request.to_string()
}

/// Validates settings as the host would at load.
///
/// # Errors
///
/// The policy's settings error.
pub fn validate_settings<P: Policy>(settings: &str) -> Result<(), String> {
    crate::run_validate_settings::<P>(settings)
}

/// Evaluates a request as the host would (settings validated first, then
/// prepared).
///
/// # Errors
///
/// A settings error or the policy's own error.
pub fn evaluate<P: Policy>(request: &str, settings: &str) -> Result<Verdict> {
    validate_settings::<P>(settings)?;
    crate::prepared::prepare::<P>(settings)?;
    crate::run_evaluate::<P>(request, settings)
}

/// What a policy's host calls reach natively: cluster reads and the quota
/// ledger. [`Cluster`] is the one the harness provides.
pub trait Host {
    /// `context.get`.
    fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, String>;
    /// `context.list`.
    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
    ) -> Result<String, String>;
    /// `quota.usage`.
    fn usage(&self, keys: &[String]) -> Result<Vec<Usage>, String>;
    /// `quota.reserve`.
    fn reserve(&self, claims: &[Claim]) -> Result<Decision, String>;
}

thread_local! {
    static HOST: RefCell<Option<Rc<dyn Host>>> = const { RefCell::new(None) };
}

/// Runs `f` against the host installed by [`with_host`].
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn host<R>(f: impl FnOnce(&dyn Host) -> Result<R, String>) -> Result<R, String> {
    let host = HOST.with(|h| h.borrow().clone());
    match host {
        Some(host) => f(host.as_ref()),
        None => {
            Err("no cluster context (in tests, run the policy inside testing::with_host)".into())
        }
    }
}

/// Runs `f` with `host` answering the policy's context and quota calls on
/// this thread.
pub fn with_host<R>(host: Rc<dyn Host>, f: impl FnOnce() -> R) -> R {
    let previous = HOST.with(|h| h.replace(Some(host)));
    let result = f();
    HOST.with(|h| *h.borrow_mut() = previous);
    result
}

/// An in-memory cluster for policy tests: objects to read, the index built
/// with the policy's own [`Policy::index`], and a ledger that holds what it
/// admitted (every reservation stays; the host's expire).
pub struct Cluster {
    objects: Vec<Value>,
    index: Vec<Entry>,
    reserved: RefCell<Vec<(String, String, u64)>>,
    dry_run: bool,
}

impl Cluster {
    /// A cluster with these objects, indexed by policy `P` with `settings`.
    ///
    /// # Panics
    ///
    /// When the settings do not parse or the policy cannot index an object:
    /// a broken test fixture.
    pub fn new<P: Policy>(objects: Vec<Value>, settings: &str) -> Self {
        let index = objects
            .iter()
            .flat_map(|o| crate::run_index::<P>(&o.to_string(), settings).expect("indexing"))
            .collect();
        Cluster {
            objects,
            index,
            reserved: RefCell::default(),
            dry_run: false,
        }
    }

    /// Makes reservations checks only, as for a dry-run request.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// What the ledger holds, as (scope, resource, amount).
    pub fn reserved(&self) -> Vec<(String, String, u64)> {
        self.reserved.borrow().clone()
    }

    fn selected(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> impl Iterator<Item = &Value> {
        self.objects.iter().filter(move |o| {
            o["apiVersion"] == api_version
                && o["kind"] == kind
                && (namespace.is_empty() || o["metadata"]["namespace"] == namespace)
        })
    }
}

impl Host for Cluster {
    fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, String> {
        Ok(self
            .selected(api_version, kind, namespace)
            .find(|o| o["metadata"]["name"] == name)
            .map(Value::to_string))
    }

    fn list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
    ) -> Result<String, String> {
        let selector = Selector::parse(selector)?;
        let items: Vec<&Value> = self
            .selected(api_version, kind, namespace)
            .filter(|o| selector.matches(|k| o["metadata"]["labels"][k].as_str()))
            .collect();
        Ok(serde_json::to_string(&items).expect("JSON values serialize"))
    }

    fn usage(&self, keys: &[String]) -> Result<Vec<Usage>, String> {
        let mut totals: BTreeMap<(&str, &str), (u64, u32)> = BTreeMap::new();
        for entry in self.index.iter().filter(|e| keys.contains(&e.key)) {
            let total = totals.entry((&entry.key, &entry.resource)).or_default();
            total.0 += entry.amount;
            total.1 += 1;
        }
        Ok(totals
            .into_iter()
            .map(|((key, resource), (amount, objects))| Usage {
                key: key.into(),
                resource: resource.into(),
                amount,
                objects,
            })
            .collect())
    }

    fn reserve(&self, claims: &[Claim]) -> Result<Decision, String> {
        let mut reserved = self.reserved.borrow_mut();
        let mut decision = Decision {
            admitted: true,
            held: Vec::new(),
        };
        for claim in claims {
            for (resource, ask) in &claim.asks {
                let held: u64 = reserved
                    .iter()
                    .filter(|(s, r, _)| *s == claim.scope && r == resource)
                    .map(|(_, _, a)| a)
                    .sum();
                if held > 0 {
                    decision.held.push(Held {
                        scope: claim.scope.clone(),
                        resource: resource.clone(),
                        amount: held,
                    });
                }
                let used = claim.usage.get(resource).copied().unwrap_or(0);
                if claim
                    .limits
                    .get(resource)
                    .is_some_and(|limit| used + held + ask > *limit)
                {
                    decision.admitted = false;
                }
            }
        }
        if decision.admitted && !self.dry_run {
            for claim in claims {
                for (resource, ask) in &claim.asks {
                    reserved.push((claim.scope.clone(), resource.clone(), *ask));
                }
            }
        }
        Ok(decision)
    }
}
