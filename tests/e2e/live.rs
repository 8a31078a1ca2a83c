//! Live operation: the configuration reloaded without a restart (a file
//! edited under load, a broken edit, SIGHUP), and readiness per policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, gpu_pod, review, standard_request, test_policy};

fn registries(allowed: &[&str]) -> String {
    format!(
        "policies:\n  - name: registries\n    module: builtin:image-registries\n    settings: {{allowedRegistries: {allowed:?}}}\n    match: {{kinds: [Pod]}}\n"
    )
}

fn pod(image: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"},
           "spec": {"containers": [{"name": "c", "image": image}]}})
}

/// The value of the metric line that starts with `series`.
async fn metric(server: &Server, series: &str) -> f64 {
    let (_, text) = server.get("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `condition` holds of `/metrics`' `series`.
async fn until_metric(server: &Server, series: &str, condition: impl Fn(f64) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition(metric(server, series).await) {
        assert!(
            Instant::now() < deadline,
            "{series} never came:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The generation `/readyz?verbose` names.
async fn generation(server: &Server) -> String {
    let (_, body) = server.get("/readyz?verbose").await;
    let line = body
        .lines()
        .find(|l| l.starts_with("configuration: generation "))
        .unwrap_or_else(|| panic!("{body}"));
    line.split_whitespace().nth(2).unwrap().to_owned()
}

/// The line of the request `uid` in the decision log `path`.
fn logged(path: &std::path::Path, uid: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|line| line["uid"] == uid)
        .unwrap_or_else(|| panic!("no line for {uid}"))
}

#[tokio::test]
async fn a_configuration_edited_under_load_is_swapped_in_without_a_failed_request() {
    let first = registries(&["nvcr.io/"]);
    let scratch = tempfile::tempdir().unwrap();
    let log = scratch.path().join("decisions.log");
    let server = Arc::new(
        Server::start(Options {
            config: Some(&first),
            args: &[
                "--decision-log",
                log.to_str().unwrap(),
                "--decision-log-fsync=answer",
            ],
            ..Options::default()
        })
        .await,
    );
    let config = server.dir.path().join("config.yaml");
    let old_generation = generation(&server).await;
    let docker = review("CREATE", &pod("docker.io/library/python:3.12"));
    let denied = server.review("/validate", &docker).await;
    assert_eq!(denied["allowed"], false);
    assert_eq!(
        logged(&log, docker["request"]["uid"].as_str().unwrap())["config"],
        old_generation.as_str()
    );

    // Load with the standard GPU pod (allowed by both configurations).
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (server, stop, sent, failed) =
                (server.clone(), stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answer = server
                        .client
                        .post(server.endpoint("/validate"))
                        .json(&standard_request())
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    let ok = match answer {
                        Ok(response) if response.status() == 200 => response
                            .json::<Value>()
                            .await
                            .is_ok_and(|a| a["response"]["allowed"] == true),
                        _ => false,
                    };
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::write(&config, registries(&["nvcr.io/", "docker.io/"])).unwrap();
    until_metric(&server, "tollgate_config_generation", |g| g == 2.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("reload under load: {sent} requests over HTTPS, {failed} failed");
    assert_eq!(failed, 0);
    assert!(sent > 50, "{sent}");

    // The new configuration decides, and the log says which one did.
    let new_generation = generation(&server).await;
    assert_ne!(new_generation, old_generation);
    let docker = review("CREATE", &pod("docker.io/library/python:3.12"));
    assert_eq!(server.review("/validate", &docker).await["allowed"], true);
    assert_eq!(
        logged(&log, docker["request"]["uid"].as_str().unwrap())["config"],
        new_generation.as_str()
    );

    // Broken edits are refused: the previous configuration serves on. One
    // that does not parse…
    std::fs::write(
        &config,
        "policies: [{name: broken, module: builtin:nothing-here}]\n",
    )
    .unwrap();
    until_metric(
        &server,
        "tollgate_config_reloads_total{result=\"failed\"}",
        |n| n >= 1.0,
    )
    .await;
    let (status, body) = server.get("/readyz?verbose").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("policy \"broken\": module: no built-in policy \"nothing-here\""),
        "{body}"
    );
    // …and one whose new policy does not load.
    let missing = server.dir.path().join("missing.wasm");
    let text = registries(&["nvcr.io/", "docker.io/"])
        + &format!("  - name: extra\n    module: {}\n", missing.display());
    std::fs::write(&config, text).unwrap();
    until_metric(
        &server,
        "tollgate_config_reloads_total{result=\"failed\"}",
        |n| n >= 2.0,
    )
    .await;
    let (_, body) = server.get("/readyz?verbose").await;
    assert!(
        body.contains("last change refused: policy \"extra\" failed to load: cannot read module"),
        "{body}"
    );
    let docker = review("CREATE", &pod("docker.io/library/python:3.12"));
    assert_eq!(server.review("/validate", &docker).await["allowed"], true);
    assert_eq!(generation(&server).await, new_generation);
    assert!(
        server
            .log()
            .contains("configuration refused, the previous one serves on")
    );

    // SIGHUP reads it again (here: the same text as serving).
    std::fs::write(&config, registries(&["nvcr.io/", "docker.io/"])).unwrap();
    until_metric(
        &server,
        "tollgate_config_reloads_total{result=\"unchanged\"}",
        |n| n >= 1.0,
    )
    .await;
    let (_, body) = server.get("/readyz?verbose").await;
    assert!(
        !body.contains("last change refused"),
        "back to the serving text: {body}"
    );
    let before = metric(
        &server,
        "tollgate_config_reloads_total{result=\"unchanged\"}",
    )
    .await;
    server.signal("HUP");
    until_metric(
        &server,
        "tollgate_config_reloads_total{result=\"unchanged\"}",
        |n| n > before,
    )
    .await;
    assert_eq!(metric(&server, "tollgate_config_generation").await, 2.0);
}

#[tokio::test]
async fn a_policy_that_cannot_load_leaves_the_replica_ready_and_answers_with_its_failure_policy() {
    let missing = test_policy("does-not-exist");
    let config = format!(
        r#"
policies:
  - name: missing
    module: "{}"
    failurePolicy: fail
    match: {{namespaces: [guarded]}}
  - name: registries
    module: builtin:image-registries
    settings: {{allowedRegistries: [nvcr.io/]}}
"#,
        missing.display()
    );
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (_, verbose) = server.get("/readyz?verbose").await;
    assert!(
        verbose.contains("policy \"missing\" failed to load: cannot read module"),
        "{verbose}"
    );
    // The working policy decides.
    let elsewhere = review("CREATE", &pod("docker.io/x:1"));
    let answer = server.review("/validate", &elsewhere).await;
    assert_eq!(answer["allowed"], false);
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("registries:")
    );
    // The broken one answers with its failurePolicy where it applies.
    let mut guarded = pod("nvcr.io/x:1");
    guarded["metadata"]["namespace"] = json!("guarded");
    let mut request = review("CREATE", &guarded);
    request["request"]["namespace"] = json!("guarded");
    let answer = server.review("/validate", &request).await;
    assert_eq!(answer["allowed"], false);
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy \"missing\" failed: the policy failed to load"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_configuration_in_a_configmap_is_watched_through_the_apiserver() {
    let apiserver = tollgate_e2e::apiserver::Apiserver::start().await;
    let path = "/api/v1/namespaces/tollgate-system/configmaps/tollgate-config";
    let configmap = |text: String| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "tollgate-config", "namespace": "tollgate-system"},
               "data": {"config.yaml": text}})
    };
    apiserver.put(path, configmap(registries(&["nvcr.io/"])));
    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    apiserver.kubeconfig(&kubeconfig);
    let server = Server::start(Options {
        args: &[
            "--config",
            "configmap:tollgate-system/tollgate-config",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        ..Options::default()
    })
    .await;
    let docker = || review("CREATE", &pod("docker.io/library/python:3.12"));
    assert_eq!(
        server.review("/validate", &docker()).await["allowed"],
        false
    );
    let (_, body) = server.get("/readyz?verbose").await;
    assert!(
        body.contains("from configmap:tollgate-system/tollgate-config"),
        "{body}"
    );

    // An edit of the ConfigMap reaches the server through its watch.
    apiserver.put(path, configmap(registries(&["nvcr.io/", "docker.io/"])));
    until_metric(&server, "tollgate_config_generation", |g| g == 2.0).await;
    assert_eq!(server.review("/validate", &docker()).await["allowed"], true);

    // A version without config.yaml is refused; the last one serves on.
    apiserver.put(
        path,
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "tollgate-config", "namespace": "tollgate-system"},
               "data": {"other": "x"}}),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.log().contains("has no key \"config.yaml\"") {
        assert!(Instant::now() < deadline, "{}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.review("/validate", &docker()).await["allowed"], true);
}

#[tokio::test]
async fn watched_kinds_report_their_health_and_follow_the_apiserver() {
    let apiserver = tollgate_e2e::apiserver::Apiserver::start().await;
    let gpu_pod = |name: &str| gpu_pod("ml", name, 1);
    apiserver.put(
        "/api/v1/namespaces/ml",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}),
    );
    for name in ["a", "b"] {
        apiserver.put(&format!("/api/v1/namespaces/ml/pods/{name}"), gpu_pod(name));
    }
    let scratch = tempfile::tempdir().unwrap();
    let kubeconfig = scratch.path().join("kubeconfig");
    apiserver.kubeconfig(&kubeconfig);
    let config = r#"
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    match: {kinds: [Pod], operations: [CREATE]}
    context: [{apiVersion: v1, kind: Pod}, {apiVersion: v1, kind: Namespace}]
    settings:
      scopes:
        - namespaces: [ml]
          limits: {nvidia.com/gpu: 3}
"#;
    // Ready only once the fail-closed policy's kinds are listed.
    let server = Server::start(Options {
        config: Some(config),
        args: &["--kubeconfig", kubeconfig.to_str().unwrap()],
        ..Options::default()
    })
    .await;
    let (_, verbose) = server.get("/readyz?verbose").await;
    assert!(
        verbose.contains("context v1/Pod: synced, 2 objects, last event "),
        "{verbose}"
    );
    assert!(
        verbose.contains("cluster context: live cluster (3 objects)"),
        "{verbose}"
    );
    until_metric(&server, "tollgate_context_objects{kind=\"v1/Pod\"}", |n| {
        n == 2.0
    })
    .await;
    assert!(
        metric(
            &server,
            "tollgate_context_last_event_age_seconds{kind=\"v1/Pod\"}"
        )
        .await
            >= 0.0
    );

    // A pod created in the cluster reaches the cache through the watch,
    // and the quota counts it.
    apiserver.put("/api/v1/namespaces/ml/pods/c", gpu_pod("c"));
    until_metric(&server, "tollgate_context_objects{kind=\"v1/Pod\"}", |n| {
        n == 3.0
    })
    .await;
    let answer = server
        .review("/validate", &review("CREATE", &gpu_pod("d")))
        .await;
    assert_eq!(answer["allowed"], false, "3 of 3 GPUs are in use: {answer}");
}
