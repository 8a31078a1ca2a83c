//! `gpu-quota` through `tollgate serve` over HTTPS: exact under 200
//! concurrent admissions, dry runs reserve nothing, reservations lapse, and
//! usage comes from a manifest snapshot (`--context`).

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, gpu_pod, review};

/// One scope: namespace `ml`, at most `limit` GPUs.
fn config(limit: u64, ttl_seconds: u64) -> String {
    format!(
        r#"
quota: {{reservationTtlSeconds: {ttl_seconds}}}
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    match: {{kinds: [Pod], operations: [CREATE]}}
    context: [{{apiVersion: v1, kind: Pod}}]
    settings:
      scopes:
        - {{namespaces: [ml], limits: {{nvidia.com/gpu: {limit}}}}}
"#
    )
}

async fn start(config: &str, snapshot: &Path) -> Server {
    let snapshot = snapshot.to_str().unwrap();
    Server::start(Options {
        config: Some(config),
        args: &["--context", snapshot],
        ..Options::default()
    })
    .await
}

/// Sends `count` CREATEs of one-GPU pods at once; returns the responses.
async fn burst(server: &Server, prefix: &str, count: usize, dry_run: bool) -> Vec<Value> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let client = server.client.clone();
            let url = server.endpoint("/validate");
            let mut body = review("CREATE", &gpu_pod("ml", &format!("{prefix}-{i}"), 1));
            body["request"]["dryRun"] = json!(dry_run);
            tokio::spawn(async move {
                let response = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.json::<Value>().await.unwrap()["response"].clone()
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }
    responses
}

fn admitted(responses: &[Value]) -> usize {
    responses.iter().filter(|r| r["allowed"] == true).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_creates_admit_exactly_the_limit() {
    let empty = tempfile::tempdir().unwrap();
    let server = start(&config(50, 600), empty.path()).await;

    let dry = burst(&server, "dry", 200, true).await;
    assert_eq!(
        admitted(&dry),
        200,
        "dry runs are checked against an empty ledger"
    );

    let real = burst(&server, "real", 200, false).await;
    assert_eq!(
        admitted(&real),
        50,
        "exactly the limit, after 200 dry runs reserved nothing"
    );
    let denial = real
        .iter()
        .find(|r| r["allowed"] == false)
        .and_then(|r| r["status"]["message"].as_str())
        .unwrap();
    assert!(
        denial.starts_with(
            "gpu-quota: namespace \"ml\" would use 51 nvidia.com/gpu, limit 50: 0 in use, 50 reserved by admissions in flight; this pod asks 1"
        ),
        "{denial}"
    );
    let fits = real.iter().find(|r| r["allowed"] == true).unwrap();
    assert_eq!(
        fits["auditAnnotations"]["gpu-quota.usage"]
            .as_str()
            .unwrap()
            .split(' ')
            .next(),
        Some("namespace"),
        "{fits}"
    );
    // Another namespace is not in the scope.
    let other = server
        .review(
            "/validate",
            &review("CREATE", &gpu_pod("research", "free", 8)),
        )
        .await;
    assert_eq!(other["allowed"], true);
}

#[tokio::test]
async fn reservations_lapse_after_their_ttl() {
    let empty = tempfile::tempdir().unwrap();
    // Long enough that a burst on a loaded CI machine ends inside it.
    let server = start(&config(2, 3), empty.path()).await;
    assert_eq!(admitted(&burst(&server, "first", 3, false).await), 2);
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(
        admitted(&burst(&server, "second", 3, false).await),
        2,
        "the first two reservations lapsed"
    );
}

#[tokio::test]
async fn usage_comes_from_the_snapshot_and_teams_span_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let namespace = |name: &str, team: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"team": team}}});
    // A `kubectl get -o yaml`-style List and a multi-document file.
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        namespace("vision-a", "vision"), namespace("vision-b", "vision"), namespace("nlp", "nlp")]});
    std::fs::write(dir.path().join("namespaces.json"), list.to_string()).unwrap();
    let pods: Vec<String> = [
        gpu_pod("vision-a", "a1", 4),
        gpu_pod("vision-a", "a2", 2),
        gpu_pod("vision-b", "b1", 4),
        gpu_pod("vision-b", "b2", 1),
        gpu_pod("vision-b", "b3", 1),
        gpu_pod("nlp", "n1", 12),
    ]
    .iter()
    .map(|p| serde_yaml::to_string(p).unwrap())
    .collect();
    std::fs::write(dir.path().join("pods.yaml"), pods.join("---\n")).unwrap();
    let config = r#"
policies:
  - name: gpu-quota
    module: builtin:gpu-quota
    match: {kinds: [Pod], operations: [CREATE]}
    context: [{apiVersion: v1, kind: Pod}, {apiVersion: v1, kind: Namespace}]
    settings:
      scopes:
        - namespaceSelector: {matchExpressions: [{key: team, operator: Exists}]}
          aggregate: team
          limits: {nvidia.com/gpu: 16}
"#;
    let server = start(config, dir.path()).await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert!(ready.contains("cluster context: snapshot of "), "{ready}");
    assert!(ready.contains("(9 objects)"), "{ready}");
    // Each cached kind's health, in /readyz?verbose and in /metrics.
    let (_, verbose) = server.get("/readyz?verbose").await;
    assert!(
        verbose.contains(
            "context v1/Pod: synced, 6 objects, last event none yet, 0 relists, 0 errors"
        ),
        "{verbose}"
    );
    assert!(
        verbose.contains("context v1/Namespace: synced, 3 objects"),
        "{verbose}"
    );
    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "tollgate_context_objects{kind=\"v1/Pod\"} 6",
        "tollgate_context_objects{kind=\"v1/Namespace\"} 3",
        "tollgate_context_relists{kind=\"v1/Pod\"} 0",
        "tollgate_context_errors{kind=\"v1/Pod\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    let response = server
        .review(
            "/validate",
            &review("CREATE", &gpu_pod("vision-b", "big", 6)),
        )
        .await;
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "gpu-quota: team \"vision\" would use 18 nvidia.com/gpu, limit 16: 12 in use by 5 pods in namespaces vision-a, vision-b; this pod asks 6"
    );
    let response = server
        .review("/validate", &review("CREATE", &gpu_pod("nlp", "fits", 4)))
        .await;
    assert_eq!(response["allowed"], true);
    assert_eq!(
        response["auditAnnotations"]["gpu-quota.usage"],
        "team \"nlp\" 16/16 nvidia.com/gpu"
    );
}

#[tokio::test]
async fn without_any_cluster_context_the_failure_policy_applies_and_readyz_says_so() {
    let server = Server::start(Options {
        config: Some(&config(50, 60)),
        ..Options::default()
    })
    .await;
    let (status, ready) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert!(
        ready.contains("no cluster context")
            && ready.contains("policies gpu-quota fail per their failurePolicy"),
        "{ready}"
    );
    let response = server
        .review("/validate", &review("CREATE", &gpu_pod("ml", "p", 1)))
        .await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("policy \"gpu-quota\" failed: policy error: no cluster context: run tollgate with a kubeconfig")
            && message.ends_with("(failurePolicy: fail)"),
        "{message}"
    );
}
