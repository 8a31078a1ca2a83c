//! A stand-in for the kube-apiserver's REST storage, for what `tollgate
//! serve` asks of a cluster (the self-managed certificate's Secret, Lease
//! and webhook configurations; a watched ConfigMap): objects by path, in
//! memory, with the apiserver's rules for the verbs used (GET of an object
//! or of a collection filtered by `fieldSelector=metadata.name=…` or an
//! equality `labelSelector`, a watch of a collection (writes and deletions
//! from when it starts), POST of a new name, PUT with the `resourceVersion`
//! last read (or none: unconditional), DELETE with a `resourceVersion`
//! precondition; 404 and 409 as `Status` objects), and a round trip the
//! test sets. Plain HTTP on loopback, reached through a kubeconfig.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::convert::Infallible;

use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The stored objects by path (`/api/v1/namespaces/NS/secrets/NAME`), and
/// every change for the watches: its type, path and object.
struct Storage {
    version: u64,
    objects: BTreeMap<String, Value>,
    writes: broadcast::Sender<(&'static str, String, Value)>,
}

type Body = BoxBody<Bytes, Infallible>;

/// What every connection shares.
struct Shared {
    storage: Mutex<Storage>,
    /// How long each answer (but a watch's) waits, as a network would.
    round_trip: Mutex<Duration>,
}

/// A running stand-in apiserver.
pub struct Apiserver {
    /// Its address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Apiserver {
    /// Starts one on a free loopback port.
    pub async fn start() -> Apiserver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            storage: Mutex::new(Storage {
                version: 0,
                objects: BTreeMap::new(),
                writes: broadcast::channel(1024).0,
            }),
            round_trip: Mutex::new(Duration::ZERO),
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, hyper::Error>(answer(&shared, request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Apiserver { addr, shared }
    }

    /// A kubeconfig for it, written to `path`.
    pub fn kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster: {{server: 'http://{}'}}\nusers:\n- name: test\n  user: {{}}\ncontexts:\n- name: test\n  context: {{cluster: test, user: test}}\ncurrent-context: test\n",
            self.addr
        );
        std::fs::write(path, text).unwrap();
    }

    /// Stores `object` at `path` as a user's write would.
    pub fn put(&self, path: &str, object: Value) {
        let mut storage = self.shared.storage.lock().unwrap();
        store(&mut storage, path.to_owned(), object, StatusCode::OK);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.shared
            .storage
            .lock()
            .unwrap()
            .objects
            .get(path)
            .cloned()
    }

    /// The objects whose paths start with `prefix`.
    pub fn under(&self, prefix: &str) -> Vec<(String, Value)> {
        let storage = self.shared.storage.lock().unwrap();
        storage
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(path, _)| path.starts_with(prefix))
            .map(|(path, object)| (path.clone(), object.clone()))
            .collect()
    }

    /// Makes every later answer (but a watch's) wait `round_trip`.
    pub fn set_round_trip(&self, round_trip: Duration) {
        *self.shared.round_trip.lock().unwrap() = round_trip;
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())).boxed())
        .unwrap()
}

/// The core group's resources this stand-in serves.
fn core_resources() -> Value {
    let resource = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["create", "get", "list", "update", "watch"]})
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "v1", "resources": [
        resource("pods", "Pod", true),
        resource("namespaces", "Namespace", false),
        resource("configmaps", "ConfigMap", true),
        resource("secrets", "Secret", true),
    ]})
}

/// What a GET's query asks for.
#[derive(Default)]
struct Query {
    /// `fieldSelector=metadata.name=…`.
    name: Option<String>,
    /// `labelSelector=k=v,…` (equality only).
    labels: Vec<(String, String)>,
    /// `watch=true`.
    watch: bool,
}

fn query(uri: &hyper::Uri) -> Query {
    let mut query = Query::default();
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*key {
            "fieldSelector" => {
                query.name = value.strip_prefix("metadata.name=").map(str::to_owned);
            }
            "labelSelector" => {
                query.labels = value
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
            }
            "watch" => query.watch = value == "true" || value == "1",
            _ => {}
        }
    }
    query
}

/// Whether `object` carries every label `query` asks for.
fn labelled(query: &Query, object: &Value) -> bool {
    query
        .labels
        .iter()
        .all(|(key, value)| object["metadata"]["labels"][key] == **value)
}

/// Whether `path` names one object (`…/KIND/NAME`) rather than a
/// collection (`…/KIND`).
fn names_an_object(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => return false,
    };
    match rest {
        ["namespaces", _, rest @ ..] => rest.len() == 2,
        rest => rest.len() == 2,
    }
}

/// Whether `path` is an object of `collection` that `name` selects; a
/// collection without a namespace (`/api/v1/pods`) holds the objects of
/// every namespace.
fn selected(collection: &str, name: Option<&str>, path: &str) -> bool {
    let Some((parent, object)) = path.rsplit_once('/') else {
        return false;
    };
    let everywhere = match parent.split_once("/namespaces/") {
        Some((root, rest)) => rest
            .split_once('/')
            .map(|(_, kind)| format!("{root}/{kind}")),
        None => None,
    };
    (parent == collection || everywhere.as_deref() == Some(collection))
        && name.is_none_or(|n| n == object)
}

/// A watch of `collection`: every later change of an object it selects
/// (and labels), as one JSON event per line, until the client goes away.
fn watch(storage: &Storage, collection: String, query: Query) -> Response<Body> {
    let writes = writes_of(storage.writes.subscribe());
    let events = writes.filter_map(move |(kind, path, object)| {
        let wanted =
            selected(&collection, query.name.as_deref(), &path) && labelled(&query, &object);
        let event = wanted.then(|| {
            let line = json!({"type": kind, "object": object});
            let mut bytes = serde_json::to_vec(&line).unwrap();
            bytes.push(b'\n');
            Ok::<_, Infallible>(Frame::data(Bytes::from(bytes)))
        });
        async move { event }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(events)))
        .unwrap()
}

/// The writes a receiver sees, as a stream (a lagging one skips ahead).
fn writes_of(
    receiver: broadcast::Receiver<(&'static str, String, Value)>,
) -> impl futures::Stream<Item = (&'static str, String, Value)> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(write) => return Some((write, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn answer(shared: &Shared, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = query(request.uri());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !query.watch {
        let round_trip = *shared.round_trip.lock().unwrap();
        tokio::time::sleep(round_trip).await;
    }
    let mut storage = shared.storage.lock().unwrap();
    let name = query.name.clone();
    match method {
        Method::GET if query.watch => watch(&storage, path, query),
        // Discovery of the core group, for clients that resolve a kind.
        Method::GET if path == "/api" => respond(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        ),
        Method::GET if path == "/api/v1" => respond(StatusCode::OK, &core_resources()),
        Method::GET => match storage.objects.get(&path) {
            Some(found) => respond(StatusCode::OK, found),
            None => {
                let items: Vec<&Value> = storage
                    .objects
                    .iter()
                    .filter(|(stored, object)| {
                        selected(&path, name.as_deref(), stored) && labelled(&query, object)
                    })
                    .map(|(_, object)| object)
                    .collect();
                if items.is_empty() && names_an_object(&path) {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{path} not found"),
                    );
                }
                respond(
                    StatusCode::OK,
                    &json!({"kind": "List", "apiVersion": "v1",
                            "metadata": {"resourceVersion": storage.version.to_string()},
                            "items": items}),
                )
            }
        },
        Method::POST => {
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            let path = format!("{path}/{name}");
            if storage.objects.contains_key(&path) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("{path} exists"),
                );
            }
            store(&mut storage, path, object, StatusCode::CREATED)
        }
        Method::PUT => {
            let Some(current) = storage
                .objects
                .get(&path)
                .map(|o| o["metadata"]["resourceVersion"].clone())
            else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{path} not found"),
                );
            };
            let expected = &object["metadata"]["resourceVersion"];
            if !expected.is_null() && current != *expected {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("{path}: the object has been modified"),
                );
            }
            store(&mut storage, path, object, StatusCode::OK)
        }
        Method::DELETE => {
            let Some(current) = storage.objects.get(&path) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("{path} not found"),
                );
            };
            let expected = &object["preconditions"]["resourceVersion"];
            if !expected.is_null() && *expected != current["metadata"]["resourceVersion"] {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("{path}: precondition failed: the object has been modified"),
                );
            }
            storage.version += 1;
            let removed = storage.objects.remove(&path).unwrap();
            let _ = storage.writes.send(("DELETED", path, removed.clone()));
            respond(StatusCode::OK, &removed)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{method} is not served here"),
        ),
    }
}

fn store(
    storage: &mut Storage,
    path: String,
    mut object: Value,
    code: StatusCode,
) -> Response<Body> {
    storage.version += 1;
    object["metadata"]["resourceVersion"] = storage.version.to_string().into();
    let answer = respond(code, &object);
    // No watcher: nobody to tell.
    let _ = storage
        .writes
        .send(("MODIFIED", path.clone(), object.clone()));
    storage.objects.insert(path, object);
    answer
}
