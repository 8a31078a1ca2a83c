//! A test suite (`tollgate-test.yaml`): the policy under test, the cluster
//! it sees, and cases, each a request and what must come of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::snapshot::{self, Snapshot};
use crate::context::{Context, ledger};
use crate::engine::Engine;
use crate::policy::chain::{Outcome, no_deadline};
use crate::policy::{Config, PolicySet};
use crate::server::review;

/// A suite file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Suite {
    /// The policy under test.
    pub policy: PolicyUnderTest,
    /// The cluster the policy sees: manifest files or directories
    /// (relative to the suite), or objects inline.
    #[serde(default)]
    pub context: Vec<Value>,
    /// The cases, in order.
    pub cases: Vec<Case>,
}

/// The policy under test: a module with its settings, or a policy of a
/// configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyUnderTest {
    /// `builtin:<name>`, a `.wasm` path, `opa:PATH` (an OPA module or
    /// bundle) or `kubewarden:PATH`, paths relative to the suite.
    #[serde(default)]
    pub module: Option<String>,
    /// Its settings.
    #[serde(default)]
    pub settings: Value,
    /// Whether it mutates.
    #[serde(default)]
    pub mutating: bool,
    /// Whether the component is offered WASI.
    #[serde(default)]
    pub wasi: bool,
    /// The kinds it may read.
    #[serde(default)]
    pub context: Vec<Value>,
    /// Which requests reach it, as in a configuration; by default every
    /// kind and operation, so that each case reaches it.
    #[serde(default, rename = "match")]
    pub matches: Option<Value>,
    /// A configuration file (relative to the suite) holding the policy.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The policy's name: in `config`, which one; otherwise the name its
    /// messages carry (the module's name by default).
    #[serde(default)]
    pub name: Option<String>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    /// What it checks, in a sentence.
    pub name: String,
    /// The object: inline, or a file (relative to the suite).
    #[serde(default)]
    pub object: Option<Value>,
    /// The old object (UPDATE, DELETE): inline, or a file.
    #[serde(default)]
    pub old_object: Option<Value>,
    /// A whole AdmissionReview instead of an object: inline, or a file.
    #[serde(default)]
    pub review: Option<Value>,
    /// `CREATE` (default), `UPDATE`, `DELETE` or `CONNECT`.
    #[serde(default)]
    pub operation: Option<String>,
    /// The request's namespace (default: the object's, else `default`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Who sends it.
    #[serde(default)]
    pub user_info: Option<Value>,
    /// A dry run.
    #[serde(default)]
    pub dry_run: bool,
    /// The cluster for this case, instead of the suite's.
    #[serde(default)]
    pub context: Option<Vec<Value>>,
    /// What must come of it.
    pub expect: Expect,
}

/// What a case expects.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// Admitted or refused.
    pub allowed: bool,
    /// Text the denial message contains.
    #[serde(default)]
    pub message: Option<String>,
    /// Texts each found in some warning; `[]`: no warning at all.
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    /// The object after the patch.
    #[serde(default)]
    pub patched: Option<Value>,
    /// The patch operations, exactly (`[]`: no patch).
    #[serde(default)]
    pub patch: Option<Value>,
}

/// A suite read from its file, ready to run.
pub struct Loaded {
    /// The suite.
    pub suite: Suite,
    /// Its directory: relative paths start there.
    pub dir: PathBuf,
    /// The configuration holding the one policy under test.
    pub config: Config,
}

impl Loaded {
    /// Reads the suite at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read or is not a suite; the policy cannot be
    /// found.
    pub fn read(path: &Path) -> anyhow::Result<Loaded> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let suite: Suite = serde_yaml::from_str(&text)
            .with_context(|| format!("{} is not a test suite", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
        let config = suite.policy.config(&dir, path)?;
        Ok(Loaded { suite, dir, config })
    }

    /// The policy's name, as its messages carry it.
    pub fn policy_name(&self) -> &str {
        &self.config.policies[0].name
    }

    /// The policies loaded against `context` (the suite's, or a case's).
    pub fn load(&self, engine: &Engine, context: &[Value]) -> anyhow::Result<PolicySet> {
        let mut objects = Vec::new();
        for item in context {
            match item {
                Value::String(path) => {
                    let documents =
                        snapshot::read(&[self.dir.join(path)]).map_err(anyhow::Error::msg)?;
                    if let Some(unreadable) = documents.unreadable.first() {
                        anyhow::bail!("context: {unreadable}");
                    }
                    objects.extend(documents.objects);
                }
                object => snapshot::collect(object.clone(), &mut objects)
                    .map_err(|e| anyhow::anyhow!("context: {e}"))?,
            }
        }
        let ttl = Duration::from_secs(self.config.quota.reservation_ttl_seconds);
        let context = Context::new(
            Some(Box::new(Snapshot::new(
                "the suite's context".into(),
                objects,
            ))),
            Box::new(ledger::Local::new(ttl)),
        );
        let set = PolicySet::load(&self.config, engine, Arc::new(context));
        if let Some((_, error)) = set.failures().next() {
            anyhow::bail!("the policy failed to load: {error}");
        }
        Ok(set)
    }

    /// A file (relative to the suite) read as YAML or JSON, or the value
    /// itself.
    fn document(&self, value: &Value) -> anyhow::Result<Value> {
        match value {
            Value::String(path) => {
                let path = self.dir.join(path);
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                serde_yaml::from_str(&text).with_context(|| format!("{}", path.display()))
            }
            value => Ok(value.clone()),
        }
    }

    /// The AdmissionReview of `case`, as JSON bytes, and its object.
    pub fn review(&self, case: &Case, uid: usize) -> anyhow::Result<(Vec<u8>, Value)> {
        let mut request = match &case.review {
            Some(review) => {
                let review = self.document(review)?;
                review["request"].clone()
            }
            None => json!({}),
        };
        if let Some(object) = &case.object {
            request["object"] = self.document(object)?;
        }
        if let Some(old) = &case.old_object {
            request["oldObject"] = self.document(old)?;
        }
        let object = if request["object"].is_null() {
            request["oldObject"].clone()
        } else {
            request["object"].clone()
        };
        if object.is_null() {
            anyhow::bail!("the case has no object, old object or review");
        }
        let api_version = object["apiVersion"].as_str().unwrap_or("v1");
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let defaults = [
            ("uid", json!(format!("tollgate-test-{uid}"))),
            (
                "kind",
                json!({"group": group, "version": version, "kind": object["kind"]}),
            ),
            ("name", object["metadata"]["name"].clone()),
            ("operation", json!("CREATE")),
            (
                "userInfo",
                json!({"username": "tollgate-test", "groups": ["system:authenticated"]}),
            ),
        ];
        for (field, value) in defaults {
            if request[field].is_null() {
                request[field] = value;
            }
        }
        if request["namespace"].is_null() {
            request["namespace"] = json!(
                object["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
            );
        }
        if let Some(operation) = &case.operation {
            request["operation"] = json!(operation);
        }
        if let Some(namespace) = &case.namespace {
            request["namespace"] = json!(namespace);
        }
        if let Some(user) = &case.user_info {
            request["userInfo"] = user.clone();
        }
        if case.dry_run {
            request["dryRun"] = json!(true);
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        Ok((serde_json::to_vec(&review)?, request["object"].clone()))
    }
}

impl PolicyUnderTest {
    /// A configuration holding only this policy; relative paths start at
    /// `dir`, and messages name `origin`.
    pub fn config(&self, dir: &Path, origin: &Path) -> anyhow::Result<Config> {
        if let Some(file) = &self.config {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut config = Config::parse(
                &text,
                &path.display().to_string(),
                path.parent().unwrap_or(Path::new(".")).to_owned(),
            )?;
            let wanted = self
                .name
                .as_deref()
                .context("policy.config needs policy.name: which policy of the configuration")?;
            config.policies.retain(|p| p.name == wanted);
            anyhow::ensure!(
                !config.policies.is_empty(),
                "{} has no policy named {wanted:?}",
                path.display()
            );
            return Ok(config);
        }
        let module = self.module.as_deref().context(
            "policy needs module (builtin:<name>, a .wasm path, opa:PATH or kubewarden:PATH) or config and name",
        )?;
        let name = self.name.clone().unwrap_or_else(|| {
            let stem = module.strip_prefix("builtin:").unwrap_or_else(|| {
                let path = ["opa:", "kubewarden:"]
                    .iter()
                    .find_map(|prefix| module.strip_prefix(prefix))
                    .unwrap_or(module);
                Path::new(path)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("policy")
            });
            stem.to_lowercase().replace('_', "-")
        });
        let matches = self
            .matches
            .clone()
            .unwrap_or_else(|| json!({"operations": ["CREATE", "UPDATE", "DELETE", "CONNECT"]}));
        let entry = json!({"policies": [{
            "name": name, "module": module, "settings": self.settings,
            "mutating": self.mutating, "wasi": self.wasi, "context": self.context,
            "match": matches,
        }]});
        Ok(Config::parse(
            &entry.to_string(),
            &origin.display().to_string(),
            dir.to_owned(),
        )?)
    }
}

impl Expect {
    /// What differs between the outcome of a request on `object` and this
    /// expectation; `None` when nothing does.
    pub fn differences(&self, outcome: &Outcome, object: &Value) -> Option<String> {
        let mut wrong = Vec::new();
        let message = outcome.message.as_deref().unwrap_or_default();
        if outcome.allowed != self.allowed {
            wrong.push(format!(
                "expected it {}, but it was {}{}",
                verdict(self.allowed),
                verdict(outcome.allowed),
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ));
        }
        if let Some(expected) = &self.message
            && !message.contains(expected.as_str())
        {
            wrong.push(format!(
                "expected the message to contain {expected:?}, got {message:?}"
            ));
        }
        match &self.warnings {
            Some(expected) if expected.is_empty() && !outcome.warnings.is_empty() => {
                wrong.push(format!("expected no warning, got {:?}", outcome.warnings));
            }
            Some(expected) => {
                for text in expected {
                    if !outcome.warnings.iter().any(|w| w.contains(text.as_str())) {
                        wrong.push(format!(
                            "expected a warning containing {text:?}, got {:?}",
                            outcome.warnings
                        ));
                    }
                }
            }
            None => {}
        }
        let patch = outcome
            .patch
            .as_ref()
            .map_or(Value::Array(Vec::new()), |p| json!(p));
        if let Some(expected) = &self.patch
            && *expected != patch
        {
            wrong.push(format!("expected the patch {expected}, got {patch}"));
        }
        if let Some(expected) = &self.patched {
            let mut patched = object.clone();
            let applied = match &outcome.patch {
                Some(p) => json_patch::patch(&mut patched, p).map_err(|e| e.to_string()),
                None => Ok(()),
            };
            match applied {
                Err(e) => wrong.push(format!("the patch does not apply: {e}")),
                Ok(()) if patched != *expected => {
                    wrong.push(format!(
                        "expected the patched object {expected}, got {patched}"
                    ));
                }
                Ok(()) => {}
            }
        }
        (!wrong.is_empty()).then(|| wrong.join("; "))
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "denied" }
}

/// Runs `case` against `set`; `None` when it passes, else why not.
pub fn run(loaded: &Loaded, set: &PolicySet, case: &Case, uid: usize) -> Option<String> {
    let (body, object) = match loaded.review(case, uid) {
        Ok(review) => review,
        Err(error) => return Some(format!("{error:#}")),
    };
    let request = match review::decode(&body) {
        Ok(request) => request,
        Err(error) => return Some(format!("not a valid AdmissionReview: {error}")),
    };
    let outcome = futures::executor::block_on(set.review(&request, no_deadline()));
    case.expect.differences(&outcome, &object)
}
