//! Harness for the end-to-end tests: start the real `tollgate` binary on a
//! free loopback port with its self-made certificate, talk to it over HTTPS
//! with a client that trusts only that CA, and build AdmissionReviews.
//!
//! The binary is the release build (`cargo build --release -p tollgate`),
//! shared by every test; `TOLLGATE_BIN` points elsewhere. Compiled policy
//! artifacts are cached in `target/e2e-module-cache`, so only the first
//! server of a run compiles.

pub mod apiserver;

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The `tollgate` binary under test.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("TOLLGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/release/tollgate"));
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --release -p tollgate` first (or set TOLLGATE_BIN)",
        path.display()
    );
    path
}

/// A compiled test-only policy component (`tests/policies/<name>`).
pub fn test_policy(name: &str) -> PathBuf {
    Path::new(env!("TEST_POLICIES_DIR")).join(format!("{name}.wasm"))
}

/// A file of the shared upstream fixtures (`../shared/<path>`).
pub fn shared(path: &str) -> PathBuf {
    workspace().join("../shared").join(path)
}

/// Server starts and offline runs take turns until ready: the first one on
/// a cold module cache compiles every policy, and the others then load its
/// artifacts instead of all compiling the same modules at once on two cores.
pub static STARTUP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The address in the server log's `listening (<what>) addr=…` line.
fn listening_addr<'l>(log: &'l str, what: &str) -> Option<&'l str> {
    let (_, rest) = log.split_once(&format!("listening ({what}) addr="))?;
    let end = rest.find(char::is_whitespace)?;
    Some(&rest[..end])
}

/// A running `tollgate serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    /// Base URL, `https://127.0.0.1:<port>`.
    pub url: String,
    /// Base URL of the plain-HTTP probe port, `http://127.0.0.1:<port>`.
    pub probe_url: String,
    /// The directory holding the self-made CA, config, and logs.
    pub dir: tempfile::TempDir,
    /// HTTPS client trusting the server's CA.
    pub client: reqwest::Client,
}

/// How to start a server.
#[derive(Default)]
pub struct Options<'a> {
    /// Configuration YAML; `None` runs the embedded default.
    pub config: Option<&'a str>,
    /// More arguments for `serve` (e.g. `--context PATH`).
    pub args: &'a [&'a str],
    /// More environment variables (e.g. `POD_NAME`).
    pub env: &'a [(&'a str, &'a str)],
}

impl Server {
    /// Starts the default configuration and waits until ready.
    pub async fn start_default() -> Server {
        Server::start(Options::default()).await
    }

    /// Starts a server with `options` and waits for it.
    pub async fn start(options: Options<'_>) -> Server {
        let _turn = STARTUP.lock().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(binary());
        command
            .arg("serve")
            // The kernel picks the port and the log says it: no other
            // process can take it between choosing and binding.
            .arg("--addr")
            .arg("127.0.0.1:0")
            .arg("--probe-addr")
            .arg("127.0.0.1:0")
            .args(if options.args.contains(&"--cert-dir") {
                Vec::new()
            } else {
                vec![
                    OsString::from("--cert-dir"),
                    dir.path().join("certs").into(),
                ]
            })
            .arg("--cache-dir")
            .arg(workspace().join("target/e2e-module-cache"))
            .args(options.args)
            // No kubeconfig: cluster context comes only from --context.
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(options.env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("server.log")).expect("log file"));
        if let Some(config) = options.config {
            let path = dir.path().join("config.yaml");
            std::fs::write(&path, config).expect("writing config");
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().expect("starting tollgate");
        let log = dir.path().join("server.log");
        let deadline = Instant::now() + Duration::from_secs(120);
        let (addr, probe_addr) = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let (Some(addr), Some(probes)) = (
                listening_addr(&text, "HTTPS"),
                listening_addr(&text, "HTTP probes"),
            ) {
                break (addr.to_owned(), probes.to_owned());
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("tollgate exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "tollgate never listened:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The self-made CA is written before the server listens (a test
        // with its own certificate gives its CA with --cert-dir).
        let ca = options
            .args
            .iter()
            .position(|a| *a == "--cert-dir")
            .map_or_else(
                || dir.path().join("certs"),
                |i| PathBuf::from(options.args[i + 1]),
            )
            .join("ca.crt");
        // A certificate kept elsewhere (a Secret): the test builds its own
        // client; this one reaches the plain-HTTP probes.
        let client = if ca.is_file() {
            client(&ca)
        } else {
            reqwest::Client::builder()
                .use_preconfigured_tls(tls_roots(rustls::RootCertStore::empty()))
                .build()
                .expect("building the client")
        };
        let mut server = Server {
            child: Some(child),
            url: format!("https://{addr}"),
            probe_url: format!("http://{probe_addr}"),
            dir,
            client,
        };
        loop {
            // Probes are plain HTTP: no client certificate is needed even
            // when the TLS port asks for one.
            if let Ok(response) = server.client.get(server.probe("/readyz")).send().await
                && response.status() == 200
            {
                break;
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("tollgate exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "tollgate did not become ready:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        server
    }

    /// URL of `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// URL of `path` on the probe port.
    pub fn probe(&self, path: &str) -> String {
        format!("{}{path}", self.probe_url)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.path().join("server.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// GET: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(self.endpoint(path))
            .send()
            .await
            .expect("GET");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    /// POST raw bytes: status and body.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let response = self
            .client
            .post(self.endpoint(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST");
        (
            response.status().as_u16(),
            response.text().await.expect("body"),
        )
    }

    /// POST a review and return the response review's `response`.
    pub async fn review(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .post_raw(path, serde_json::to_vec(review).expect("serializing"))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
        let mut answer: Value = serde_json::from_str(&body).expect("response is JSON");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        answer["response"].take()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait()
    }

    /// Waits for the exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        child.wait().expect("waiting for tollgate")
    }

    /// Sends the signal `name` (`TERM`, `HUP`), without waiting.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTPS client that trusts only the CA in `ca` (PEM).
pub fn client(ca: &Path) -> reqwest::Client {
    client_builder(ca).build().expect("building the client")
}

/// The builder of [`client`], for more settings.
pub fn client_builder(ca: &Path) -> reqwest::ClientBuilder {
    let mut tls = tls_config(ca);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
}

/// A TLS client configuration that trusts only the CA in `ca` (PEM), for
/// tests that speak HTTP by hand.
pub fn tls_config(ca: &Path) -> rustls::ClientConfig {
    tls_trusting(&std::fs::read(ca).expect("reading CA"))
}

/// A TLS client configuration that trusts only the CAs of `pem`.
pub fn tls_trusting(pem: &[u8]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
        roots.add(cert.expect("CA PEM")).expect("adding CA");
    }
    tls_roots(roots)
}

fn tls_roots(roots: rustls::RootCertStore) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// An AdmissionReview for `operation` of `object`, with a fresh uid.
pub fn review(operation: &str, object: &Value) -> Value {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let uid = format!(
        "e2e-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "resource": {"group": group, "version": version, "resource": "unused"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"].as_str().unwrap_or("default"),
            "operation": operation,
            "userInfo": {"username": "e2e", "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

/// A running Pod in `namespace` whose one container asks for `gpus` GPUs.
pub fn gpu_pod(namespace: &str, name: &str, gpus: u64) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "train", "image": "nvcr.io/nvidia/pytorch:24.05-py3",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}}}]},
        "status": {"phase": "Running"}})
}

/// The standard benchmark request (`../shared/bench/pod-gpu-create.json`).
pub fn standard_request() -> Value {
    let text = std::fs::read_to_string(shared("bench/pod-gpu-create.json"))
        .expect("reading the standard request");
    serde_json::from_str(&text).expect("standard request is JSON")
}
