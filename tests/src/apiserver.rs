//! A stand-in for the kube-apiserver's REST storage, for the replicas of
//! `tollgate serve --certs self-managed`: objects by path, in memory, with
//! the apiserver's rules for the verbs the lifecycle uses (GET, POST of a
//! new name, PUT with the `resourceVersion` last read; 404 and 409 as
//! `Status` objects). Plain HTTP on loopback, reached through a kubeconfig.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// The stored objects by path (`/api/v1/namespaces/NS/secrets/NAME`).
#[derive(Default)]
struct Storage {
    version: u64,
    objects: BTreeMap<String, Value>,
}

/// A running stand-in apiserver.
pub struct Apiserver {
    /// Its address.
    pub addr: SocketAddr,
    storage: Arc<Mutex<Storage>>,
}

impl Apiserver {
    /// Starts one on a free loopback port.
    pub async fn start() -> Apiserver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let storage = Arc::new(Mutex::new(Storage::default()));
        let serving = storage.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let storage = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let storage = storage.clone();
                        async move { Ok::<_, hyper::Error>(answer(&storage, request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Apiserver { addr, storage }
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
    pub fn put(&self, path: &str, mut object: Value) {
        let mut storage = self.storage.lock().unwrap();
        storage.version += 1;
        object["metadata"]["resourceVersion"] = storage.version.to_string().into();
        storage.objects.insert(path.to_owned(), object);
    }

    /// The object at `path`.
    pub fn get(&self, path: &str) -> Option<Value> {
        self.storage.lock().unwrap().objects.get(path).cloned()
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

async fn answer(storage: &Mutex<Storage>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let object: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut storage = storage.lock().unwrap();
    match method {
        Method::GET => match storage.objects.get(&path) {
            Some(found) => respond(StatusCode::OK, found),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{path} not found"),
            ),
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
            let current = storage
                .objects
                .get(&path)
                .map(|o| o["metadata"]["resourceVersion"].clone());
            if current != Some(object["metadata"]["resourceVersion"].clone()) {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("{path}: the object has been modified"),
                );
            }
            store(&mut storage, path, object, StatusCode::OK)
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
) -> Response<Full<Bytes>> {
    storage.version += 1;
    object["metadata"]["resourceVersion"] = storage.version.to_string().into();
    let answer = respond(code, &object);
    storage.objects.insert(path, object);
    answer
}
