//! `tollgate audit`: the scanner over upstream fixtures (counts derived from
//! the fixtures' own pass/fail folders, and agreement with the webhook's
//! answers), its reports (the HTML one rendered in headless Chromium), and
//! the decision log under load and SIGTERM, checked by `audit verify`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_e2e::{Options, Server, binary, review, shared, workspace};

fn tollgate(args: &[&str]) -> (bool, String, String) {
    let _turn = tollgate_e2e::STARTUP.blocking_lock();
    let output = Command::new(binary())
        .args(args)
        .env(
            "TOLLGATE_CACHE_DIR",
            workspace().join("target/e2e-module-cache"),
        )
        .output()
        .expect("running tollgate");
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    files
}

fn scan(config: Option<&str>, manifests: &Path, out: &Path) -> Value {
    let dir = out.to_str().unwrap();
    let mut args = vec![
        "audit",
        "scan",
        "--manifests",
        manifests.to_str().unwrap(),
        "--out",
        dir,
    ];
    let config_file = out.with_extension("config.yaml");
    if let Some(config) = config {
        std::fs::write(&config_file, config).unwrap();
        args.extend(["--config", config_file.to_str().unwrap()]);
    }
    let (ok, stdout, stderr) = tollgate(&args);
    assert!(ok, "{stderr}");
    for file in [
        "report.html",
        "report.md",
        "report.json",
        "report.junit.xml",
        "policyreports.yaml",
    ] {
        assert!(stdout.contains(file), "{stdout}");
    }
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn scanning_psa_fixtures_gives_the_counts_of_their_pass_and_fail_folders() {
    let out = tempfile::tempdir().unwrap();
    for level in ["baseline", "restricted"] {
        for version in ["v1.0", "v1.25", "v1.37"] {
            let root = shared(&format!("conformance/psa/testdata/{level}/{version}"));
            let fail = yaml_files(&root.join("fail"));
            let pass = yaml_files(&root.join("pass"));
            let config = format!(
                "policies:\n  - name: pss\n    module: builtin:pod-security\n    settings: {{level: {level}, version: {version}}}\n"
            );
            let dir = out.path().join(format!("{level}-{version}"));
            let report = scan(Some(&config), &root, &dir);
            let what = format!("{level} {version}");
            assert_eq!(
                report["summary"]["objects"],
                fail.len() + pass.len(),
                "{what}"
            );
            assert_eq!(
                report["summary"]["byPolicy"]["pss"]["fail"],
                fail.len(),
                "{what}"
            );
            assert_eq!(
                report["summary"]["byPolicy"]["pss"]["pass"],
                pass.len(),
                "{what}"
            );
            assert_eq!(
                report["summary"]["bySeverity"]["high"]["fail"],
                fail.len(),
                "{what}"
            );
            // Objects come in file order: fail/ sorts before pass/.
            let objects = report["objects"].as_array().unwrap();
            for (object, file) in objects.iter().zip(fail.iter().chain(&pass)) {
                let expected = if fail.contains(file) { "fail" } else { "pass" };
                assert_eq!(
                    object["findings"][0]["result"],
                    expected,
                    "{what}: {}",
                    file.display()
                );
                assert_eq!(
                    object["namespace"], "default",
                    "manifests without a namespace land in default"
                );
            }
            let junit = std::fs::read_to_string(dir.join("report.junit.xml")).unwrap();
            assert_eq!(junit.matches("<testcase ").count(), fail.len() + pass.len());
            assert_eq!(junit.matches("<failure ").count(), fail.len());
            let reports = std::fs::read_to_string(dir.join("policyreports.yaml")).unwrap();
            assert_eq!(
                reports.matches("kind: PolicyReport\n").count(),
                fail.len() + pass.len()
            );
        }
    }
}

#[tokio::test]
async fn scanning_gpu_workloads_agrees_with_the_webhook() {
    let out = tempfile::tempdir().unwrap();
    let root = shared("conformance/gpu-workloads");
    let report = tokio::task::spawn_blocking({
        let (root, dir) = (root.clone(), out.path().join("report"));
        move || scan(None, &root, &dir)
    })
    .await
    .unwrap();
    // The same objects, as the webhook sees them.
    let mut documents = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for document in serde_yaml::Deserializer::from_str(&text) {
                let value: Value = serde::Deserialize::deserialize(document).unwrap();
                if value.is_object() {
                    documents.push(value);
                }
            }
        }
    }
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), documents.len());
    assert_eq!(report["summary"]["objects"], documents.len());
    let server = Server::start_default().await;
    let mut denied = 0;
    for (object, document) in objects.iter().zip(&documents) {
        assert_eq!(object["name"], document["metadata"]["name"]);
        let mut request = review("CREATE", document);
        request["request"]["dryRun"] = json!(true);
        let mutated = server.review("/mutate", &request).await;
        let validated = server.review("/validate", &request).await;
        let failing: BTreeSet<&str> = object["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["result"] == "fail")
            .map(|f| f["policy"].as_str().unwrap())
            .collect();
        let webhook_denies = mutated["allowed"] == false || validated["allowed"] == false;
        assert_eq!(
            !failing.is_empty(),
            webhook_denies,
            "{}: {failing:?}",
            object["name"]
        );
        let message = format!(
            "{} {}",
            mutated["status"]["message"], validated["status"]["message"]
        );
        for policy in &failing {
            assert!(
                message.contains(&format!("{policy}: ")),
                "{policy} not in {message}"
            );
        }
        denied += usize::from(webhook_denies);
    }
    assert!(denied > 0, "the fixtures include privileged device plugins");
    let html = std::fs::read_to_string(out.path().join("report/report.html")).unwrap();
    assert!(
        !html.contains("<link ") && !html.contains(" src=\"") && !html.contains("url("),
        "self-contained: no external asset"
    );
    render_in_chromium(&out.path().join("report/report.html"));
}

/// Opens the page in headless Chromium: no console error, and a screenshot
/// that is not blank.
fn render_in_chromium(page: &Path) {
    let shot = page.with_extension("png");
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,1600",
            &format!("--screenshot={}", shot.display()),
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("running chromium (scripts/test installs Debian's chromium package)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let console: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:#?}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let colors: BTreeSet<&[u8]> = pixels[..info.buffer_size()].chunks(channels).collect();
    let inked = pixels[..info.buffer_size()]
        .chunks(channels)
        .filter(|p| p[..3].iter().any(|c| *c < 200))
        .count();
    assert!(
        colors.len() > 20,
        "{} colours: blank screenshot",
        colors.len()
    );
    assert!(
        inked * 100 > info.width as usize * info.height as usize,
        "almost nothing drawn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_loses_no_answered_decision_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("decisions.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let key = dir.path().join("key");
    std::fs::write(&key, "an example key of forty-four bytes, for test\n").unwrap();
    let key_arg = key.to_str().unwrap().to_owned();
    let mut server = Server::start(Options {
        args: &[
            "--decision-log",
            &log_arg,
            "--decision-log-max-mb",
            "1",
            "--decision-log-key",
            &key_arg,
        ],
        ..Options::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..16)
        .map(|t| {
            let (client, stop) = (server.client.clone(), stop.clone());
            let (validate, mutate) = (server.endpoint("/validate"), server.endpoint("/mutate"));
            tokio::spawn(async move {
                let mut answered = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("p-{t}-{i}"), "namespace": "ml"},
                        "spec": {"containers": [{"name": "c", "image": if i % 3 == 0 { "docker.io/x:latest" } else { "nvcr.io/nvidia/pytorch:24.05-py3" }}]}});
                    let body = review("CREATE", &pod);
                    let url = if i % 2 == 0 { &validate } else { &mutate };
                    i += 1;
                    let Ok(response) = client.post(url).json(&body).send().await else { break };
                    let Ok(answer) = response.json::<Value>().await else { break };
                    answered.push(answer["response"]["uid"].as_str().unwrap().to_owned());
                }
                answered
            })
        })
        .collect();
    // Under load until the 1 MiB limit has rotated the log once (however
    // fast this machine answers), then SIGTERM with requests in flight.
    let rotated = dir.path().join("decisions.log.1");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !rotated.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never reached 1 MiB"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(status.success(), "{status}");
    let mut answered = BTreeSet::new();
    for sender in senders {
        answered.extend(sender.await.unwrap());
    }
    assert!(
        answered.len() > 100,
        "only {} requests answered",
        answered.len()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("decisions.log")
        })
        .collect();
    files.sort();
    let logged: BTreeSet<String> = files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|line| {
            serde_json::from_str::<Value>(&line).unwrap()["uid"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let lost: Vec<&String> = answered.difference(&logged).collect();
    assert!(
        lost.is_empty(),
        "{} answered requests have no line, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(3)]
    );
    assert!(
        files.len() > 1,
        "the 1 MiB limit rotated the log: {files:?}"
    );
    let verify = |file: String, key: Option<String>| async move {
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["audit", "verify", &file];
            if let Some(key) = &key {
                args.extend(["--key", key]);
            }
            tollgate(&args)
        })
        .await
        .unwrap()
    };
    let (ok, stdout, stderr) = verify(log_arg.clone(), Some(key_arg.clone())).await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "ok: {} lines in {} file(s)",
            logged.len(),
            files.len()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("every line's seal matches the key"),
        "{stdout}"
    );
    let (ok, stdout, _) = verify(log_arg.clone(), None).await;
    assert!(
        ok && stdout.contains("pass --key to check the seals"),
        "{stdout}"
    );
    // A denied request's line says who was refused what. The active file
    // may hold only the last few lines (a loaded machine answers few in the
    // moments after the rotation): look through every file.
    let texts: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let lines = || {
        texts
            .iter()
            .flat_map(|t| t.lines())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
    };
    let denial: Value = lines().find(|l| l["allowed"] == false).unwrap();
    assert_eq!(denial["user"], "e2e");
    assert_eq!(denial["groups"], json!(["system:authenticated"]));
    assert_eq!(
        denial["kind"],
        json!({"group": "", "version": "v1", "kind": "Pod"})
    );
    let registries = denial["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "image-registries")
        .unwrap();
    assert_eq!(registries["verdict"], "denied");
    assert!(registries["message"].as_str().unwrap().contains(":latest"));
    let mutation = lines()
        .find(|l| l["endpoint"] == "mutate" && l["allowed"] == true)
        .unwrap();
    let defaults = mutation["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "resource-defaults")
        .unwrap();
    assert_eq!(defaults["verdict"], "mutated");
    assert!(
        defaults["patchOperations"].as_u64().unwrap() > 0,
        "{defaults}"
    );
    // An edited copy of the rotated (full) file is caught, and the line
    // named: by the chain without the key, by the line's own seal with it.
    let tampered = dir.path().join("tampered.log");
    let text = std::fs::read_to_string(&rotated).unwrap();
    std::fs::write(
        &tampered,
        text.replacen("\"allowed\":false", "\"allowed\":true", 1),
    )
    .unwrap();
    let tampered = tampered.to_str().unwrap().to_owned();
    let (ok, _, stderr) = verify(tampered.clone(), None).await;
    assert!(!ok);
    assert!(stderr.contains("was edited"), "{stderr}");
    let (ok, _, stderr) = verify(tampered, Some(key_arg)).await;
    assert!(!ok);
    assert!(
        stderr.contains("the seal does not match: this line was edited"),
        "{stderr}"
    );
}
