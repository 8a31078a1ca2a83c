//! The cache every context read is served from.
//!
//! Objects are kept as the JSON text policies receive (serialized once, when
//! they change), per kind and namespace, so a list of one namespace touches
//! that namespace only. Each write bumps a generation; every read returns the
//! generation it saw, which is how the ledger knows whether a reservation's
//! object was already counted in a policy's usage.
//!
//! Quota indexes live here too, updated under the same lock as the objects:
//! an object and what it counts for change together, never one without the
//! other. What an object counts for is computed by its policy (an
//! [`Indexer`]) before the lock is taken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Deserialize;
use serde_json::Value;
pub use tollgate_sdk::quota::{Entry, Usage};
use tollgate_sdk::selector::Selector;

use super::Kind;

/// Annotation `kubectl apply` stores the whole object in; never read by
/// policies, often the largest field.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace (`""` when cluster-scoped).
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A policy that indexes objects of its granted kinds.
pub trait Indexer: Send + Sync {
    /// The index's name (the policy's).
    fn name(&self) -> &Arc<str>;
    /// The kinds it indexes.
    fn kinds(&self) -> &[Kind];
    /// What one object (JSON text) counts for.
    fn entries(&self, object: &str) -> Vec<Entry>;
}

/// The cache. Reads take a shared lock; writes (provider events) an
/// exclusive one, held only to swap entries in.
#[derive(Default)]
pub struct Store {
    state: RwLock<State>,
    /// Read by writers outside the lock, to compute entries first.
    indexers: RwLock<Vec<Arc<dyn Indexer>>>,
}

#[derive(Default)]
struct State {
    generation: u64,
    kinds: HashMap<Kind, Objects>,
    indexes: HashMap<Arc<str>, Index>,
}

/// One kind's objects by namespace, then name (sorted, so lists are stable).
#[derive(Default)]
struct Objects {
    namespaces: HashMap<String, BTreeMap<String, Object>>,
}

struct Object {
    json: Arc<str>,
    labels: Box<[(Box<str>, Box<str>)]>,
    /// Generation at which it (last) appeared.
    since: u64,
}

impl Object {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| &**v)
    }
}

#[derive(Default)]
struct Index {
    totals: HashMap<String, HashMap<String, Total>>,
    objects: HashMap<ObjectKey, Vec<Entry>>,
}

#[derive(Default, Clone, Copy)]
struct Total {
    amount: u64,
    objects: u32,
}

impl Index {
    fn set(&mut self, object: &ObjectKey, entries: Vec<Entry>) {
        if let Some(old) = self.objects.remove(object) {
            for entry in &old {
                let totals = self.totals.get_mut(&entry.key);
                if let Some(total) = totals.and_then(|t| t.get_mut(&entry.resource)) {
                    total.amount = total.amount.saturating_sub(entry.amount);
                    total.objects = total.objects.saturating_sub(1);
                }
            }
        }
        if entries.is_empty() {
            return;
        }
        for entry in &entries {
            let total = self
                .totals
                .entry(entry.key.clone())
                .or_default()
                .entry(entry.resource.clone())
                .or_default();
            total.amount += entry.amount;
            total.objects += 1;
        }
        self.objects.insert(object.clone(), entries);
    }
}

/// An object a provider hands over: its kind and JSON value.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Its kind.
    pub kind: Kind,
    /// The object (stripped on the way in).
    pub value: Value,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Removes what no policy reads and what costs the most memory:
/// `metadata.managedFields` and the last-applied annotation.
pub fn strip(value: &mut Value) {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove(LAST_APPLIED);
            if annotations.is_empty() {
                metadata.remove("annotations");
            }
        }
    }
}

/// An object ready to go in: serialized, its identity read, its index entries
/// computed. Made outside the lock.
struct Prepared {
    key: ObjectKey,
    object: Object,
    entries: Vec<(Arc<str>, Vec<Entry>)>,
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("context store lock poisoned")
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().expect("context store lock poisoned")
    }

    fn indexers_of(&self, kind: &Kind) -> Vec<Arc<dyn Indexer>> {
        self.indexers
            .read()
            .expect("indexers lock poisoned")
            .iter()
            .filter(|i| i.kinds().contains(kind))
            .cloned()
            .collect()
    }

    fn prepare(&self, incoming: Incoming, indexers: &[Arc<dyn Indexer>]) -> Option<Prepared> {
        let Incoming { kind, mut value } = incoming;
        strip(&mut value);
        let meta: Meta = value
            .get("metadata")
            .and_then(|m| Meta::deserialize(m).ok())
            .unwrap_or_default();
        if meta.name.is_empty() {
            tracing::warn!(%kind, "skipping an object without metadata.name");
            return None;
        }
        let json: Arc<str> = value.to_string().into();
        let entries = indexers
            .iter()
            .map(|i| (i.name().clone(), i.entries(&json)))
            .collect();
        Some(Prepared {
            key: ObjectKey {
                kind,
                namespace: meta.namespace,
                name: meta.name,
            },
            object: Object {
                json,
                labels: meta
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                    .collect(),
                since: 0,
            },
            entries,
        })
    }

    fn insert(state: &mut State, prepared: Prepared) {
        let Prepared {
            key,
            mut object,
            entries,
        } = prepared;
        for (name, entries) in entries {
            state.indexes.entry(name).or_default().set(&key, entries);
        }
        let names = state
            .kinds
            .entry(key.kind.clone())
            .or_default()
            .namespaces
            .entry(key.namespace.clone())
            .or_default();
        object.since = names.get(&key.name).map_or(state.generation, |o| o.since);
        names.insert(key.name, object);
    }

    fn remove(state: &mut State, key: &ObjectKey) {
        for index in state.indexes.values_mut() {
            index.set(key, Vec::new());
        }
        if let Some(names) = state
            .kinds
            .get_mut(&key.kind)
            .and_then(|o| o.namespaces.get_mut(&key.namespace))
        {
            names.remove(&key.name);
            if names.is_empty() {
                state
                    .kinds
                    .get_mut(&key.kind)
                    .map(|o| o.namespaces.remove(&key.namespace));
            }
        }
    }

    /// Adds or replaces one object.
    pub fn apply(&self, incoming: Incoming) {
        let indexers = self.indexers_of(&incoming.kind);
        if let Some(prepared) = self.prepare(incoming, &indexers) {
            let mut state = self.write();
            state.generation += 1;
            Self::insert(&mut state, prepared);
        }
    }

    /// Removes one object.
    pub fn delete(&self, key: &ObjectKey) {
        let mut state = self.write();
        state.generation += 1;
        Self::remove(&mut state, key);
    }

    /// Replaces every object of `kind` with `objects` (a provider's full
    /// list), keeping the `since` of objects that stay.
    pub fn replace(&self, kind: &Kind, objects: Vec<Incoming>) {
        let indexers = self.indexers_of(kind);
        let prepared: Vec<Prepared> = objects
            .into_iter()
            .filter_map(|o| self.prepare(o, &indexers))
            .collect();
        let fresh: HashSet<&ObjectKey> = prepared.iter().map(|p| &p.key).collect();
        let mut state = self.write();
        state.generation += 1;
        let stale: Vec<ObjectKey> = state
            .kinds
            .get(kind)
            .into_iter()
            .flat_map(|o| o.namespaces.iter())
            .flat_map(|(ns, names)| {
                names.keys().map(move |name| ObjectKey {
                    kind: kind.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                })
            })
            .filter(|key| !fresh.contains(key))
            .collect();
        drop(fresh);
        for key in &stale {
            Self::remove(&mut state, key);
        }
        state.kinds.entry(kind.clone()).or_default();
        for p in prepared {
            Self::insert(&mut state, p);
        }
    }

    /// Registers a policy's index and fills it from the objects already
    /// cached; later writes keep it up to date.
    pub fn register(&self, indexer: Arc<dyn Indexer>) {
        let name = indexer.name().clone();
        {
            // A reloaded policy's index replaces its previous one.
            let mut indexers = self.indexers.write().expect("indexers lock poisoned");
            indexers.retain(|i| *i.name() != name);
            indexers.push(indexer.clone());
        }
        // From here on writers compute this index's entries too; objects
        // cached before are indexed now, outside the lock, then swapped in
        // unless a writer replaced them meanwhile.
        let current: Vec<(ObjectKey, Arc<str>)> = {
            let state = self.read();
            indexer
                .kinds()
                .iter()
                .filter_map(|kind| state.kinds.get(kind).map(|o| (kind, o)))
                .flat_map(|(kind, objects)| {
                    objects.namespaces.iter().flat_map(move |(ns, names)| {
                        names.iter().map(move |(name, object)| {
                            let key = ObjectKey {
                                kind: kind.clone(),
                                namespace: ns.clone(),
                                name: name.clone(),
                            };
                            (key, object.json.clone())
                        })
                    })
                })
                .collect()
        };
        let computed: Vec<(ObjectKey, Arc<str>, Vec<Entry>)> = current
            .into_iter()
            .map(|(key, json)| {
                let entries = indexer.entries(&json);
                (key, json, entries)
            })
            .collect();
        let mut state = self.write();
        state.generation += 1;
        for (key, json, entries) in computed {
            let unchanged = state
                .kinds
                .get(&key.kind)
                .and_then(|o| o.namespaces.get(&key.namespace))
                .and_then(|names| names.get(&key.name))
                .is_some_and(|o| Arc::ptr_eq(&o.json, &json));
            if unchanged {
                state
                    .indexes
                    .entry(name.clone())
                    .or_default()
                    .set(&key, entries);
            }
        }
    }

    /// Drops the indexes of policies not named in `names` (a reloaded
    /// configuration no longer has them).
    pub fn keep_indexes(&self, names: &[Arc<str>]) {
        self.indexers
            .write()
            .expect("indexers lock poisoned")
            .retain(|i| names.contains(i.name()));
        self.write().indexes.retain(|name, _| names.contains(name));
    }

    /// One object's JSON, and the generation read.
    pub fn get(&self, kind: &Kind, namespace: &str, name: &str) -> (Option<Arc<str>>, u64) {
        let state = self.read();
        let object = state
            .kinds
            .get(kind)
            .and_then(|o| o.namespaces.get(namespace))
            .and_then(|names| names.get(name))
            .map(|o| o.json.clone());
        (object, state.generation)
    }

    /// The labels of one object.
    pub fn labels(
        &self,
        kind: &Kind,
        namespace: &str,
        name: &str,
    ) -> Option<BTreeMap<String, String>> {
        let state = self.read();
        let object = state
            .kinds
            .get(kind)?
            .namespaces
            .get(namespace)?
            .get(name)?;
        Some(
            object
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// The objects of `kind` in `namespace` (all namespaces when empty) that
    /// `selector` selects, as a JSON array text, and the generation read;
    /// `None` instead of a text longer than `max_bytes` (the building stops
    /// there).
    pub fn list(
        &self,
        kind: &Kind,
        namespace: &str,
        selector: &Selector,
        max_bytes: usize,
    ) -> (Option<String>, u64) {
        let state = self.read();
        let mut text = String::from("[");
        if let Some(objects) = state.kinds.get(kind) {
            let namespaces: Vec<&BTreeMap<String, Object>> = if namespace.is_empty() {
                // Stable output across calls: namespaces in name order.
                let mut named: Vec<_> = objects.namespaces.iter().collect();
                named.sort_by_key(|(ns, _)| *ns);
                named.into_iter().map(|(_, names)| names).collect()
            } else {
                objects.namespaces.get(namespace).into_iter().collect()
            };
            for object in namespaces
                .into_iter()
                .flat_map(BTreeMap::values)
                .filter(|o| selector.matches(|k| o.label(k)))
            {
                if text.len() + object.json.len() + 2 > max_bytes {
                    return (None, state.generation);
                }
                if text.len() > 1 {
                    text.push(',');
                }
                text.push_str(&object.json);
            }
        }
        text.push(']');
        (Some(text), state.generation)
    }

    /// Index totals of `index` for `keys`, and the generation read; what
    /// `exclude` counts for is left out (an object is never counted against
    /// itself, as when the scanner evaluates a pod that is cached).
    pub fn usage(
        &self,
        index: &str,
        keys: &[String],
        exclude: Option<&ObjectKey>,
    ) -> (Vec<Usage>, u64) {
        let state = self.read();
        let mut usage = Vec::new();
        if let Some(index) = state.indexes.get(index) {
            let own = exclude.and_then(|o| index.objects.get(o));
            for key in keys {
                let Some(totals) = index.totals.get(key) else {
                    continue;
                };
                for (resource, total) in totals {
                    let mut total = *total;
                    for entry in own.into_iter().flatten() {
                        if entry.key == *key && entry.resource == *resource {
                            total.amount = total.amount.saturating_sub(entry.amount);
                            total.objects = total.objects.saturating_sub(1);
                        }
                    }
                    if total.objects > 0 {
                        usage.push(Usage {
                            key: key.clone(),
                            resource: resource.clone(),
                            amount: total.amount,
                            objects: total.objects,
                        });
                    }
                }
            }
        }
        (usage, state.generation)
    }

    /// The generation at which an object of this group and kind appeared,
    /// if it is cached.
    pub fn since(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<u64> {
        let state = self.read();
        state
            .kinds
            .iter()
            .filter(|(k, _)| k.kind == kind && k.group() == group)
            .find_map(|(_, o)| o.namespaces.get(namespace)?.get(name))
            .map(|o| o.since)
    }

    /// Objects cached of `kind`.
    pub fn count(&self, kind: &Kind) -> usize {
        self.read()
            .kinds
            .get(kind)
            .map_or(0, |o| o.namespaces.values().map(BTreeMap::len).sum())
    }

    /// Objects cached, of every kind.
    pub fn len(&self) -> usize {
        self.read()
            .kinds
            .values()
            .flat_map(|o| o.namespaces.values())
            .map(BTreeMap::len)
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes the cache holds for `kind`'s objects: their text,
    /// labels, keys and index entries.
    pub fn bytes(&self, kind: &Kind) -> usize {
        let state = self.read();
        let Some(objects) = state.kinds.get(kind) else {
            return 0;
        };
        let per_object = std::mem::size_of::<Object>() + 3 * std::mem::size_of::<usize>();
        let objects_bytes: usize = objects
            .namespaces
            .values()
            .flat_map(|names| names.iter())
            .map(|(name, o)| {
                per_object
                    + name.len()
                    + o.json.len()
                    + o.labels
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 32)
                        .sum::<usize>()
            })
            .sum();
        let index_bytes: usize = state
            .indexes
            .values()
            .flat_map(|i| i.objects.iter())
            .filter(|(key, _)| key.kind == *kind)
            .map(|(key, entries)| {
                std::mem::size_of::<ObjectKey>()
                    + key.namespace.len()
                    + key.name.len()
                    + entries
                        .iter()
                        .map(|e| std::mem::size_of::<Entry>() + e.key.len() + e.resource.len())
                        .sum::<usize>()
            })
            .sum();
        objects_bytes + index_bytes
    }
}
