//! The shared ledger's storage in the apiserver: one ConfigMap per scope,
//! its reservations and grants as JSON under two data keys.

use std::collections::BTreeMap;

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde::de::DeserializeOwned;

use super::{Backend, Error, Seen, Versioned};

/// ConfigMaps in one namespace, through kube-rs.
pub struct ConfigMaps {
    api: Api<ConfigMap>,
    namespace: String,
}

/// The data key holding the reservations' JSON.
const RESERVATIONS: &str = "reservations";

/// The data key holding the grants' JSON.
const GRANTS: &str = "grants";

/// The annotation naming a ConfigMap's scope.
const SCOPE_ANNOTATION: &str = "tollgate.dev/quota-scope";

/// The annotation naming the replica whose presence a ConfigMap holds.
const REPLICA_ANNOTATION: &str = "tollgate.dev/quota-replica";

/// The data key holding a presence's expiry.
const EXPIRES: &str = "expiresMs";

/// The label every ledger ConfigMap carries, to list them.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "tollgate");

impl ConfigMaps {
    /// ConfigMaps in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        ConfigMaps {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    fn name(scope: &str) -> String {
        format!("tollgate-quota-{}", Self::digest(scope))
    }

    /// The name of `replica`'s presence.
    fn presence(replica: &str) -> String {
        format!("tollgate-quota-replica-{}", Self::digest(replica))
    }

    /// A short digest of `text`, valid in a name.
    fn digest(text: &str) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(text.as_bytes())[..10])
    }

    /// The metadata of a ledger ConfigMap named `name`, annotated `key:
    /// value`.
    fn metadata(name: &str, key: &str, value: &str, version: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            resource_version: version.map(str::to_owned),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(key.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        }
    }

    /// The replica whose presence a ConfigMap holds.
    fn replica(map: &ConfigMap) -> Option<String> {
        map.metadata
            .annotations
            .as_ref()?
            .get(REPLICA_ANNOTATION)
            .cloned()
    }

    /// The label selector of every ledger ConfigMap.
    fn selector() -> String {
        format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
    }

    /// The scope a ledger ConfigMap holds.
    fn scope(map: &ConfigMap) -> Option<String> {
        map.metadata
            .annotations
            .as_ref()?
            .get(SCOPE_ANNOTATION)
            .cloned()
    }

    /// A stored ConfigMap as the watch tells it: `None` when it holds
    /// neither a scope nor a presence.
    fn seen(map: ConfigMap) -> Option<Seen> {
        if let Some(replica) = Self::replica(&map) {
            let expires = map.data.as_ref().and_then(|d| d.get(EXPIRES));
            let expires_ms = expires.and_then(|e| e.parse().ok())?;
            return Some(Seen::Present {
                replica,
                expires_ms,
            });
        }
        let scope = Self::scope(&map)?;
        let name = map.metadata.name.clone().unwrap_or_default();
        Some(match Self::versioned(map, name) {
            Ok(state) => Seen::Stored(scope, state),
            Err(_) => Seen::Unreadable(scope),
        })
    }

    /// A stored ConfigMap's reservations and grants.
    fn versioned(map: ConfigMap, name: String) -> Result<Versioned, Error> {
        fn list<T: DeserializeOwned>(
            map: &ConfigMap,
            key: &'static str,
            name: &str,
        ) -> Result<Vec<T>, Error> {
            let text = map.data.as_ref().and_then(|d| d.get(key));
            serde_json::from_str(text.map_or("[]", String::as_str)).map_err(|source| {
                Error::Corrupt {
                    name: name.to_owned(),
                    key,
                    source,
                }
            })
        }
        Ok(Versioned {
            reservations: list(&map, RESERVATIONS, &name)?,
            grants: list(&map, GRANTS, &name)?,
            version: map.metadata.resource_version,
        })
    }
}

/// Whether kube-rs's error is the apiserver's answer `code`.
fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl Backend for ConfigMaps {
    fn watch(&self) -> impl Stream<Item = Seen> + Send + 'static {
        let config = watcher::Config::default()
            .labels(&Self::selector())
            .any_semantic();
        let namespace = self.namespace.clone();
        watcher(self.api.clone(), config)
            .default_backoff()
            .filter_map(move |event| {
                let seen = match event {
                    Ok(watcher::Event::Init) => Some(Seen::Listing),
                    Ok(watcher::Event::InitApply(map) | watcher::Event::Apply(map)) => {
                        Self::seen(map)
                    }
                    Ok(watcher::Event::InitDone) => Some(Seen::Listed),
                    Ok(watcher::Event::Delete(map)) => match Self::replica(&map) {
                        Some(replica) => Some(Seen::Departed(replica)),
                        None => Self::scope(&map).map(|scope| Seen::Gone {
                            scope,
                            version: map.metadata.resource_version,
                        }),
                    },
                    Err(source) => Some(Seen::Broken(Error::Watch {
                        namespace: namespace.clone(),
                        source,
                    })),
                };
                std::future::ready(seen)
            })
    }

    async fn load(&self, scope: &str) -> Result<Versioned, Error> {
        let name = Self::name(scope);
        let found = self.api.get_opt(&name).await.map_err(|source| Error::Api {
            action: "reading",
            name: name.clone(),
            source,
        })?;
        match found {
            Some(map) => Self::versioned(map, name),
            None => Ok(Versioned::default()),
        }
    }

    async fn store(&self, scope: &str, state: &Versioned) -> Result<Option<String>, Error> {
        let name = Self::name(scope);
        let expected = state.version.as_deref();
        let map = ConfigMap {
            metadata: Self::metadata(&name, SCOPE_ANNOTATION, scope, expected),
            data: Some(BTreeMap::from([
                (
                    RESERVATIONS.to_owned(),
                    serde_json::to_string(&state.reservations).expect("reservations serialize"),
                ),
                (
                    GRANTS.to_owned(),
                    serde_json::to_string(&state.grants).expect("grants serialize"),
                ),
            ])),
            ..ConfigMap::default()
        };
        let params = PostParams::default();
        let result = match expected {
            None => self.api.create(&params, &map).await,
            Some(_) => self.api.replace(&name, &params, &map).await,
        };
        match result {
            Ok(stored) => Ok(Some(stored.metadata.resource_version.unwrap_or_default())),
            // Changed, created, or deleted (by the sweep) meanwhile.
            Err(error) if is_status(&error, 409) || is_status(&error, 404) => Ok(None),
            Err(source) => Err(Error::Api {
                action: "writing",
                name,
                source,
            }),
        }
    }

    async fn scopes(&self) -> Result<Vec<(String, Versioned)>, Error> {
        let list = self
            .api
            .list(&ListParams::default().labels(&Self::selector()))
            .await
            .map_err(|source| Error::Api {
                action: "listing",
                name: format!("in namespace {}", self.namespace),
                source,
            })?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|map| {
                let scope = Self::scope(&map)?;
                let name = map.metadata.name.clone().unwrap_or_default();
                // One that cannot be read is left for a person to look at.
                Some((scope, Self::versioned(map, name).ok()?))
            })
            .collect())
    }

    async fn delete(&self, scope: &str, version: &str) -> Result<(), Error> {
        let name = Self::name(scope);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(version.to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(&name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 409) || is_status(&error, 404) => Ok(()),
            Err(source) => Err(Error::Api {
                action: "deleting",
                name,
                source,
            }),
        }
    }

    async fn announce(&self, replica: &str, expires_ms: u64) -> Result<(), Error> {
        let name = Self::presence(replica);
        let map = ConfigMap {
            metadata: Self::metadata(&name, REPLICA_ANNOTATION, replica, None),
            data: Some(BTreeMap::from([(
                EXPIRES.to_owned(),
                expires_ms.to_string(),
            )])),
            ..ConfigMap::default()
        };
        let params = PostParams::default();
        let failed = |source| Error::Api {
            action: "writing",
            name: name.clone(),
            source,
        };
        // A replace without a version is unconditional; the first one
        // creates.
        match self.api.replace(&name, &params, &map).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => self
                .api
                .create(&params, &map)
                .await
                .map(drop)
                .map_err(failed),
            Err(source) => Err(failed(source)),
        }
    }

    async fn withdraw(&self, replica: &str) -> Result<(), Error> {
        let name = Self::presence(replica);
        match self.api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(source) => Err(Error::Api {
                action: "deleting",
                name,
                source,
            }),
        }
    }
}
