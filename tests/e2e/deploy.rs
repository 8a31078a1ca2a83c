//! `deploy/`: every overlay renders with `kubectl kustomize`, every object
//! is its Kubernetes type, the pieces refer to each other correctly, and
//! the binary accepts the arguments the manifests give it.

use std::collections::BTreeSet;
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use tollgate_e2e::{binary, workspace};

/// The objects of `kubectl kustomize deploy/overlays/<overlay>`.
fn render(overlay: &str) -> Vec<Value> {
    let path = workspace().join("deploy/overlays").join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("kubectl is needed to render deploy/ (scripts/test installs it)");
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_yaml::Deserializer::from_str(std::str::from_utf8(&output.stdout).unwrap())
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect()
}

/// Deserializes `object` as `T`, failing on fields `T` does not know.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Value) -> T {
    let parsed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", describe(object)));
    // Whatever the type dropped was a field the apiserver would refuse.
    let back = serde_json::to_value(&parsed).unwrap();
    for key in object.as_object().unwrap().keys() {
        assert!(
            back.get(key).is_some() || ["apiVersion", "kind"].contains(&key.as_str()),
            "{}: field {key} is not a field of its kind",
            describe(object)
        );
    }
    parsed
}

fn describe(object: &Value) -> String {
    format!(
        "{} {}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["namespace"].as_str().unwrap_or(""),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

fn dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.'])
}

/// Checks every object as a client-side dry run would, and returns the
/// Deployment and CronJob, if any.
fn check(overlay: &str, objects: &[Value]) -> (Option<Deployment>, Option<CronJob>) {
    let mut seen = BTreeSet::new();
    let mut deployment = None;
    let mut cron_job = None;
    for object in objects {
        let kind = object["kind"].as_str().expect("kind");
        let name = object["metadata"]["name"].as_str().expect("metadata.name");
        assert!(object["apiVersion"].is_string(), "{}", describe(object));
        assert!(dns_label(name), "{overlay}: bad name {name:?}");
        assert!(
            seen.insert(describe(object)),
            "{overlay}: {} twice",
            describe(object)
        );
        match kind {
            "Namespace" => drop(typed::<Namespace>(object)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(object)),
            "ClusterRole" => {
                for rule in typed::<ClusterRole>(object).rules.unwrap_or_default() {
                    assert!(!rule.verbs.is_empty(), "{}", describe(object));
                }
            }
            "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(object)),
            "Role" => drop(typed::<Role>(object)),
            "RoleBinding" => drop(typed::<RoleBinding>(object)),
            "ConfigMap" => {
                let config = &object["data"]["config.yaml"];
                assert_eq!(
                    config.as_str(),
                    Some(
                        std::fs::read_to_string(workspace().join("webhook/config/default.yaml"))
                            .unwrap()
                            .as_str()
                    ),
                    "deploy/base/config.yaml is the embedded default configuration (the webhooks were generated from it)"
                );
            }
            "Deployment" => deployment = Some(typed::<Deployment>(object)),
            "CronJob" => cron_job = Some(typed::<CronJob>(object)),
            "Service" => drop(typed::<Service>(object)),
            "PodDisruptionBudget" => drop(typed::<PodDisruptionBudget>(object)),
            "NetworkPolicy" => drop(typed::<NetworkPolicy>(object)),
            "MutatingWebhookConfiguration" => drop(typed::<
                k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration,
            >(object)),
            "ValidatingWebhookConfiguration" => drop(typed::<
                k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
            >(object)),
            "CustomResourceDefinition" => {
                let crd = typed::<CustomResourceDefinition>(object);
                assert_eq!(crd.spec.group, "wgpolicyk8s.io");
                assert_eq!(crd.spec.versions[0].name, "v1alpha2");
            }
            // cert-manager's kinds: their CRDs are not here; check what
            // the CA injector and the Deployment rely on.
            "Issuer" | "Certificate" => {
                assert_eq!(object["apiVersion"], "cert-manager.io/v1");
                assert!(object["spec"].is_object(), "{}", describe(object));
            }
            other => panic!("{overlay}: unexpected kind {other}"),
        }
        let namespaced = !matches!(
            kind,
            "Namespace"
                | "ClusterRole"
                | "ClusterRoleBinding"
                | "CustomResourceDefinition"
                | "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
        );
        assert_eq!(
            object["metadata"]["namespace"].as_str(),
            namespaced.then_some("tollgate-system"),
            "{overlay}: {}",
            describe(object)
        );
    }
    (deployment, cron_job)
}

/// Runs the binary with `args` (with the configuration and cache made
/// local, and no cluster): a parse error is clap's exit status 2.
fn accepts(args: &[String]) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let config = workspace().join("deploy/base/config.yaml");
    let mut args: Vec<String> = args
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--config", _)) => format!("--config={}", config.display()),
            Some(("--cache-dir", _)) => format!("--cache-dir={}", scratch.path().display()),
            Some(("--out", _)) => format!("--out={}", scratch.path().join("out").display()),
            Some(("--addr" | "--probe-addr", _)) => {
                format!("{}=127.0.0.1:0", arg.split_once('=').unwrap().0)
            }
            _ => arg.clone(),
        })
        .collect();
    args.push(format!(
        "--kubeconfig={}",
        scratch.path().join("none").display()
    ));
    let output = Command::new(binary())
        .args(&args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_ne!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        !output.status.success(),
        "no cluster: {args:?} cannot succeed"
    );
    stderr
}

fn container_args(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<String> {
    spec.containers[0].args.clone().expect("args")
}

#[test]
fn the_self_managed_overlay_renders_a_complete_install() {
    let objects = render("self-managed");
    let (deployment, _) = check("self-managed", &objects);
    let deployment = deployment.expect("a Deployment");
    let spec = &deployment.spec;
    assert_eq!(spec.replicas, Some(2));
    let template = spec.template.spec.as_ref().unwrap();
    let pod_labels = spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    for (key, value) in spec.selector.match_labels.as_ref().unwrap() {
        assert_eq!(
            pod_labels.get(key),
            Some(value),
            "the selector selects the pods"
        );
    }
    // Restricted pod security for itself.
    let pod_security = template.security_context.as_ref().unwrap();
    assert_eq!(pod_security.run_as_non_root, Some(true));
    assert_eq!(
        pod_security.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let container = &template.containers[0];
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().unwrap().drop,
        Some(vec!["ALL".into()])
    );
    // Probes on the probe port, never the webhook's.
    for probe in [&container.readiness_probe, &container.liveness_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(
            serde_json::to_value(&get.port).unwrap(),
            "probes",
            "{get:?}"
        );
    }
    assert!(
        template.termination_grace_period_seconds.unwrap() > 5 + 10,
        "grace above the shutdown delay and the longest request"
    );
    let args = container_args(template);
    assert!(args.contains(&"--certs=self-managed".to_owned()));
    assert!(args.contains(&"--webhook-config=tollgate".to_owned()));
    let stderr = accepts(&args);
    assert!(stderr.contains("kubeconfig"), "{stderr}");

    // The Service reaches the webhook port; the webhooks name the Service.
    let service = objects.iter().find(|o| o["kind"] == "Service").unwrap();
    assert_eq!(service["spec"]["ports"][0]["port"], 443);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    for object in objects.iter().filter(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("WebhookConfiguration"))
    }) {
        assert_eq!(object["metadata"]["name"], "tollgate");
        for webhook in object["webhooks"].as_array().unwrap() {
            let reference = &webhook["clientConfig"]["service"];
            assert_eq!(reference["name"], service["metadata"]["name"]);
            assert_eq!(reference["namespace"], "tollgate-system");
        }
    }
}

#[test]
fn the_cert_manager_overlay_mounts_the_issued_secret_and_injects_its_ca() {
    let objects = render("cert-manager");
    let (deployment, _) = check("cert-manager", &objects);
    let deployment = deployment.unwrap();
    let template = deployment.spec.template.spec.unwrap();
    let args = container_args(&template);
    assert!(args.contains(&"--certs=mounted".to_owned()));
    let volume = template
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "certs")
        .unwrap();
    let secret = volume.secret.unwrap().secret_name.unwrap();
    let certificate = objects
        .iter()
        .find(|o| o["kind"] == "Certificate" && o["spec"]["secretName"] == secret.as_str())
        .expect("a Certificate writes the mounted Secret");
    let dns: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(dns.contains(&"tollgate.tollgate-system.svc"));
    let injected = format!(
        "tollgate-system/{}",
        certificate["metadata"]["name"].as_str().unwrap()
    );
    for object in objects.iter().filter(|o| {
        o["kind"]
            .as_str()
            .is_some_and(|k| k.ends_with("WebhookConfiguration"))
    }) {
        assert_eq!(
            object["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
            injected.as_str()
        );
    }
    let stderr = accepts(&args);
    assert!(stderr.contains("/certs/tls.crt"), "{stderr}");
}

#[test]
fn the_audit_overlay_adds_the_report_crds_and_a_scanning_cron_job() {
    let objects = render("audit");
    let (_, cron_job) = check("audit", &objects);
    let crds: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .map(|o| o["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        crds,
        [
            "clusterpolicyreports.wgpolicyk8s.io",
            "policyreports.wgpolicyk8s.io"
        ]
    );
    let cron_job = cron_job.expect("a CronJob");
    let pod = cron_job
        .spec
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    let args = container_args(&pod);
    assert_eq!(args[..4], ["audit", "scan", "--cluster", "--write-reports"]);
    let stderr = accepts(&args);
    assert!(stderr.contains("kubeconfig"), "{stderr}");
    // The ConfigMap it mounts is the generated one.
    let config_map = objects.iter().find(|o| o["kind"] == "ConfigMap").unwrap();
    let mounted = pod
        .volumes
        .unwrap()
        .into_iter()
        .find(|v| v.name == "config")
        .unwrap()
        .config_map
        .unwrap()
        .name;
    assert_eq!(config_map["metadata"]["name"], mounted.as_str());
}
