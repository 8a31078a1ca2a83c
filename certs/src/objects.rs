//! The few apiserver objects the lifecycle reads and writes, behind one
//! trait: [`Kube`] talks to the cluster, [`Memory`] holds them in a map for
//! tests, with the apiserver's optimistic concurrency (a replace whose
//! `resourceVersion` is stale is a conflict).

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::Value;

/// The kinds the lifecycle touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `v1` Secret, in the lifecycle's namespace.
    Secret,
    /// `coordination.k8s.io/v1` Lease, in the lifecycle's namespace.
    Lease,
    /// `admissionregistration.k8s.io/v1` MutatingWebhookConfiguration.
    MutatingWebhookConfiguration,
    /// `admissionregistration.k8s.io/v1` ValidatingWebhookConfiguration.
    ValidatingWebhookConfiguration,
}

impl Kind {
    fn gvk(self) -> GroupVersionKind {
        match self {
            Kind::Secret => GroupVersionKind::gvk("", "v1", "Secret"),
            Kind::Lease => GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
            Kind::MutatingWebhookConfiguration => GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "MutatingWebhookConfiguration",
            ),
            Kind::ValidatingWebhookConfiguration => GroupVersionKind::gvk(
                "admissionregistration.k8s.io",
                "v1",
                "ValidatingWebhookConfiguration",
            ),
        }
    }

    fn namespaced(self) -> bool {
        matches!(self, Kind::Secret | Kind::Lease)
    }
}

/// Why a read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer got there first (exists on create, or a stale
    /// `resourceVersion` on replace): read again and retry.
    #[error("{0:?} {1}: changed by another writer")]
    Conflict(Kind, String),
    /// The apiserver refused or could not be reached.
    #[error("{kind:?} {name}: {message}")]
    Api {
        /// The kind.
        kind: Kind,
        /// The object's name.
        name: String,
        /// What the apiserver (or the connection) said.
        message: String,
    },
}

/// Objects by kind and name: get, create, replace.
pub trait Objects: Send + Sync {
    /// The object, or `None` when there is none.
    fn get(
        &self,
        kind: Kind,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, Error>> + Send;
    /// Creates `object`; a [`Error::Conflict`] when it exists.
    fn create(
        &self,
        kind: Kind,
        object: Value,
    ) -> impl Future<Output = Result<Value, Error>> + Send;
    /// Replaces `object` if its `metadata.resourceVersion` is current; a
    /// [`Error::Conflict`] if not.
    fn replace(
        &self,
        kind: Kind,
        object: Value,
    ) -> impl Future<Output = Result<Value, Error>> + Send;
}

impl<T: Objects> Objects for &T {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>, Error> {
        (**self).get(kind, name).await
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        (**self).create(kind, object).await
    }

    async fn replace(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        (**self).replace(kind, object).await
    }
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Objects in a map, as an apiserver keeps them: every write gets a new
/// `resourceVersion`.
#[derive(Debug, Default)]
pub struct Memory {
    objects: Mutex<(u64, BTreeMap<(Kind, String), Value>)>,
}

impl Memory {
    /// Puts `object` in place as an outside writer would (a user's `kubectl
    /// edit`), with no version check.
    pub fn put(&self, kind: Kind, mut object: Value) {
        let mut objects = self.objects.lock().expect("objects lock poisoned");
        objects.0 += 1;
        object["metadata"]["resourceVersion"] = objects.0.to_string().into();
        objects.1.insert((kind, name_of(&object)), object);
    }

    /// The stored object, if any.
    pub fn peek(&self, kind: Kind, name: &str) -> Option<Value> {
        let objects = self.objects.lock().expect("objects lock poisoned");
        objects.1.get(&(kind, name.to_owned())).cloned()
    }
}

impl Objects for Memory {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>, Error> {
        Ok(self.peek(kind, name))
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let name = name_of(&object);
        if self.peek(kind, &name).is_some() {
            return Err(Error::Conflict(kind, name));
        }
        self.put(kind, object);
        Ok(self.peek(kind, &name).expect("just stored"))
    }

    async fn replace(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let name = name_of(&object);
        {
            let objects = self.objects.lock().expect("objects lock poisoned");
            let current = objects.1.get(&(kind, name.clone()));
            let version = |o: &Value| o["metadata"]["resourceVersion"].as_str().map(str::to_owned);
            if current.map(version) != Some(version(&object)) {
                return Err(Error::Conflict(kind, name));
            }
        }
        self.put(kind, object);
        Ok(self.peek(kind, &name).expect("just stored"))
    }
}

/// Objects in a cluster, through kube-rs.
#[derive(Clone)]
pub struct Kube {
    client: kube::Client,
    namespace: String,
}

impl Kube {
    /// Objects through `client`; Secrets and Leases in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Kube {
            client,
            namespace: namespace.to_owned(),
        }
    }

    fn api(&self, kind: Kind) -> Api<DynamicObject> {
        let resource = ApiResource::from_gvk(&kind.gvk());
        if kind.namespaced() {
            Api::namespaced_with(self.client.clone(), &self.namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }
}

fn api_error(kind: Kind, name: &str, error: kube::Error) -> Error {
    match error {
        kube::Error::Api(status) if status.code == 409 => Error::Conflict(kind, name.to_owned()),
        other => Error::Api {
            kind,
            name: name.to_owned(),
            message: other.to_string(),
        },
    }
}

fn to_dynamic(kind: Kind, object: Value) -> Result<DynamicObject, Error> {
    let name = name_of(&object);
    serde_json::from_value(object).map_err(|e| Error::Api {
        kind,
        name,
        message: format!("not an object: {e}"),
    })
}

fn to_value(kind: Kind, object: &DynamicObject) -> Result<Value, Error> {
    serde_json::to_value(object).map_err(|e| Error::Api {
        kind,
        name: object.metadata.name.clone().unwrap_or_default(),
        message: e.to_string(),
    })
}

impl Objects for Kube {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Value>, Error> {
        let found = self
            .api(kind)
            .get_opt(name)
            .await
            .map_err(|e| api_error(kind, name, e))?;
        found.map(|object| to_value(kind, &object)).transpose()
    }

    async fn create(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let name = name_of(&object);
        let object = to_dynamic(kind, object)?;
        let created = self
            .api(kind)
            .create(&PostParams::default(), &object)
            .await
            .map_err(|e| api_error(kind, &name, e))?;
        to_value(kind, &created)
    }

    async fn replace(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let name = name_of(&object);
        let object = to_dynamic(kind, object)?;
        let replaced = self
            .api(kind)
            .replace(&name, &PostParams::default(), &object)
            .await
            .map_err(|e| api_error(kind, &name, e))?;
        to_value(kind, &replaced)
    }
}
