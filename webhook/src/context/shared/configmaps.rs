//! The shared ledger's storage in the apiserver: one ConfigMap per scope,
//! its reservations and grants as JSON under two data keys.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use serde::de::DeserializeOwned;

use super::{Backend, Error, Versioned};

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
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(scope.as_bytes())[..10]);
        format!("tollgate-quota-{digest}")
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
            metadata: ObjectMeta {
                name: Some(name.clone()),
                resource_version: expected.map(str::to_owned),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([(
                    SCOPE_ANNOTATION.to_owned(),
                    scope.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
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
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let list = self
            .api
            .list(&ListParams::default().labels(&selector))
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
                let scope = map
                    .metadata
                    .annotations
                    .as_ref()?
                    .get(SCOPE_ANNOTATION)?
                    .clone();
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
}
