//! Misbehaving policies (`tests/policies/misbehave`) are contained within
//! their limits, get their failure policy, and never stop the server from
//! answering other requests.

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_e2e::{Options, Server, review, test_policy};

fn config() -> String {
    let module = test_policy("misbehave").display().to_string();
    format!(
        r#"
policies:
  - {{name: loops, module: "{module}", settings: {{behaviour: loop}}, timeoutMs: 50, match: {{namespaces: [loop]}}}}
  - {{name: hoards, module: "{module}", settings: {{behaviour: allocate}}, memoryLimitMb: 32, timeoutMs: 5000, match: {{namespaces: [alloc]}}}}
  - {{name: traps, module: "{module}", settings: {{behaviour: trap}}, failurePolicy: ignore, match: {{namespaces: [trap]}}}}
  - {{name: deep, module: "{module}", settings: {{behaviour: stack-overflow}}, match: {{namespaces: [stack]}}}}
  - {{name: chatty, module: "{module}", settings: {{behaviour: huge-output}}, timeoutMs: 5000, match: {{namespaces: [huge]}}}}
  - {{name: warns, module: "{module}", settings: {{behaviour: empty-warnings}}, memoryLimitMb: 512, timeoutMs: 10000, match: {{namespaces: [warnings]}}}}
  - {{name: shouts, module: "{module}", settings: {{behaviour: huge-message}}, memoryLimitMb: 512, timeoutMs: 10000, match: {{namespaces: [message]}}}}
  - {{name: garbles, module: "{module}", mutating: true, settings: {{behaviour: mutate-garbage}}, match: {{namespaces: [garbage]}}}}
  - {{name: logs, module: "{module}", settings: {{behaviour: log-flood}}, timeoutMs: 5000, match: {{namespaces: [logs]}}}}
  - {{name: lists, module: "{module}", settings: {{behaviour: list-flood}}, timeoutMs: 5000, context: [{{apiVersion: v1, kind: Pod}}], match: {{namespaces: [lists]}}}}
  - {{name: reserves, module: "{module}", settings: {{behaviour: reserve-flood}}, timeoutMs: 5000, context: [{{apiVersion: v1, kind: Pod}}], match: {{namespaces: [quota]}}}}
  - {{name: counter, module: "{module}", settings: {{behaviour: count}}, match: {{namespaces: [count]}}}}
"#
    )
}

/// A cluster of a few pods, for the policies that read context.
fn cluster(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cluster.yaml");
    let pods: Vec<String> = (0..20)
        .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: lists}}\n"))
        .collect();
    std::fs::write(&path, pods.join("---\n")).unwrap();
    path
}

fn pod(namespace: &str) -> serde_json::Value {
    review(
        "CREATE",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "nvcr.io/x:1"}]}}),
    )
}

#[tokio::test]
async fn each_misbehaviour_is_contained_and_named_in_the_answer() {
    let config = config();
    let dir = tempfile::tempdir().unwrap();
    let cluster = cluster(dir.path()).display().to_string();
    let server = Server::start(Options {
        config: Some(&config),
        args: &["--context", &cluster],
        ..Default::default()
    })
    .await;
    let cases = [
        (
            "loop",
            false,
            "policy \"loops\" failed: policy exceeded its deadline of 50 ms (failurePolicy: fail)",
        ),
        (
            "alloc",
            false,
            "policy \"hoards\" failed: policy exceeded its memory limit of 32 MiB (failurePolicy: fail)",
        ),
        ("stack", false, "policy \"deep\" failed: policy trapped: "),
        (
            "huge",
            false,
            "policy \"chatty\" failed: policy output of 16777216 bytes exceeds the limit",
        ),
        (
            "warnings",
            false,
            "policy \"warns\" failed: policy output is invalid: too much data is being copied between the host and the guest",
        ),
        (
            "message",
            false,
            "policy \"shouts\" failed: policy output of 104857600 bytes exceeds the limit of 4194304 bytes",
        ),
        (
            "garbage",
            false,
            "policy \"garbles\" failed: the mutated object is not a JSON object",
        ),
        (
            "logs",
            false,
            "policy \"logs\" failed: policy made more than 1024 host calls in one evaluation",
        ),
        (
            "lists",
            false,
            "policy \"lists\" failed: policy made more than 1024 host calls in one evaluation",
        ),
        (
            "quota",
            false,
            "policy \"reserves\" failed: policy made more than 1024 host calls in one evaluation",
        ),
        ("trap", true, ""),
    ];
    for (namespace, allowed, message) in cases {
        let started = Instant::now();
        let endpoint = if namespace == "garbage" {
            "/mutate"
        } else {
            "/validate"
        };
        let response = server.review(endpoint, &pod(namespace)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{namespace} took {:?}",
            started.elapsed()
        );
        assert_eq!(response["allowed"], allowed, "{namespace}: {response}");
        if allowed {
            let warning = response["warnings"][0].as_str().unwrap();
            assert!(
                warning.starts_with("policy \"traps\" failed and was ignored: policy trapped"),
                "{warning}"
            );
        } else {
            assert_eq!(response["status"]["code"], 500);
            let text = response["status"]["message"].as_str().unwrap();
            assert!(text.starts_with(message), "{namespace}: {text}");
        }
    }
    let (_, metrics) = server.get("/metrics").await;
    for expected in [
        "tollgate_policy_evaluations_total{policy=\"loops\",result=\"failed\"} 1",
        "tollgate_policy_failures_total{policy=\"loops\",reason=\"timeout\"} 1",
        "tollgate_policy_failures_total{policy=\"hoards\",reason=\"memory\"} 1",
        "tollgate_policy_failures_total{policy=\"deep\",reason=\"trap\"} 1",
        "tollgate_policy_failures_total{policy=\"warns\",reason=\"output\"} 1",
        "tollgate_policy_failures_total{policy=\"logs\",reason=\"host-calls\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected}: {metrics}");
    }
    // The log got no forged line from the flood, and a note of the drop.
    let log = server.log();
    assert!(
        !log.contains("\nwith a forged line"),
        "a policy forged a log line"
    );
    assert!(log.contains("log lines dropped"), "{log}");
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn other_requests_are_answered_while_policies_loop_and_no_state_leaks() {
    let config = config();
    let server = Server::start(Options {
        config: Some(&config),
        ..Default::default()
    })
    .await;
    let looping: Vec<_> = (0..8)
        .map(|_| {
            let client = server.client.clone();
            let url = server.endpoint("/validate");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&pod("loop"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    for _ in 0..20 {
        let response = server.review("/validate", &pod("count")).await;
        assert_eq!(response["allowed"], true);
        // A fresh instance per request: the counter never sees a second call.
        assert_eq!(
            response["auditAnnotations"]["counter.calls"], "1",
            "{response}"
        );
    }
    for handle in looping {
        assert_eq!(handle.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_policy_that_fails_to_load_is_named_by_readyz_while_the_rest_serve() {
    let module = test_policy("misbehave").display().to_string();
    let config = format!(
        r#"
policies:
  - {{name: stuck, module: "{module}", settings: {{behaviour: loop-in-settings}}, timeoutMs: 30, match: {{namespaces: [stuck]}}}}
  - {{name: starting, module: "{start}", timeoutMs: 30, match: {{namespaces: [starting]}}}}
  - {{name: fine, module: builtin:image-registries, settings: {{allowedRegistries: [nvcr.io/]}}}}
"#,
        start = test_policy("start-loop").display()
    );
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    // Ready: every replica would fail to load them the same way; their
    // failurePolicy answers instead.
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        "ready: 1 policies loaded, 2 failed to load and answer with their failurePolicy (see /readyz?verbose)\n"
    );
    let (status, body) = server.get("/readyz?verbose").await;
    assert_eq!(status, 200);
    for line in [
        "policy \"stuck\" failed to load: validate-settings failed: policy exceeded its deadline of 30 ms; its failurePolicy (fail) answers its requests\n",
        "policy \"starting\" failed to load: validate-settings failed: policy's start function exceeded its deadline of 30 ms; its failurePolicy (fail) answers its requests\n",
        "policy \"fine\": loaded (failurePolicy fail)\n",
    ] {
        assert!(body.contains(line), "{body}");
    }
    assert_eq!(
        server.review("/validate", &pod("default")).await["allowed"],
        true
    );
    let response = server.review("/validate", &pod("stuck")).await;
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("policy \"stuck\" failed: the policy failed to load")
    );
}
