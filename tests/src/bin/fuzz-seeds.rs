//! Seed corpora for the fuzz targets (`scripts/fuzz`), made from the shared
//! upstream fixtures at run time so the corpora follow the fixtures:
//!
//! - `review_decode`: the benchmark requests, every Pod Security fixture of
//!   the newest version as a CREATE review and as an UPDATE of the previous
//!   fixture, the GPU workloads' documents, Gatekeeper's UPDATE reviews;
//! - `config_parse`: the project's configuration files;
//! - `patch_diff`: consecutive Pod Security fixtures as `old NUL new`.
//!
//! `decision_log` is seeded by `scripts/fuzz` from a log the server writes;
//! `policy_output` takes structured input and starts empty.
//!
//! Usage: `fuzz-seeds CORPUS_DIR` (relative paths from the repository root).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize as _;
use serde_json::Value;
use tollgate_e2e::{review, shared, workspace};

/// The Pod Security fixtures' newest version folder.
const PSA_VERSION: &str = "v1.37";

fn main() {
    let Some(corpus) = std::env::args().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz-seeds CORPUS_DIR");
        std::process::exit(2);
    };
    let pods = psa_pods();
    let counts = [
        (
            "review_decode",
            reviews(&target_dir(&corpus, "review_decode"), &pods),
        ),
        (
            "config_parse",
            configs(&target_dir(&corpus, "config_parse")),
        ),
        (
            "patch_diff",
            pairs(&target_dir(&corpus, "patch_diff"), &pods),
        ),
    ];
    for (target, count) in counts {
        println!("{target}: {count} seeds");
    }
}

/// Every document of a YAML file, as JSON; stops at the first it cannot read.
fn documents(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map_while(|document| Value::deserialize(document).ok())
        .filter(|value| value.is_object())
        .collect()
}

/// The YAML files under `dir`, sorted so the corpus is the same every run.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("reading a directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn psa_pods() -> Vec<Value> {
    ["baseline", "restricted"]
        .iter()
        .flat_map(|level| {
            yaml_files(&shared(&format!(
                "conformance/psa/testdata/{level}/{PSA_VERSION}"
            )))
        })
        .flat_map(|path| documents(&path))
        .collect()
}

/// A target's corpus folder, created if missing.
fn target_dir(corpus: &Path, target: &str) -> PathBuf {
    let dir = corpus.join(target);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn json(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON values serialize")
}

fn reviews(dir: &Path, pods: &[Value]) -> usize {
    let mut count = 0;
    let mut add = |bytes: Vec<u8>| {
        write(dir, &format!("seed-{count:05}"), &bytes);
        count += 1;
    };
    for name in ["pod-gpu-create.json", "pod-gpu-create-privileged.json"] {
        add(fs::read(shared(&format!("bench/{name}"))).expect("reading a benchmark request"));
    }
    for (index, pod) in pods.iter().enumerate() {
        add(json(&review("CREATE", pod)));
        if let Some(previous) = index.checked_sub(1).map(|i| &pods[i]) {
            let mut update = review("UPDATE", pod);
            update["request"]["oldObject"] = previous.clone();
            add(json(&update));
        }
    }
    for path in yaml_files(&shared("conformance/gpu-workloads")) {
        for object in documents(&path) {
            add(json(&review("CREATE", &object)));
        }
    }
    for path in yaml_files(&shared("conformance/gatekeeper/library")) {
        if path.file_name().is_some_and(|name| name == "update.yaml") {
            for document in documents(&path) {
                add(json(&document));
            }
        }
    }
    count
}

fn configs(dir: &Path) -> usize {
    let root = workspace();
    let files = [
        "webhook/config/default.yaml",
        "examples/config.yaml",
        "examples/quota/config.yaml",
        "scripts/load-two-policies.yaml",
    ];
    for (index, file) in files.iter().enumerate() {
        let text = fs::read(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        write(dir, &format!("seed-{index:05}"), &text);
    }
    files.len()
}

fn pairs(dir: &Path, pods: &[Value]) -> usize {
    for (index, pair) in pods.windows(2).enumerate() {
        let mut bytes = json(&pair[0]);
        bytes.push(0);
        bytes.extend(json(&pair[1]));
        write(dir, &format!("seed-{index:05}"), &bytes);
    }
    pods.len().saturating_sub(1)
}
