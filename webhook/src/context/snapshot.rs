//! Cluster objects from manifest files: multi-document YAML or JSON,
//! `kubectl get -o yaml` Lists, and directories of them. For `tollgate run`,
//! tests and offline audits; the objects are loaded once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::Value;

use super::store::Incoming;
use super::{Fetched, Kind, KindHealth, KindState, Provider, Store};

/// Objects read from manifests.
pub struct Snapshot {
    origin: String,
    /// Taken by the first `cache` call for their kind.
    objects: Mutex<Vec<Incoming>>,
    /// The kinds given to a store so far.
    cached: Mutex<BTreeSet<Kind>>,
}

/// What a set of manifests holds: its objects, and the documents that could
/// not be read as one.
#[derive(Debug, Default)]
pub struct Documents {
    /// The objects, in file and document order.
    pub objects: Vec<Incoming>,
    /// Each document (or file) that is not an object, with why.
    pub unreadable: Vec<Unreadable>,
}

/// A document that is not a Kubernetes object, or a file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The file.
    pub file: PathBuf,
    /// The document in it, from 1; `None` when the file itself could not be
    /// read.
    pub document: Option<usize>,
    /// Why.
    pub error: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.document {
            Some(document) => write!(
                f,
                "{}: document {document}: {}",
                self.file.display(),
                self.error
            ),
            None => write!(f, "{}: {}", self.file.display(), self.error),
        }
    }
}

/// Reads every object under `paths` (files, or directories searched for
/// `*.yaml`, `*.yml` and `*.json`, in name order). An object needs
/// `apiVersion`, `kind` and `metadata.name` or `metadata.generateName`; any
/// other document, and any file that cannot be read, is listed as
/// unreadable and the rest is read.
///
/// # Errors
///
/// A path that does not exist.
pub fn read(paths: &[PathBuf]) -> Result<Documents, String> {
    let mut documents = Documents::default();
    for file in files(paths)? {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                documents.unreadable.push(Unreadable {
                    file,
                    document: None,
                    error: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        // JSON parses an order of magnitude faster as JSON than as YAML. A
        // JSON stream ends at its first broken value (nothing after it can
        // be found again); YAML documents are parsed one by one, so one
        // broken document costs only itself.
        let parsed: Box<dyn Iterator<Item = Result<Value, String>>> =
            if file.extension().is_some_and(|e| e == "json") {
                Box::new(
                    serde_json::Deserializer::from_str(&text)
                        .into_iter::<Value>()
                        .map(|d| d.map_err(|e| e.to_string())),
                )
            } else {
                Box::new(
                    yaml_documents(&text)
                        .map(|d| serde_yaml::from_str::<Value>(d).map_err(|e| e.to_string())),
                )
            };
        for (index, value) in parsed.enumerate() {
            if let Err(error) = value.and_then(|value| collect(value, &mut documents.objects)) {
                documents.unreadable.push(Unreadable {
                    file: file.clone(),
                    document: Some(index + 1),
                    error,
                });
            }
        }
    }
    Ok(documents)
}

/// The documents of a YAML stream: the text between lines that start a
/// document (`---`, which YAML recognises only at the start of a line, even
/// inside a block scalar); blank ones are left out.
fn yaml_documents(text: &str) -> impl Iterator<Item = &str> {
    let mut documents = Vec::new();
    let (mut start, mut offset) = (0, 0);
    for line in text.split_inclusive('\n') {
        let marker = line.strip_prefix("---").is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace())
        });
        if marker {
            documents.push(&text[start..offset]);
            // The marker line's own content (`--- {a: 1}`) opens the next one.
            start = offset + 3;
        }
        offset += line.len();
    }
    documents.push(&text[start..]);
    documents.into_iter().filter(|document| {
        !document
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    })
}

/// Paths as one line, for messages.
pub fn describe(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut found)?;
        } else if path.exists() {
            found.push(path.clone());
        } else {
            return Err(format!("{}: no such file or directory", path.display()));
        }
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), String> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, found)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            found.push(path);
        }
    }
    Ok(())
}

/// Adds one document: an object, or every item of a `List` (`kubectl get
/// -o yaml`). Empty documents (`---` at the end) are skipped.
///
/// # Errors
///
/// The document is not a Kubernetes object (or a list of them).
pub fn collect(value: Value, objects: &mut Vec<Incoming>) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
        let Value::Object(mut list) = value else {
            unreachable!("a value with a kind is an object")
        };
        let items = match list.remove("items") {
            Some(Value::Array(items)) => items,
            Some(Value::Null) | None => Vec::new(),
            Some(_) => return Err("items is not a list".into()),
        };
        // Items of a typed list (PodList) may leave out their kind.
        let item_kind = kind
            .strip_suffix("List")
            .filter(|k| !k.is_empty() && *k != "List");
        for mut item in items {
            if let (Some(kind), Some(fields)) = (item_kind, item.as_object_mut()) {
                fields.entry("kind").or_insert_with(|| kind.into());
                if let Some(version) = list.get("apiVersion") {
                    fields
                        .entry("apiVersion")
                        .or_insert_with(|| version.clone());
                }
            }
            collect(item, objects)?;
        }
        return Ok(());
    }
    let (Some(api_version), Some(kind)) = (value["apiVersion"].as_str(), value["kind"].as_str())
    else {
        return Err("not a Kubernetes object: apiVersion and kind are required".into());
    };
    let named = |field: &str| {
        !value["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    };
    if !named("name") && !named("generateName") {
        return Err(format!(
            "{api_version}/{kind} has neither metadata.name nor metadata.generateName"
        ));
    }
    objects.push(Incoming {
        kind: Kind::new(api_version, kind),
        value,
    });
    Ok(())
}

impl Snapshot {
    /// A snapshot of objects already read, described as `origin`.
    pub fn new(origin: String, objects: Vec<Incoming>) -> Self {
        Snapshot {
            origin,
            objects: Mutex::new(objects),
            cached: Mutex::default(),
        }
    }

    /// Loads the objects under `paths`; all of them must be readable, since
    /// they stand for the cluster.
    ///
    /// # Errors
    ///
    /// As [`read`], or the first unreadable document.
    pub fn load(paths: &[PathBuf]) -> Result<Self, String> {
        let documents = read(paths)?;
        if let Some(unreadable) = documents.unreadable.first() {
            return Err(unreadable.to_string());
        }
        Ok(Snapshot::new(describe(paths), documents.objects))
    }
}

impl Provider for Snapshot {
    fn describe(&self) -> String {
        format!("snapshot of {}", self.origin)
    }

    fn cache(&self, kinds: &[Kind], store: &Arc<Store>) {
        let mut cached = self.cached.lock().expect("snapshot lock poisoned");
        // A kind already given keeps what it has (a reload asks again).
        let kinds: Vec<Kind> = kinds
            .iter()
            .filter(|kind| !cached.contains(*kind))
            .cloned()
            .collect();
        let mut objects = self.objects.lock().expect("snapshot lock poisoned");
        let (wanted, rest): (Vec<Incoming>, Vec<Incoming>) = std::mem::take(&mut *objects)
            .into_iter()
            .partition(|o| kinds.contains(&o.kind));
        *objects = rest;
        let mut by_kind: std::collections::BTreeMap<Kind, Vec<Incoming>> =
            kinds.iter().map(|k| (k.clone(), Vec::new())).collect();
        for object in wanted {
            by_kind.entry(object.kind.clone()).or_default().push(object);
        }
        for (kind, objects) in by_kind {
            store.replace(&kind, objects);
            cached.insert(kind);
        }
    }

    /// A snapshot is all there is: what it lacks does not exist.
    fn fetch(
        &self,
        _kind: &Kind,
        _namespace: &str,
        _name: &str,
        _deadline: Instant,
    ) -> Fetched<'_> {
        Box::pin(std::future::ready(Ok(None)))
    }

    fn kinds(&self) -> Vec<KindHealth> {
        let cached = self.cached.lock().expect("snapshot lock poisoned");
        cached
            .iter()
            .map(|kind| KindHealth {
                lists: 1,
                ..KindHealth::new(kind.clone(), KindState::Synced)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use tollgate_sdk::selector::Selector;

    use super::*;

    #[test]
    fn reads_documents_lists_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: vision-a, labels: {team: vision}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  namespace: vision-a\n  managedFields: [{manager: kubectl}]\n  annotations:\n    kubectl.kubernetes.io/last-applied-configuration: '{}'\n---\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("more")).unwrap();
        std::fs::write(
            dir.path().join("more/list.yaml"),
            "apiVersion: v1\nkind: PodList\nitems:\n- metadata: {name: p2, namespace: vision-a}\n- metadata: {name: p3, namespace: nlp}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let snapshot = Snapshot::load(&[dir.path().to_owned()]).unwrap();
        let store = Arc::new(Store::default());
        let pods = Kind::new("v1", "Pod");
        snapshot.cache(&[pods.clone(), Kind::namespace()], &store);
        assert_eq!(store.len(), 4);
        let (list, _) = store.list(&pods, "vision-a", &Selector::default(), usize::MAX);
        let names: Vec<String> = serde_json::from_str::<Vec<Value>>(&list.unwrap())
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["p1", "p2"]);
        let (p1, _) = store.get(&pods, "vision-a", "p1");
        assert_eq!(
            p1.as_deref(),
            Some(
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","namespace":"vision-a"}}"#
            ),
            "managedFields and the last-applied annotation are stripped"
        );
        let team = Selector::parse("team=vision").unwrap();
        let (namespaces, _) = store.list(&Kind::namespace(), "", &team, usize::MAX);
        assert!(namespaces.unwrap().contains("vision-a"));
        let (too_long, _) = store.list(&pods, "", &Selector::default(), 100);
        assert_eq!(too_long, None, "a list over the limit is not built");
    }

    #[test]
    fn bad_manifests_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\n---\nkind: Pod\n",
        )
        .unwrap();
        let error = Snapshot::load(std::slice::from_ref(&file)).err().unwrap();
        assert!(
            error.ends_with(
                "bad.yaml: document 2: not a Kubernetes object: apiVersion and kind are required"
            ),
            "{error}"
        );
        let error = read(&[dir.path().join("missing")]).err().unwrap();
        assert!(error.contains("no such file or directory"), "{error}");
    }

    #[test]
    fn yaml_streams_split_at_document_markers() {
        let text = "# header\n---\na: 1\n---   \nb: |\n  ---x\n--- {c: 3}\n---\n\n---\nd: 4";
        let documents: Vec<&str> = yaml_documents(text).collect();
        assert_eq!(
            documents,
            ["\na: 1\n", "   \nb: |\n  ---x\n", " {c: 3}\n", "\nd: 4"]
        );
        assert_eq!(yaml_documents("a: 1").collect::<Vec<_>>(), ["a: 1"]);
    }

    #[test]
    fn a_scan_reads_past_bad_documents_and_takes_generate_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mixed.yaml");
        std::fs::write(
            &file,
            "apiVersion: batch/v1\nkind: Job\nmetadata: {generateName: train-}\n---\n\
             kind: Pod\n---\n: not yaml [\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: after}\n",
        )
        .unwrap();
        let documents = read(std::slice::from_ref(&file)).unwrap();
        let names: Vec<String> = documents
            .objects
            .iter()
            .map(|o| {
                let m = &o.value["metadata"];
                m["name"]
                    .as_str()
                    .or(m["generateName"].as_str())
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(names, ["train-", "after"]);
        let problems: Vec<(Option<usize>, bool)> = documents
            .unreadable
            .iter()
            .map(|u| (u.document, u.file == file))
            .collect();
        assert_eq!(problems, [(Some(2), true), (Some(3), true)]);
    }
}
