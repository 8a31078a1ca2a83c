//! What an install relies on: the plain-HTTP probe port, client
//! certificates on the TLS port only, one webhook per failure policy,
//! `tollgate certs` and `tollgate webhooks`, and a mounted certificate
//! rotated under load without a failed request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tollgate_certs::authority::{self, Info, Pair};
use tollgate_e2e::apiserver::Apiserver;
use tollgate_e2e::{Options, Server, binary, review, standard_request, workspace};

const HOUR: Duration = Duration::from_secs(3600);

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A client trusting `ca` and presenting `identity`.
fn client_with_identity(ca: &Path, identity: &Pair) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain = CertificateDer::pem_slice_iter(identity.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(identity.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .unwrap()
}

/// POSTs the standard request to `server`'s `/validate` with `client`.
async fn validate_standard(
    client: &reqwest::Client,
    server: &Server,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(server.endpoint("/validate"))
        .json(&standard_request())
        .send()
        .await
}

#[tokio::test]
async fn probes_are_plain_http_and_a_client_ca_guards_only_the_tls_port() {
    let clients = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let client_ca = authority::new_ca(now, HOUR).unwrap();
    let apiserver = authority::issue(&client_ca, &["kube-apiserver".into()], now, HOUR).unwrap();
    let ca_path = clients.path().join("client-ca.crt");
    write(&ca_path, &client_ca.cert);
    let server = Server::start(Options {
        args: &["--client-ca", ca_path.to_str().unwrap()],
        ..Options::default()
    })
    .await;

    let plain = reqwest::Client::builder()
        .use_preconfigured_tls(tollgate_e2e::tls_config(
            &server.dir.path().join("certs/ca.crt"),
        ))
        .build()
        .unwrap();
    for (path, expected) in [
        ("/healthz", "ok"),
        ("/readyz", "ready: 5 policies loaded"),
        ("/metrics", "tollgate_"),
    ] {
        let response = plain.get(server.probe(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(expected), "{path}: {body}");
    }

    // Without a client certificate the TLS port refuses the handshake.
    let refused = validate_standard(&server.client, &server).await;
    assert!(refused.is_err(), "{refused:?}");

    // With one from the client CA it answers.
    let ca = server.dir.path().join("certs/ca.crt");
    let response = validate_standard(&client_with_identity(&ca, &apiserver), &server)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // One from another CA is refused too.
    let stranger_ca = authority::new_ca(now, HOUR).unwrap();
    let stranger = authority::issue(&stranger_ca, &["someone".into()], now, HOUR).unwrap();
    let refused = validate_standard(&client_with_identity(&ca, &stranger), &server).await;
    assert!(refused.is_err(), "{refused:?}");
}

#[tokio::test]
async fn each_failure_policys_webhook_runs_only_its_own_policies() {
    let config = r#"
policies:
  - name: nvcr-only
    module: builtin:image-registries
    failurePolicy: fail
    settings: {allowedRegistries: [nvcr.io/]}
    match: {kinds: [Pod]}
  - name: docker-only
    module: builtin:image-registries
    failurePolicy: ignore
    settings: {allowedRegistries: [docker.io/]}
    match: {kinds: [Pod]}
"#;
    let server = Server::start(Options {
        config: Some(config),
        ..Options::default()
    })
    .await;
    let pod = |image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
               "spec": {"containers": [{"name": "c", "image": image}]}})
    };
    let denied_by = |response: &serde_json::Value| -> Vec<String> {
        let message = response["status"]["message"].as_str().unwrap_or("");
        ["nvcr-only", "docker-only"]
            .into_iter()
            .filter(|name| message.contains(&format!("{name}:")))
            .map(str::to_owned)
            .collect()
    };
    let from_docker = review("CREATE", &pod("docker.io/library/python:3.12"));
    let fail = server.review("/validate/fail", &from_docker).await;
    assert_eq!(fail["allowed"], false);
    assert_eq!(denied_by(&fail), ["nvcr-only"]);
    let ignore = server.review("/validate/ignore", &from_docker).await;
    assert_eq!(ignore["allowed"], true, "{ignore}");
    let both = server.review("/validate", &from_docker).await;
    assert_eq!(denied_by(&both), ["nvcr-only"]);

    let from_nvcr = review("CREATE", &pod("nvcr.io/nvidia/pytorch:24.05-py3"));
    assert_eq!(
        server.review("/validate/fail", &from_nvcr).await["allowed"],
        true
    );
    let ignore = server.review("/validate/ignore", &from_nvcr).await;
    assert_eq!(denied_by(&ignore), ["docker-only"]);

    let (status, _) = server
        .post_raw(
            "/validate/sometimes",
            serde_json::to_vec(&from_nvcr).unwrap(),
        )
        .await;
    assert_eq!(status, 404);
}

fn tollgate(args: &[&str]) -> String {
    let output = Command::new(binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "tollgate {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The documents of `tollgate webhooks` as their Kubernetes types.
fn registration(
    args: &[&str],
) -> (
    Option<MutatingWebhookConfiguration>,
    Option<ValidatingWebhookConfiguration>,
) {
    let text = tollgate(&[&["webhooks"], args].concat());
    let mut mutating = None;
    let mut validating = None;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document).unwrap();
        match value["kind"].as_str() {
            Some("MutatingWebhookConfiguration") => {
                mutating = Some(serde_json::from_value(value).unwrap());
            }
            Some("ValidatingWebhookConfiguration") => {
                validating = Some(serde_json::from_value(value).unwrap());
            }
            other => panic!("unexpected document {other:?}"),
        }
    }
    (mutating, validating)
}

#[test]
fn webhooks_are_derived_from_the_default_and_the_example_configurations() {
    let (mutating, validating) = registration(&[]);
    let mutating = mutating.expect("the default configuration mutates");
    let validating = validating.expect("and validates");
    for hook in mutating.webhooks.as_ref().unwrap() {
        assert_eq!(hook.side_effects, "NoneOnDryRun");
        assert_eq!(hook.timeout_seconds, Some(10));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        let resources: Vec<&String> = hook
            .rules
            .iter()
            .flatten()
            .flat_map(|r| r.resources.iter().flatten())
            .collect();
        assert!(resources.iter().any(|r| *r == "pods"), "{resources:?}");
        assert!(
            resources.iter().any(|r| *r == "pytorchjobs"),
            "{resources:?}"
        );
    }
    let names: Vec<&str> = validating
        .webhooks
        .as_ref()
        .unwrap()
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(names, ["fail.validate.tollgate.dev"]);

    // The committed base is this output: regenerate it when the default
    // configuration changes.
    let committed = std::fs::read_to_string(workspace().join("deploy/base/webhooks.yaml"))
        .expect("deploy/base/webhooks.yaml");
    assert_eq!(
        committed,
        tollgate(&["webhooks"]),
        "deploy/base/webhooks.yaml is stale: run `tollgate webhooks > deploy/base/webhooks.yaml`"
    );

    let example = workspace().join("examples/config.yaml");
    let (mutating, validating) = registration(&[
        "--config",
        example.to_str().unwrap(),
        "--url",
        "https://tollgate.example:8443",
    ]);
    let urls: Vec<String> = mutating
        .into_iter()
        .flat_map(|m| m.webhooks.unwrap())
        .map(|w| w.client_config.url.unwrap())
        .chain(
            validating
                .into_iter()
                .flat_map(|v| v.webhooks.unwrap())
                .map(|w| w.client_config.url.unwrap()),
        )
        .collect();
    assert!(!urls.is_empty());
    for url in urls {
        assert!(url.starts_with("https://tollgate.example:8443/"), "{url}");
    }
}

/// Writes `pair` and `ca` into `dir` as the kubelet updates a mounted
/// Secret: a new timestamped folder, then one atomic swap of `..data`.
fn mount(dir: &Path, pair: &Pair, ca: &str, generation: u32) {
    let folder = dir.join(format!("..gen_{generation}"));
    std::fs::create_dir_all(&folder).unwrap();
    write(&folder.join("tls.crt"), &pair.cert);
    write(&folder.join("tls.key"), &pair.key);
    write(&folder.join("ca.crt"), ca);
    let staged = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&staged);
    std::os::unix::fs::symlink(folder.file_name().unwrap(), &staged).unwrap();
    std::fs::rename(&staged, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key", "ca.crt"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from("..data").join(name), &link).unwrap();
        }
    }
}

/// The fingerprint of the certificate a new handshake gets.
async fn served_fingerprint(server: &Server, ca: &Path) -> String {
    let config = tollgate_e2e::tls_config(ca);
    let tcp = TcpStream::connect(server.url.trim_start_matches("https://"))
        .await
        .unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (_, session) = stream.get_ref();
    let der = &session.peer_certificates().unwrap()[0];
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::engine::general_purpose::STANDARD.encode(der.as_ref())
    );
    Info::read(&pem, "served").unwrap().fingerprint
}

#[tokio::test]
async fn a_mounted_certificate_rotated_under_load_fails_no_request() {
    let mounted = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let ca = authority::new_ca(now, 24 * HOUR).unwrap();
    let names = vec!["127.0.0.1".to_owned(), "localhost".into()];
    let first = authority::issue(&ca, &names, now, HOUR).unwrap();
    mount(mounted.path(), &first, &ca.cert, 0);
    let server = Arc::new(
        Server::start(Options {
            args: &[
                "--certs",
                "mounted",
                "--cert-dir",
                mounted.path().to_str().unwrap(),
            ],
            ..Options::default()
        })
        .await,
    );
    let ca_file = mounted.path().join("ca.crt");
    assert_eq!(
        served_fingerprint(&server, &ca_file).await,
        Info::read(&first.cert, "first").unwrap().fingerprint
    );

    // Load: clients that keep their connections, and clients that open a
    // new one (a new handshake) for every request.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let body = serde_json::to_vec(&standard_request()).unwrap();
    let mut workers = Vec::new();
    for worker in 0..8 {
        let client = tollgate_e2e::client_builder(&ca_file)
            .pool_max_idle_per_host(if worker % 2 == 0 { 8 } else { 0 })
            .build()
            .unwrap();
        let (server, stop, sent, failed, body) = (
            server.clone(),
            stop.clone(),
            sent.clone(),
            failed.clone(),
            body.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let answer = client
                    .post(server.endpoint("/validate"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                let ok = match answer {
                    Ok(response) if response.status() == 200 => response
                        .json::<serde_json::Value>()
                        .await
                        .is_ok_and(|a| a["response"]["allowed"] == true),
                    _ => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let mut swapped = 0;
    for generation in 1..=2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let next = authority::issue(&ca, &names, SystemTime::now(), HOUR).unwrap();
        let expected = Info::read(&next.cert, "next").unwrap().fingerprint;
        mount(mounted.path(), &next, &ca.cert, generation);
        let deadline = Instant::now() + Duration::from_secs(30);
        while served_fingerprint(&server, &ca_file).await != expected {
            assert!(
                Instant::now() < deadline,
                "the rotated certificate was never served:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        swapped += 1;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "TLS reload under load: {sent} requests over HTTPS, {failed} failed, {swapped} certificates swapped in"
    );
    assert_eq!(failed, 0, "{}", server.log());
    assert!(sent > 100, "{sent}");
}

#[tokio::test]
async fn certs_writes_a_pair_for_the_service_that_serve_takes_as_mounted() {
    let out = tempfile::tempdir().unwrap();
    let printed = tollgate(&[
        "certs",
        "--service",
        "tollgate.tollgate-system",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert!(
        printed.contains("Secret tollgate-system/tollgate-certs"),
        "{printed}"
    );
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_yaml::from_str(&std::fs::read_to_string(out.path().join("secret.yaml")).unwrap())
            .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        secret.metadata.namespace.as_deref(),
        Some("tollgate-system")
    );
    let data = secret.data.unwrap();
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        let file = std::fs::read(out.path().join(key)).unwrap();
        assert_eq!(data[key].0, file, "{key} in secret.yaml is the file");
    }

    let server = Server::start(Options {
        args: &[
            "--certs",
            "mounted",
            "--cert-dir",
            out.path().to_str().unwrap(),
        ],
        ..Options::default()
    })
    .await;
    // The apiserver reaches it by the Service's name.
    let addr: std::net::SocketAddr = server.url.trim_start_matches("https://").parse().unwrap();
    let client = tollgate_e2e::client_builder(&out.path().join("ca.crt"))
        .resolve("tollgate.tollgate-system.svc", addr)
        .build()
        .unwrap();
    let response = client
        .post(format!(
            "https://tollgate.tollgate-system.svc:{}/validate",
            addr.port()
        ))
        .json(&standard_request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn on_sigterm_readiness_fails_at_once_while_admission_goes_on_for_the_delay() {
    let mut server = Server::start(Options {
        args: &["--shutdown-delay", "3s"],
        ..Options::default()
    })
    .await;
    let signalled = Instant::now();
    server.signal("TERM");
    // Readiness goes false at once…
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let response = server
            .client
            .get(server.probe("/readyz"))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            assert_eq!(response.text().await.unwrap(), "shutting down\n");
            break;
        }
        assert!(Instant::now() < deadline, "readiness stayed true");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // …while the apiserver's requests are still answered until endpoints
    // have dropped the replica.
    let answer = server.review("/validate", &standard_request()).await;
    assert_eq!(answer["allowed"], true);
    assert!(signalled.elapsed() < Duration::from_secs(3));
    let status = tokio::task::spawn_blocking(move || {
        let status = server.wait();
        (status, server.log())
    })
    .await
    .unwrap();
    assert!(status.0.success(), "{}", status.1);
    assert!(
        signalled.elapsed() >= Duration::from_secs(3),
        "the delay was kept"
    );
}

/// The caBundle of every webhook of the stand-in apiserver's configurations.
fn published_bundles(apiserver: &Apiserver) -> Vec<String> {
    let mut bundles = Vec::new();
    for kind in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let path = format!("/apis/admissionregistration.k8s.io/v1/{kind}/tollgate");
        let config = apiserver.get(&path).expect("the webhook configuration");
        for webhook in config["webhooks"].as_array().unwrap() {
            let encoded = webhook["clientConfig"]["caBundle"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap();
            bundles.push(String::from_utf8(bytes).unwrap());
        }
    }
    bundles
}

/// The Secret's pair, as PEM.
fn secret_pair(apiserver: &Apiserver) -> (Value, Pair) {
    let secret = apiserver.get(SECRET).expect("the Secret");
    let text = |key: &str| {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(secret["data"][key].as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    };
    let pair = Pair {
        cert: text("tls.crt"),
        key: text("tls.key"),
    };
    (secret, pair)
}

const SECRET: &str = "/api/v1/namespaces/tollgate-system/secrets/tollgate-certs";

#[tokio::test]
async fn self_managed_replicas_share_one_secret_and_keep_its_ca_in_the_webhooks() {
    let apiserver = Apiserver::start().await;
    // The webhook configurations as `tollgate webhooks` writes them.
    let registration = tollgate(&["webhooks"]);
    for document in serde_yaml::Deserializer::from_str(&registration) {
        let object: Value = serde::Deserialize::deserialize(document).unwrap();
        let kind = object["kind"].as_str().unwrap().to_ascii_lowercase();
        apiserver.put(
            &format!("/apis/admissionregistration.k8s.io/v1/{kind}s/tollgate"),
            object,
        );
    }
    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    apiserver.kubeconfig(&kubeconfig);
    let args = [
        "--certs",
        "self-managed",
        "--service",
        "tollgate.tollgate-system",
        "--tls-san",
        "127.0.0.1",
        "--webhook-config",
        "tollgate",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
    ];
    let a = Server::start(Options {
        args: &args,
        env: &[("POD_NAME", "tollgate-a")],
        ..Options::default()
    })
    .await;
    let b = Server::start(Options {
        args: &args,
        env: &[("POD_NAME", "tollgate-b")],
        ..Options::default()
    })
    .await;

    // One Secret; its CA in every webhook; both replicas serve its pair.
    let (secret, pair) = secret_pair(&apiserver);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let bundles = published_bundles(&apiserver);
    assert_eq!(bundles.len(), 2, "a mutating and a validating webhook");
    let bundle = bundles[0].clone();
    assert!(bundles.iter().all(|b| *b == bundle));
    let fingerprint = Info::read(&pair.cert, "served").unwrap().fingerprint;
    let ca_file = scratch.path().join("bundle.crt");
    write(&ca_file, &bundle);
    for server in [&a, &b] {
        assert_eq!(served_fingerprint(server, &ca_file).await, fingerprint);
        let client = tollgate_e2e::client(&ca_file);
        let response = validate_standard(&client, server).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let lease = apiserver
        .get("/apis/coordination.k8s.io/v1/namespaces/tollgate-system/leases/tollgate-certs")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "tollgate-a");
    let annotations = secret["metadata"]["annotations"].as_object().unwrap();
    for replica in ["tollgate-a", "tollgate-b"] {
        let report = annotations[&format!("serving.certs.tollgate.dev/{replica}")]
            .as_str()
            .unwrap();
        assert!(report.starts_with(&fingerprint), "{report}");
    }

    // A caBundle edited away comes back.
    let path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/tollgate";
    let mut edited = apiserver.get(path).unwrap();
    edited["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    apiserver.put(path, edited);
    let deadline = Instant::now() + Duration::from_secs(30);
    while published_bundles(&apiserver).iter().any(|b| *b != bundle) {
        assert!(
            Instant::now() < deadline,
            "the caBundle was not put back:\n{}",
            a.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A new pair written into the Secret (by its owner, as `kubectl apply`
    // of a new `tollgate certs` would) is served by both, no restart.
    let (mut secret, _) = secret_pair(&apiserver);
    let ca = Pair {
        cert: bundle.clone(),
        key: String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"]["ca.key"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap(),
    };
    let names = vec![
        "tollgate.tollgate-system.svc".to_owned(),
        "tollgate.tollgate-system.svc.cluster.local".into(),
        "127.0.0.1".into(),
    ];
    let next = authority::issue(&ca, &names, SystemTime::now(), 24 * HOUR).unwrap();
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    secret["data"]["tls.crt"] = encode(&next.cert).into();
    secret["data"]["tls.key"] = encode(&next.key).into();
    apiserver.put(SECRET, secret);
    let expected = Info::read(&next.cert, "next").unwrap().fingerprint;
    for server in [&a, &b] {
        while served_fingerprint(server, &ca_file).await != expected {
            assert!(
                Instant::now() < deadline + Duration::from_secs(30),
                "the new pair was not served:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
