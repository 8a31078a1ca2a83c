//! Cluster objects from the apiserver: one kube-rs watcher per cached kind
//! (a list, then a watch, re-listed with backoff when the watch breaks).
//!
//! The watchers feed [`Store`] rather than kube-rs's own reflector store: the
//! events are the same (`Init`, `InitApply`…, `InitDone`, then `Apply` and
//! `Delete`, applied as `reflector::store::Writer` applies them), but reads
//! here are per namespace and quota indexes must change under the same lock
//! as the objects, which a `reflector::Store` (one map per kind) cannot do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::Value;

use super::store::Incoming;
use super::{Fetched, Kind, KindHealth, KindState, ObjectKey, Provider, Store};

/// Watchers on a cluster.
pub struct Live {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    kinds: Arc<Mutex<BTreeMap<Kind, KindHealth>>>,
}

impl Live {
    /// Watchers through `client`, spawned on `runtime`.
    pub fn new(client: kube::Client, runtime: tokio::runtime::Handle) -> Self {
        Live {
            client,
            runtime,
            kinds: Arc::default(),
        }
    }
}

impl Provider for Live {
    fn describe(&self) -> String {
        "live cluster".into()
    }

    fn cache(&self, kinds: &[Kind], store: &Arc<Store>) {
        let mut states = self.kinds.lock().expect("watchers lock poisoned");
        for kind in kinds {
            if states.contains_key(kind) {
                continue;
            }
            states.insert(
                kind.clone(),
                KindHealth::new(kind.clone(), KindState::Listing),
            );
            let watch = Watch {
                client: self.client.clone(),
                kind: kind.clone(),
                store: store.clone(),
                states: self.kinds.clone(),
            };
            self.runtime.spawn(watch.run());
        }
    }

    fn kinds(&self) -> Vec<KindHealth> {
        let states = self.kinds.lock().expect("watchers lock poisoned");
        states.values().cloned().collect()
    }

    fn fetch(&self, kind: &Kind, namespace: &str, name: &str, deadline: Instant) -> Fetched<'_> {
        let (group, version) = match kind.api_version.rsplit_once('/') {
            Some((group, version)) => (group, version),
            None => ("", kind.api_version.as_str()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &kind.kind));
        let api: Api<DynamicObject> = if namespace.is_empty() {
            Api::all_with(self.client.clone(), &resource)
        } else {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        };
        let name = name.to_owned();
        Box::pin(async move {
            let read = tokio::time::timeout_at(deadline.into(), api.get_opt(&name)).await;
            match read {
                Err(_) => Err("the apiserver did not answer within the request's deadline".into()),
                Ok(Err(error)) => Err(error.to_string()),
                Ok(Ok(found)) => Ok(found.map(|mut object| {
                    object.types = Some(kube::api::TypeMeta {
                        api_version: resource.api_version.clone(),
                        kind: resource.kind.clone(),
                    });
                    serde_json::to_value(&object).unwrap_or(Value::Null)
                })),
            }
        })
    }
}

/// One kind's watcher.
struct Watch {
    client: kube::Client,
    kind: Kind,
    store: Arc<Store>,
    states: Arc<Mutex<BTreeMap<Kind, KindHealth>>>,
}

impl Watch {
    /// Updates this kind's health.
    fn note(&self, change: impl FnOnce(&mut KindHealth)) {
        let mut states = self.states.lock().expect("watchers lock poisoned");
        if let Some(health) = states.get_mut(&self.kind) {
            change(health);
        }
    }

    async fn run(self) {
        let (group, version) = match self.kind.api_version.rsplit_once('/') {
            Some((group, version)) => (group, version),
            None => ("", self.kind.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &self.kind.kind);
        let resource = match kube::discovery::pinned_kind(&self.client, &gvk).await {
            Ok((resource, _)) => resource,
            Err(error) => {
                tracing::error!(kind = %self.kind, "cannot cache kind: {error}");
                let reason = format!("not served by the apiserver: {error}");
                self.note(|health| {
                    health.state = KindState::Failed(reason);
                    health.errors += 1;
                });
                return;
            }
        };
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        let mut events = watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            .boxed();
        let mut buffer: Vec<Incoming> = Vec::new();
        let mut synced = false;
        while let Some(event) = events.next().await {
            if event.is_ok() {
                self.note(|health| health.last_event = Some(Instant::now()));
            }
            match event {
                Ok(watcher::Event::Init) => {
                    buffer.clear();
                    self.note(|health| health.lists += 1);
                }
                Ok(watcher::Event::InitApply(object)) => {
                    buffer.push(self.incoming(&resource, object))
                }
                Ok(watcher::Event::InitDone) => {
                    let objects = std::mem::take(&mut buffer);
                    let count = objects.len();
                    let (store, kind) = (self.store.clone(), self.kind.clone());
                    // Indexing runs policy code: off the async workers.
                    let _ =
                        tokio::task::spawn_blocking(move || store.replace(&kind, objects)).await;
                    tracing::info!(kind = %self.kind, objects = count, "cluster context synced");
                    self.note(|health| health.state = KindState::Synced);
                    synced = true;
                }
                Ok(watcher::Event::Apply(object)) => {
                    // Indexing runs policy code: off the async workers, in
                    // event order.
                    let (store, incoming) = (self.store.clone(), self.incoming(&resource, object));
                    let _ = tokio::task::spawn_blocking(move || store.apply(incoming)).await;
                }
                Ok(watcher::Event::Delete(object)) => self.store.delete(&ObjectKey {
                    kind: self.kind.clone(),
                    namespace: object.metadata.namespace.unwrap_or_default(),
                    name: object.metadata.name.unwrap_or_default(),
                }),
                // The backoff retries; the cache keeps serving what it has,
                // and until the first list is in, /readyz says why not.
                Err(error) => {
                    tracing::warn!(kind = %self.kind, "watch failed, retrying: {error}");
                    let reason = format!("listing failed, retrying: {error}");
                    self.note(|health| {
                        health.errors += 1;
                        if !synced {
                            health.state = KindState::Failed(reason);
                        }
                    });
                }
            }
        }
    }

    fn incoming(&self, resource: &ApiResource, mut object: DynamicObject) -> Incoming {
        // Watch events leave out apiVersion and kind; policies expect them.
        object.types = Some(kube::api::TypeMeta {
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
        });
        Incoming {
            kind: self.kind.clone(),
            value: serde_json::to_value(&object).unwrap_or(Value::Null),
        }
    }
}

/// Why no cluster client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither a kubeconfig nor an in-cluster service account was found.
    #[error(
        "no cluster connection: no kubeconfig (KUBECONFIG, ~/.kube/config or --kubeconfig) and no in-cluster service account ({0})"
    )]
    NotFound(#[source] kube::config::InferConfigError),
    /// The kubeconfig named with `--kubeconfig` is unusable.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The configuration was found but no client could be built from it.
    #[error("cluster client: {0}")]
    Client(#[from] kube::Error),
}

/// A client as kube-rs configures one: from `kubeconfig` when given, else
/// `KUBECONFIG` or `~/.kube/config`, else the in-cluster service account.
///
/// # Errors
///
/// None of them is there, or the one found is unusable.
pub async fn client(kubeconfig: Option<&Path>) -> Result<kube::Client, ConnectError> {
    let config = match kubeconfig {
        Some(path) => {
            let unusable = |source| ConnectError::Kubeconfig {
                path: path.to_owned(),
                source,
            };
            let file = kube::config::Kubeconfig::read_from(path).map_err(unusable)?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(unusable)?
        }
        None => kube::Config::infer()
            .await
            .map_err(ConnectError::NotFound)?,
    };
    Ok(kube::Client::try_from(config)?)
}
