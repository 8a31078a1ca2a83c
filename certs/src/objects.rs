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
    objects: Mutex<Stored>,
    /// Kinds whose writes are refused, as RBAC would.
    refused: Mutex<Vec<Kind>>,
}

/// The last `resourceVersion` given, and the objects by kind and name.
type Stored = (u64, BTreeMap<(Kind, String), Value>);

impl Memory {
    /// Puts `object` in place as an outside writer would (a user's `kubectl
    /// edit`), with no version check.
    pub fn put(&self, kind: Kind, mut object: Value) {
        let mut objects = self.objects.lock().expect("objects lock poisoned");
        objects.0 += 1;
        object["metadata"]["resourceVersion"] = objects.0.to_string().into();
        objects.1.insert((kind, name_of(&object)), object);
    }

    /// Refuses writes of `kind` from now on (a missing RBAC grant).
    pub fn refuse_writes(&self, kind: Kind) {
        self.refused
            .lock()
            .expect("refused lock poisoned")
            .push(kind);
    }

    fn check_allowed(&self, kind: Kind, name: &str) -> Result<(), Error> {
        if self
            .refused
            .lock()
            .expect("refused lock poisoned")
            .contains(&kind)
        {
            return Err(Error::Api {
                kind,
                name: name.to_owned(),
                message: "forbidden".into(),
            });
        }
        Ok(())
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
        self.check_allowed(kind, &name)?;
        if self.peek(kind, &name).is_some() {
            return Err(Error::Conflict(kind, name));
        }
        self.put(kind, object);
        Ok(self.peek(kind, &name).expect("just stored"))
    }

    async fn replace(&self, kind: Kind, object: Value) -> Result<Value, Error> {
        let name = name_of(&object);
        self.check_allowed(kind, &name)?;
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

#[cfg(test)]
mod tests {
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::json;

    use super::*;

    /// The apiserver's side of one exchange: the request's method, path and
    /// body, answered with `status` and `answer`.
    async fn exchange(
        handle: &mut tower_test::mock::Handle<Request<Body>, Response<Body>>,
        status: StatusCode,
        answer: Value,
    ) -> (Method, String, Value) {
        let (request, respond) = handle.next_request().await.expect("a request");
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap(),
        );
        (method, path, body)
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": reason, "reason": reason, "code": code})
    }

    #[tokio::test]
    async fn the_kube_objects_speak_the_apiservers_protocol() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let objects = Kube::new(kube::Client::new(service, "default"), "tollgate-system");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tollgate-certs", "resourceVersion": "7"},
            "spec": {"holderIdentity": "tollgate-a"}});
        let apiserver = tokio::spawn(async move {
            let missing =
                exchange(&mut handle, StatusCode::NOT_FOUND, status(404, "NotFound")).await;
            let exists = exchange(
                &mut handle,
                StatusCode::CONFLICT,
                status(409, "AlreadyExists"),
            )
            .await;
            let mut stored = lease.clone();
            stored["metadata"]["resourceVersion"] = "8".into();
            let replaced = exchange(&mut handle, StatusCode::OK, stored).await;
            let stale = exchange(&mut handle, StatusCode::CONFLICT, status(409, "Conflict")).await;
            let forbidden =
                exchange(&mut handle, StatusCode::FORBIDDEN, status(403, "Forbidden")).await;
            (missing, exists, replaced, stale, forbidden)
        });

        assert!(
            objects
                .get(Kind::Secret, "tollgate-certs")
                .await
                .unwrap()
                .is_none()
        );
        let secret =
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tollgate-certs"}});
        assert!(matches!(
            objects.create(Kind::Secret, secret).await,
            Err(Error::Conflict(Kind::Secret, name)) if name == "tollgate-certs"
        ));
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "tollgate-certs", "resourceVersion": "7"},
            "spec": {"holderIdentity": "tollgate-b"}});
        let written = objects.replace(Kind::Lease, lease.clone()).await.unwrap();
        assert_eq!(written["metadata"]["resourceVersion"], "8");
        assert!(matches!(
            objects.replace(Kind::Lease, lease).await,
            Err(Error::Conflict(Kind::Lease, _))
        ));
        let error = objects
            .get(Kind::MutatingWebhookConfiguration, "tollgate")
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Api { .. }), "{error}");

        let (missing, exists, replaced, _, forbidden) = apiserver.await.unwrap();
        assert_eq!(
            (missing.0, missing.1.as_str()),
            (
                Method::GET,
                "/api/v1/namespaces/tollgate-system/secrets/tollgate-certs"
            )
        );
        assert_eq!(
            (exists.0, exists.1.as_str()),
            (Method::POST, "/api/v1/namespaces/tollgate-system/secrets")
        );
        assert_eq!(
            (replaced.0, replaced.1.as_str()),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases/tollgate-certs"
            )
        );
        // The write is a compare-and-swap on the version read.
        assert_eq!(replaced.2["metadata"]["resourceVersion"], "7");
        assert_eq!(replaced.2["spec"]["holderIdentity"], "tollgate-b");
        // Webhook configurations are cluster-scoped.
        assert_eq!(
            forbidden.1,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/tollgate"
        );
    }
}
