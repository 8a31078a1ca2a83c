//! The webhook stays answerable: one deadline per request (the apiserver's
//! `?timeout=`), probes and handshakes served while policies run long, and
//! clients that send slowly cut off without holding up the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tollgate_e2e::{Options, Server, review, standard_request, test_policy};

fn spinning(timeout_ms: u64, failure_policy: &str) -> String {
    let module = test_policy("misbehave").display().to_string();
    format!(
        r#"
policies:
  - {{name: spin, module: "{module}", settings: {{behaviour: loop}}, timeoutMs: {timeout_ms}, failurePolicy: {failure_policy}, match: {{namespaces: [spin]}}}}
  - {{name: registries, module: builtin:image-registries, settings: {{allowedRegistries: [nvcr.io/]}}}}
"#
    )
}

fn pod(namespace: &str) -> serde_json::Value {
    review(
        "CREATE",
        &json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace},
            "spec": {"containers": [{"name": "c", "image": "nvcr.io/x:1"}]}}),
    )
}

/// A TLS connection to the server, spoken to by hand (HTTP/1.1).
async fn connect(server: &Server) -> TlsStream<TcpStream> {
    let config = tollgate_e2e::tls_config(&server.dir.path().join("certs/ca.crt"));
    let address = server.url.trim_start_matches("https://");
    let tcp = TcpStream::connect(address).await.expect("connecting");
    TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TlsStream<TcpStream>) -> String {
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received).await;
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn the_apiservers_timeout_bounds_the_request_and_the_failure_policy_answers() {
    let config = spinning(5000, "fail");
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    let started = Instant::now();
    let body = serde_json::to_vec(&pod("spin")).unwrap();
    let (status, text) = server.post_raw("/validate?timeout=1s", body).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200, "{text}");
    let response: serde_json::Value = serde_json::from_str(&text).unwrap();
    let message = response["response"]["status"]["message"].as_str().unwrap();
    // The policy that was running is cut short; the one after it is not run.
    assert_eq!(
        message,
        "policy \"spin\" failed: the request's deadline passed before the policy finished (its own deadline is 5000 ms) (failurePolicy: fail); \
         policy \"registries\" failed: the request's deadline passed before the policy ran (failurePolicy: fail)"
    );
    // 1 s less the 250 ms margin, not the policy's 5 s.
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(
            "tollgate_policy_failures_total{policy=\"spin\",reason=\"request-deadline\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn probes_and_new_connections_are_served_while_every_evaluation_slot_runs_long() {
    let config = spinning(3000, "ignore");
    let server = Server::start(Options {
        config: Some(&config),
        args: &["--evaluation-threads", "2"],
        ..Options::default()
    })
    .await;
    let long: Vec<_> = (0..2)
        .map(|_| {
            let client = server.client.clone();
            let url = server.endpoint("/validate");
            tokio::spawn(async move {
                let started = Instant::now();
                let status = client
                    .post(url)
                    .json(&pod("spin"))
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status, started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new client: a new TCP connection and TLS handshake.
    let fresh = tollgate_e2e::client(&server.dir.path().join("certs/ca.crt"));
    let started = Instant::now();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = fresh.get(server.endpoint(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let probes = started.elapsed();
    for handle in long {
        let (status, took) = handle.await.unwrap();
        assert_eq!(status, 200);
        assert!(took >= Duration::from_secs(2), "the loops ran: {took:?}");
    }
    assert!(
        probes < Duration::from_secs(2),
        "probes waited for the evaluations: {probes:?}"
    );
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_and_others_are_served_meanwhile() {
    let server = Server::start(Options {
        args: &["--header-read-timeout", "1s", "--body-read-timeout", "1s"],
        ..Options::default()
    })
    .await;
    // Slowloris: a request line and headers, a byte at a time.
    let mut slow_headers = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&server).await;
        stream
            .write_all(b"POST /validate HTTP/1.1\r\n")
            .await
            .unwrap();
        slow_headers.push(tokio::spawn(async move {
            let started = Instant::now();
            for byte in b"Host: localhost\r\nX-Slow: 1111111111\r\n" {
                if stream.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = until_closed(&mut stream).await;
            started.elapsed()
        }));
    }
    // A body promised and sent a byte at a time.
    let mut slow_body = connect(&server).await;
    slow_body
        .write_all(
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let body_task = tokio::spawn(async move {
        let started = Instant::now();
        let mut answer = String::new();
        for _ in 0..30 {
            if slow_body.write_all(b" ").await.is_err() {
                break;
            }
            let mut buffer = [0u8; 512];
            match tokio::time::timeout(Duration::from_millis(100), slow_body.read(&mut buffer))
                .await
            {
                Ok(Ok(n)) if n > 0 => {
                    answer.push_str(&String::from_utf8_lossy(&buffer[..n]));
                    break;
                }
                Ok(_) => break,
                Err(_) => {}
            }
        }
        (answer, started.elapsed())
    });
    // Meanwhile, normal requests are answered.
    for _ in 0..10 {
        let started = Instant::now();
        let response = server.review("/validate", &standard_request()).await;
        assert_eq!(response["allowed"], true);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    for handle in slow_headers {
        let held = handle.await.unwrap();
        assert!(
            held < Duration::from_secs(3),
            "a slow client held its connection for {held:?}"
        );
    }
    let (answer, took) = body_task.await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "after {took:?}: {answer:?}"
    );
    assert!(
        answer.contains("the request body did not arrive in time"),
        "{answer}"
    );
}

#[tokio::test]
async fn past_the_connection_cap_clients_wait_for_a_free_connection() {
    let server = Server::start(Options {
        args: &["--max-connections", "3", "--header-read-timeout", "2s"],
        ..Options::default()
    })
    .await;
    // Silent connections until one is not accepted (the harness's own
    // client may hold one of the three).
    let mut idle = Vec::new();
    while let Ok(stream) = tokio::time::timeout(Duration::from_millis(500), connect(&server)).await
    {
        idle.push(stream);
        assert!(
            idle.len() <= 3,
            "more connections than the cap were accepted"
        );
    }
    let started = Instant::now();
    let fresh = tollgate_e2e::client(&server.dir.path().join("certs/ca.crt"));
    let response = fresh
        .post(server.endpoint("/validate"))
        .json(&standard_request())
        .send()
        .await
        .expect("served once a connection is free");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "served at once: the cap did not hold ({:?})",
        started.elapsed()
    );
    // The silent connections were closed for saying nothing.
    for mut stream in idle {
        until_closed(&mut stream).await;
    }
}
