//! Untrusted input gets a clear 400, never a crash or a hang, and the server
//! keeps serving.

use tollgate_e2e::{Options, Server, standard_request, workspace};

#[tokio::test]
async fn malformed_reviews_get_400_with_a_message_and_the_server_keeps_serving() {
    let server = Server::start_default().await;
    let mut no_uid = standard_request();
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut v1beta1 = standard_request();
    v1beta1["apiVersion"] = "admission.k8s.io/v1beta1".into();
    let mut no_request = standard_request();
    no_request.as_object_mut().unwrap().remove("request");
    let mut wrong_kind = standard_request();
    wrong_kind["kind"] = "Pod".into();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "invalid AdmissionReview JSON"),
        (b"".to_vec(), "invalid AdmissionReview JSON"),
        (
            serde_json::to_vec(&no_uid).unwrap(),
            "the AdmissionReview request has no uid",
        ),
        (
            serde_json::to_vec(&v1beta1).unwrap(),
            "unsupported apiVersion \"admission.k8s.io/v1beta1\"",
        ),
        (
            serde_json::to_vec(&no_request).unwrap(),
            "the AdmissionReview has no request",
        ),
        (
            serde_json::to_vec(&wrong_kind).unwrap(),
            "unsupported kind \"Pod\"",
        ),
        (vec![b'['; 1 << 20], "invalid AdmissionReview JSON"),
    ];
    for (body, expected) in cases {
        for path in ["/validate", "/mutate"] {
            let (status, message) = server.post_raw(path, body.clone()).await;
            assert_eq!(status, 400, "{path} {expected}: {message}");
            assert!(
                message.starts_with(expected),
                "{path}: expected {expected:?}, got {message:?}"
            );
        }
    }
    let response = server.review("/validate", &standard_request()).await;
    assert_eq!(response["allowed"], true);
}

/// An UPDATE review of an object of `bytes` (in an annotation), with the
/// same object as its old object.
fn large_update(bytes: usize) -> serde_json::Value {
    let mut request = standard_request();
    let object = &mut request["request"]["object"];
    object["metadata"]["annotations"]["padding"] = "x".repeat(bytes).into();
    request["request"]["oldObject"] = object.clone();
    request["request"]["operation"] = "UPDATE".into();
    request
}

#[tokio::test]
async fn an_update_of_two_objects_at_the_apiservers_limit_is_evaluated() {
    // The default policies, with deadlines that a 2-core machine running the
    // other tests beside this one can meet for 6 MiB: sizes are under test
    // here, not deadlines (tests/e2e/hardening.rs tests those).
    let mut config: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(workspace().join("webhook/config/default.yaml")).unwrap(),
    )
    .unwrap();
    for policy in config["policies"].as_sequence_mut().unwrap() {
        policy["timeoutMs"] = 2000.into();
    }
    let config = serde_yaml::to_string(&config).unwrap();
    let server = Server::start(Options {
        config: Some(&config),
        ..Options::default()
    })
    .await;
    // Object and old object each near the apiserver's 3 MiB: about 6 MiB.
    let request = large_update((3 << 20) - 16 * 1024);
    let response = server.review("/validate", &request).await;
    assert_eq!(response["allowed"], true, "{response}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let server = Server::start_default().await;
    let request = large_update(3 << 20);
    let (status, message) = server
        .post_raw("/validate", serde_json::to_vec(&request).unwrap())
        .await;
    // Object and old object of just over 3 MiB each, and a larger envelope.
    let mut request = request;
    request["request"]["options"]["padding"] = "y".repeat(1 << 20).into();
    let (over_status, over_message) = server
        .post_raw("/validate", serde_json::to_vec(&request).unwrap())
        .await;
    assert_eq!((status, over_status), (200, 413), "{message}");
    assert_eq!(over_message, "request body exceeds the 7 MiB limit\n");
    assert_eq!(
        server.review("/validate", &standard_request()).await["allowed"],
        true
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(
            "tollgate_admission_requests_total{endpoint=\"validate\",result=\"invalid\"} 1"
        )
    );
}

#[tokio::test]
async fn a_timeout_that_is_not_a_duration_is_refused_with_400() {
    let server = Server::start_default().await;
    let body = serde_json::to_vec(&standard_request()).unwrap();
    let (status, message) = server.post_raw("/validate?timeout=soon", body).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("invalid timeout \"soon\""), "{message}");
}
