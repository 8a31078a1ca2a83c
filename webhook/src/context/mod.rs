//! Read-only cluster state for context-aware policies, and the quota ledger.
//!
//! - [`store`]: the cache every read is served from: objects per kind and
//!   namespace, stripped of `managedFields`, with the policies' quota
//!   indexes kept up to date under the same lock.
//! - Two [`Provider`]s fill it: [`live`] (kube-rs watchers on the
//!   apiserver) and [`snapshot`] (manifest files, for `tollgate run`, tests
//!   and offline audits).
//! - [`ledger`]: the atomic check-and-reserve, in this process
//!   ([`ledger::Local`]) or shared by replicas through the apiserver
//!   ([`shared`]).
//! - [`Access`]: what one policy call may read and reserve, handed to the
//!   engine's host imports.

pub mod ledger;
pub mod live;
pub mod shared;
pub mod snapshot;
pub mod store;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

pub use ledger::{Claim, Decision, Ledger};
pub use store::{Entry, Indexer, ObjectKey, Store, Usage};

/// Why a read or reservation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no cluster context at all.
    #[error(
        "no cluster context: run tollgate with a kubeconfig or in-cluster service account, or give it manifests with --context PATH"
    )]
    NoContext,
    /// The policy may not read this kind.
    #[error(
        "{kind} is not granted to policy {policy:?}: add {{apiVersion: {api_version}, kind: {kind_name}}} to its `context` in the configuration",
        api_version = kind.api_version,
        kind_name = kind.kind
    )]
    NotGranted {
        /// The kind asked for.
        kind: Kind,
        /// The policy.
        policy: Arc<str>,
    },
    /// The label selector does not parse.
    #[error("{0}")]
    Selector(String),
    /// A list would not fit in the policy's memory.
    #[error(
        "listing {kind} gives more than {limit} bytes, more than the policy may read in one call: list one namespace or select by label"
    )]
    TooLarge {
        /// The kind listed.
        kind: Kind,
        /// The bytes the policy could still take.
        limit: usize,
    },
    /// The quota ledger could not answer.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
    /// An object the cache did not hold could not be read from the source.
    #[error("cannot read {kind} {name:?}: {message}")]
    Fetch {
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// Kinds whose first list is not in yet, or failed.
    #[error("cluster context not ready: {}", .0.join("; "))]
    Syncing(Vec<String>),
}

/// A kind as policies name it: `apiVersion` and `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kind {
    /// `v1`, `apps/v1`, …
    pub api_version: String,
    /// `Pod`, `Namespace`, …
    pub kind: String,
}

impl Kind {
    /// The kind from its two names.
    pub fn new(api_version: &str, kind: &str) -> Self {
        Kind {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// The core group's Namespace.
    pub fn namespace() -> Self {
        Kind::new("v1", "Namespace")
    }

    /// The API group (`""` for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.api_version, self.kind)
    }
}

/// Where cluster objects come from.
pub trait Provider: Send + Sync {
    /// Names the source, for logs and `/readyz`.
    fn describe(&self) -> String;

    /// Starts keeping these kinds in `store` (kinds already kept are left
    /// as they are).
    fn cache(&self, kinds: &[Kind], store: &Arc<Store>);

    /// Every kind it keeps, and how each is doing (`objects` left at 0:
    /// [`Context::kinds`] counts them in the store).
    fn kinds(&self) -> Vec<KindHealth>;

    /// Reads one object the cache does not hold (yet), by `deadline`;
    /// `None` when it does not exist.
    fn fetch(&self, kind: &Kind, namespace: &str, name: &str, deadline: Instant) -> Fetched<'_>;
}

/// What [`Provider::fetch`] gives: the object, `None` when it does not
/// exist, or why it could not be read.
pub type Fetched<'p> =
    std::pin::Pin<Box<dyn Future<Output = Result<Option<serde_json::Value>, String>> + Send + 'p>>;

/// Where one cached kind stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindState {
    /// Resolving the kind, or its first list is not in yet.
    Listing,
    /// Listed; watching.
    Synced,
    /// It cannot be listed (not served, or refused): reads of it fail, and
    /// the policies that read it apply their failurePolicy.
    Failed(String),
}

/// How one cached kind is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindHealth {
    /// The kind.
    pub kind: Kind,
    /// Where it stands.
    pub state: KindState,
    /// Objects cached.
    pub objects: usize,
    /// When its last list or watch event arrived.
    pub last_event: Option<std::time::Instant>,
    /// Lists so far (the first, then one per re-list after a broken watch).
    pub lists: u64,
    /// Failed lists and watches.
    pub errors: u64,
}

impl KindHealth {
    /// A kind in `state`, with no events yet.
    pub fn new(kind: Kind, state: KindState) -> Self {
        KindHealth {
            kind,
            state,
            objects: 0,
            last_event: None,
            lists: 0,
            errors: 0,
        }
    }
}

/// The process's cluster context: the cache, its provider (if any) and the
/// ledger.
pub struct Context {
    store: Arc<Store>,
    provider: Option<Box<dyn Provider>>,
    ledger: Box<dyn Ledger>,
}

impl Context {
    /// A context filled by `provider` (none: reads fail with a message that
    /// says how to give one), reserving through `ledger`.
    pub fn new(provider: Option<Box<dyn Provider>>, ledger: Box<dyn Ledger>) -> Self {
        Context {
            store: Arc::new(Store::default()),
            provider,
            ledger,
        }
    }

    /// No cluster context at all (commands that never read one).
    pub fn none() -> Self {
        Context::new(None, Box::new(ledger::Local::default()))
    }

    /// The cache.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Whether there is a provider.
    pub fn available(&self) -> bool {
        self.provider.is_some()
    }

    /// Starts caching `kinds`.
    ///
    /// # Errors
    ///
    /// [`Error::NoContext`] when there is no provider.
    pub fn cache(&self, kinds: &[Kind]) -> Result<(), Error> {
        let provider = self.provider.as_ref().ok_or(Error::NoContext)?;
        provider.cache(kinds, &self.store);
        Ok(())
    }

    /// One line for `/readyz`: the source and whether it is synced.
    ///
    /// # Errors
    ///
    /// What is missing or still loading.
    pub fn status(&self) -> Result<String, Error> {
        let provider = self.provider.as_ref().ok_or(Error::NoContext)?;
        let pending: Vec<String> = provider
            .kinds()
            .into_iter()
            .filter_map(|health| match health.state {
                KindState::Synced => None,
                KindState::Listing => Some(format!("{}: initial list in progress", health.kind)),
                KindState::Failed(error) => Some(format!("{}: {error}", health.kind)),
            })
            .collect();
        if !pending.is_empty() {
            return Err(Error::Syncing(pending));
        }
        Ok(format!(
            "cluster context: {} ({} objects)",
            provider.describe(),
            self.store.len()
        ))
    }

    /// The labels of `namespace`: from the cache, else read from the
    /// source (by `deadline`) and cached; a Namespace that does not exist
    /// has none.
    ///
    /// # Errors
    ///
    /// No context, or the read failed: the labels are unknown.
    pub async fn namespace_labels(
        &self,
        namespace: &str,
        deadline: Instant,
    ) -> Result<std::collections::BTreeMap<String, String>, Error> {
        let kind = Kind::namespace();
        if let Some(labels) = self.store.labels(&kind, "", namespace) {
            return Ok(labels);
        }
        let provider = self.provider.as_ref().ok_or(Error::NoContext)?;
        let fetched = provider
            .fetch(&kind, "", namespace, deadline)
            .await
            .map_err(|message| Error::Fetch {
                kind: kind.clone(),
                name: namespace.to_owned(),
                message,
            })?;
        let Some(value) = fetched else {
            return Ok(Default::default());
        };
        self.store.apply(store::Incoming {
            kind: kind.clone(),
            value,
        });
        Ok(self.store.labels(&kind, "", namespace).unwrap_or_default())
    }

    /// Every cached kind and how it is doing (none without a provider).
    pub fn kinds(&self) -> Vec<KindHealth> {
        let Some(provider) = &self.provider else {
            return Vec::new();
        };
        let mut kinds = provider.kinds();
        for health in &mut kinds {
            health.objects = self.store.count(&health.kind);
        }
        kinds
    }

    /// Releases what the request `uid` reserved (its admission was denied).
    pub fn release(&self, uid: &str) {
        self.ledger.release(uid);
    }
}

/// The object a request is about, as the ledger keys reservations.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The request's uid.
    pub uid: String,
    /// The object, when it has a name (it does by the time validating
    /// policies run: the apiserver generates names before them).
    pub object: Option<ObjectKey>,
    /// A dry run: checked, never reserved.
    pub dry_run: bool,
}

/// What one policy call may read and reserve.
pub struct Access {
    context: Arc<Context>,
    policy: Arc<str>,
    grants: Arc<[Kind]>,
    subject: Subject,
    /// The oldest cache generation this call has read; reservations of
    /// objects that appeared after it are still counted.
    seen: u64,
}

impl Access {
    /// Access for one call of `policy` about `subject`.
    pub fn new(
        context: Arc<Context>,
        policy: Arc<str>,
        grants: Arc<[Kind]>,
        subject: Subject,
    ) -> Self {
        Access {
            context,
            policy,
            grants,
            subject,
            seen: u64::MAX,
        }
    }

    fn granted(&self, api_version: &str, kind: &str) -> Result<Kind, Error> {
        if !self.context.available() {
            return Err(Error::NoContext);
        }
        self.grants
            .iter()
            .find(|k| k.api_version == api_version && k.kind == kind)
            .cloned()
            .ok_or_else(|| Error::NotGranted {
                kind: Kind::new(api_version, kind),
                policy: self.policy.clone(),
            })
    }

    fn saw(&mut self, generation: u64) {
        self.seen = self.seen.min(generation);
    }

    /// `context.get`.
    ///
    /// # Errors
    ///
    /// An ungranted kind, or no context.
    pub fn get(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, Error> {
        let kind = self.granted(api_version, kind)?;
        let (object, generation) = self.context.store.get(&kind, namespace, name);
        self.saw(generation);
        Ok(object.map(|o| o.to_string()))
    }

    /// `context.list`: at most `max_bytes` of JSON text.
    ///
    /// # Errors
    ///
    /// An ungranted kind, a malformed selector, a list over `max_bytes`, or
    /// no context.
    pub fn list(
        &mut self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        selector: &str,
        max_bytes: usize,
    ) -> Result<String, Error> {
        let kind = self.granted(api_version, kind)?;
        let selector =
            tollgate_sdk::selector::Selector::parse(selector).map_err(Error::Selector)?;
        let (list, generation) = self
            .context
            .store
            .list(&kind, namespace, &selector, max_bytes);
        self.saw(generation);
        list.ok_or(Error::TooLarge {
            kind,
            limit: max_bytes,
        })
    }

    /// `quota.usage`.
    ///
    /// # Errors
    ///
    /// No context.
    pub fn usage(&mut self, keys: &[String]) -> Result<Vec<Usage>, Error> {
        if !self.context.available() {
            return Err(Error::NoContext);
        }
        let (usage, generation) =
            self.context
                .store
                .usage(&self.policy, keys, self.subject.object.as_ref());
        self.saw(generation);
        Ok(usage)
    }

    /// `quota.reserve`: scopes are the policy's own (prefixed with its
    /// name); the ledger's I/O ends by `deadline`.
    ///
    /// # Errors
    ///
    /// No context, or the ledger's error.
    pub async fn reserve(&self, claims: &[Claim], deadline: Instant) -> Result<Decision, Error> {
        if !self.context.available() {
            return Err(Error::NoContext);
        }
        // A call that read nothing computed its usage from nothing: every
        // reservation counts.
        let seen = if self.seen == u64::MAX { 0 } else { self.seen };
        let request = ledger::Request {
            policy: &self.policy,
            claims,
            subject: &self.subject,
            seen,
            store: &self.context.store,
            deadline,
        };
        Ok(self.context.ledger.reserve(request).await?)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::snapshot::Snapshot;
    use super::store::Incoming;
    use super::*;
    use crate::policy::{PolicySet, Request};
    use crate::test_support::policy_set_with;

    const CONFIG: &str = r#"
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    match: {kinds: [Pod], operations: [CREATE]}
    context: [{apiVersion: v1, kind: Pod}, {apiVersion: v1, kind: Namespace}]
    settings:
      scopes:
        - name: teams
          namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
          aggregate: team
          limits: {nvidia.com/gpu: 8}
"#;

    fn pod(namespace: &str, name: &str, gpus: u64) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "nvcr.io/x:1",
                "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
            "status": {"phase": "Running"}})
    }

    fn request_of(object: &Value) -> String {
        json!({"uid": format!("uid-{}", object["metadata"]["name"].as_str().unwrap()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
            "namespace": object["metadata"]["namespace"], "name": object["metadata"]["name"],
            "userInfo": {"username": "alice"}, "object": object})
        .to_string()
    }

    fn admit(set: &PolicySet, object: &Value) -> crate::policy::Outcome {
        let text = request_of(object);
        futures::executor::block_on(set.validate(
            &Request::parse(&text).unwrap(),
            crate::policy::chain::no_deadline(),
        ))
    }

    fn set_over(objects: &[Value]) -> PolicySet {
        let dir = tempfile::tempdir().unwrap();
        let text: Vec<String> = objects.iter().map(Value::to_string).collect();
        std::fs::write(dir.path().join("cluster.yaml"), text.join("\n---\n")).unwrap();
        let snapshot = Snapshot::load(&[dir.path().to_owned()]).unwrap();
        let context = Context::new(Some(Box::new(snapshot)), Box::new(ledger::Local::default()));
        policy_set_with(CONFIG, Arc::new(context))
    }

    fn namespace(name: &str, team: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": team}}})
    }

    #[test]
    fn the_quota_policy_reads_its_index_through_the_engine() {
        let set = set_over(&[
            namespace("vision-a", "vision"),
            namespace("vision-b", "vision"),
            pod("vision-a", "a", 3),
            pod("vision-b", "b", 2),
        ]);
        let denied = admit(&set, &pod("vision-a", "big", 4));
        assert!(!denied.allowed);
        assert_eq!(
            denied.message.as_deref(),
            Some(
                "gpu-quota: team \"vision\" would use 9 nvidia.com/gpu, limit 8: 5 in use by 2 pods in namespaces vision-a, vision-b; this pod asks 4 (quota scope \"teams\")"
            )
        );
        let admitted = admit(&set, &pod("vision-b", "fits", 3));
        assert!(admitted.allowed, "{:?}", admitted.message);
        assert_eq!(
            admitted.audit_annotations,
            vec![(
                "gpu-quota.usage".to_owned(),
                "team \"vision\" 8/8 nvidia.com/gpu".to_owned()
            )]
        );
        // The admitted pod shows up in the cache: its reservation gives way to
        // the index, and the total stays 8, not 11.
        set.context().store().apply(Incoming {
            kind: Kind::new("v1", "Pod"),
            value: pod("vision-b", "fits", 3),
        });
        let one_more = admit(&set, &pod("vision-a", "one", 1));
        assert_eq!(
            one_more.message.as_deref(),
            Some(
                "gpu-quota: team \"vision\" would use 9 nvidia.com/gpu, limit 8: 8 in use by 3 pods in namespaces vision-a, vision-b; this pod asks 1 (quota scope \"teams\")"
            )
        );
        // Evaluated again once cached (as the scanner does), a pod is not
        // counted against itself: 5 others + its own 3 fit in 8.
        assert!(admit(&set, &pod("vision-b", "fits", 3)).allowed);
        // A pod that ends frees its GPUs.
        let mut ended = pod("vision-a", "a", 3);
        ended["status"]["phase"] = json!("Succeeded");
        set.context().store().apply(Incoming {
            kind: Kind::new("v1", "Pod"),
            value: ended,
        });
        assert!(admit(&set, &pod("vision-a", "one", 1)).allowed);
    }

    #[test]
    fn reads_outside_the_grants_or_without_context_fail_per_failure_policy() {
        let no_context = policy_set_with(CONFIG, Arc::new(Context::none()));
        let outcome = admit(&no_context, &pod("vision-a", "p", 1));
        assert!(!outcome.allowed);
        assert!(
            outcome
                .message
                .as_deref()
                .unwrap()
                .contains("no cluster context: run tollgate with a kubeconfig"),
            "{:?}",
            outcome.message
        );
        let context = Arc::new(Context::new(
            Some(Box::new(Snapshot::load(&[]).unwrap())),
            Box::new(ledger::Local::default()),
        ));
        let mut access = Access::new(
            context,
            "p".into(),
            vec![Kind::new("v1", "Pod")].into(),
            Subject {
                uid: "u".into(),
                object: None,
                dry_run: false,
            },
        );
        assert_eq!(
            access
                .get("v1", "Secret", "ml", "token")
                .unwrap_err()
                .to_string(),
            "v1/Secret is not granted to policy \"p\": add {apiVersion: v1, kind: Secret} to its `context` in the configuration"
        );
        assert!(access.list("v1", "Pod", "", "team=", 1 << 20).is_ok());
        assert!(
            access
                .list("v1", "Pod", "", "team in x", 1 << 20)
                .unwrap_err()
                .to_string()
                .contains("parentheses")
        );
    }
}
