//! The configuration file: which policies run, on what, and how.
//!
//! ```yaml
//! policies:
//!   - name: registries
//!     module: builtin:image-registries   # or a path to a .wasm component
//!     settings: {allowedRegistries: ["nvcr.io/"]}
//!     mode: enforce                      # enforce | warn | audit
//!     failurePolicy: fail                # fail | ignore
//!     match: {kinds: [Pod], operations: [CREATE]}
//! ```
//!
//! Every field is documented in `docs/configuration.md`. Errors name the
//! file, the policy and the field.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;
use tollgate_sdk::selector::Selector;

use crate::context::Kind;

/// Errors in a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is not YAML of the expected shape at the top level.
    #[error(
        "{path}: {message} (expected a mapping with a `policies:` list; see docs/configuration.md)"
    )]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message, with the line and column.
        message: String,
    },
    /// One field of one policy is wrong.
    #[error("{path}: policy {policy:?}: {field}: {message}")]
    Field {
        /// The file.
        path: String,
        /// The policy's name (or `#N` when it has none).
        policy: String,
        /// The field, as a path (`match.operations[0]`).
        field: String,
        /// What is wrong and what to write instead.
        message: String,
    },
}

/// What a policy's verdict does to the request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Denials deny; mutations apply.
    #[default]
    Enforce,
    /// Denials become admission warnings; mutations are not applied.
    Warn,
    /// Denials become audit annotations only; mutations are not applied.
    Audit,
}

impl Mode {
    /// The mode's name as written in configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Warn => "warn",
            Mode::Audit => "audit",
        }
    }
}

/// What happens when a policy cannot reach a verdict (trap, timeout, memory
/// or output cap, invalid mutation, failed load).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Deny, naming the policy and what happened.
    #[default]
    Fail,
    /// Allow, with a warning naming the policy and what happened.
    Ignore,
}

/// An admission operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Object creation.
    Create,
    /// Object update.
    Update,
    /// Object deletion.
    Delete,
    /// Connect (exec, attach, port-forward).
    Connect,
}

impl Operation {
    /// Parses the wire name (`CREATE`, …).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "CREATE" => Some(Operation::Create),
            "UPDATE" => Some(Operation::Update),
            "DELETE" => Some(Operation::Delete),
            "CONNECT" => Some(Operation::Connect),
            _ => None,
        }
    }
}

fn all() -> Vec<String> {
    vec!["*".into()]
}

fn create_update() -> Vec<Operation> {
    vec![Operation::Create, Operation::Update]
}

/// Which requests a policy sees.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// API groups (`""` is the core group, `*` any).
    #[serde(default = "all")]
    pub api_groups: Vec<String>,
    /// Kinds (`*` any).
    #[serde(default = "all")]
    pub kinds: Vec<String>,
    /// Operations.
    #[serde(default = "create_update")]
    pub operations: Vec<Operation>,
    /// Only these namespaces (empty: all). Cluster-scoped objects are matched
    /// only when this is empty.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Never these namespaces.
    #[serde(default)]
    pub exclude_namespaces: Vec<String>,
    /// Namespaces whose labels match (needs namespace labels from cluster
    /// context; without it, only a Namespace object's own labels are known).
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// Objects whose labels match: the new object's or, on UPDATE and
    /// DELETE, the old one's (as Kubernetes matches a webhook's).
    #[serde(default)]
    pub object_selector: Option<Selector>,
    /// Subresources the policy also sees (`status`, `ephemeralContainers`,
    /// `*` for all); by default none, only the resource itself.
    #[serde(default)]
    pub subresources: Vec<String>,
}

impl Default for Match {
    fn default() -> Self {
        Match {
            api_groups: all(),
            kinds: all(),
            operations: create_update(),
            namespaces: Vec::new(),
            exclude_namespaces: Vec::new(),
            namespace_selector: None,
            object_selector: None,
            subresources: Vec::new(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    100
}

fn default_memory_limit_mb() -> usize {
    64
}

/// One policy entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// Unique name, used in messages, metrics and logs.
    pub name: String,
    /// `builtin:<name>`, a path to a `.wasm` component, `opa:PATH` (an OPA
    /// Wasm module or bundle) or `kubewarden:PATH` (a Kubewarden policy
    /// module); relative paths are relative to the configuration file.
    pub module: String,
    /// Settings handed to the policy, as JSON.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// What a denial does.
    #[serde(default)]
    pub mode: Mode,
    /// What a failure does.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// Whether the policy may mutate.
    #[serde(default)]
    pub mutating: bool,
    /// Whether the component is offered the host's locked-down WASI (no
    /// files, network, environment or wall clock): for components built
    /// with WASI imports, such as `componentize-py`'s.
    #[serde(default)]
    pub wasi: bool,
    /// Which requests it sees.
    #[serde(default, rename = "match")]
    pub matches: Match,
    /// Deadline per evaluation, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Linear memory cap, in MiB.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: usize,
    /// Kinds of cluster objects the policy may read (and index), e.g.
    /// `[{apiVersion: v1, kind: Pod}]`; none by default.
    #[serde(default)]
    pub context: Vec<Kind>,
    /// How much a violation matters, for reports (the built-in's default
    /// when absent).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// What the policy is about, for reports (`Pod Security`).
    #[serde(default)]
    pub category: Option<String>,
    /// Controls the policy implements (`CIS-5.2.1`, `NIST-800-53:AC-6`).
    #[serde(default)]
    pub controls: Option<Vec<String>>,
}

/// Severity of a policy's violations, as PolicyReport spells it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational.
    Info,
    /// Low.
    Low,
    /// Medium.
    #[default]
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A policy's report metadata, with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// Severity.
    pub severity: Severity,
    /// Category.
    pub category: String,
    /// Controls.
    pub controls: Vec<String>,
}

impl PolicyConfig {
    /// The kinds of cluster objects it reads: its grants, and Namespaces
    /// for a namespace selector.
    pub fn reads(&self) -> impl Iterator<Item = Kind> + '_ {
        let namespaces = self
            .matches
            .namespace_selector
            .is_some()
            .then(Kind::namespace);
        self.context.iter().cloned().chain(namespaces)
    }

    /// Severity, category and controls: as configured, else the built-in
    /// module's defaults, else `medium` and `General`.
    pub fn metadata(&self) -> Metadata {
        let builtin = self
            .module
            .strip_prefix("builtin:")
            .and_then(crate::builtin::metadata);
        Metadata {
            severity: self
                .severity
                .or(builtin.as_ref().map(|m| m.severity))
                .unwrap_or_default(),
            category: self
                .category
                .clone()
                .or_else(|| builtin.as_ref().map(|m| m.category.clone()))
                .unwrap_or_else(|| "General".into()),
            controls: self
                .controls
                .clone()
                .or_else(|| builtin.map(|m| m.controls))
                .unwrap_or_default(),
        }
    }
}

/// Where quota reservations are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerBackend {
    /// In this process: correct for one replica.
    #[default]
    Local,
    /// In ConfigMaps, by compare-and-swap through the apiserver: correct
    /// for any number of replicas.
    Apiserver,
}

fn default_reservation_ttl_seconds() -> u64 {
    60
}

fn default_ledger_namespace() -> String {
    "tollgate-system".into()
}

/// The quota ledger's configuration (top-level `quota:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotaConfig {
    /// Where reservations are kept.
    #[serde(default)]
    pub ledger: LedgerBackend,
    /// Namespace of the ledger's ConfigMaps (`ledger: apiserver`).
    #[serde(default = "default_ledger_namespace")]
    pub namespace: String,
    /// How long a reservation holds if its object never appears.
    #[serde(default = "default_reservation_ttl_seconds")]
    pub reservation_ttl_seconds: u64,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            ledger: LedgerBackend::default(),
            namespace: default_ledger_namespace(),
            reservation_ttl_seconds: default_reservation_ttl_seconds(),
        }
    }
}

/// Where a policy's module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleSource {
    /// Shipped inside the binary.
    Builtin(String),
    /// A component file.
    File(PathBuf),
    /// An OPA Wasm module or `opa build -t wasm` bundle (`opa:PATH`).
    Opa(PathBuf),
    /// A Kubewarden policy module (`kubewarden:PATH`).
    Kubewarden(PathBuf),
}

/// A whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Policies, in the order mutating ones run.
    pub policies: Vec<PolicyConfig>,
    /// The quota ledger.
    pub quota: QuotaConfig,
    /// Where it was read from (for messages and relative paths).
    pub origin: String,
    /// Which text it is: the first 12 hex digits of its SHA-256, named in
    /// the decision log and `/readyz?verbose`.
    pub generation: String,
    base_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    policies: Vec<serde_yaml::Value>,
    #[serde(default)]
    quota: QuotaConfig,
}

/// Longest deadline a policy may ask for: the apiserver's own webhook
/// timeout is at most 30 s.
const MAX_TIMEOUT_MS: u64 = 30_000;

impl Config {
    /// Parses configuration text; `origin` names it in errors and `base_dir`
    /// anchors relative module paths.
    ///
    /// # Errors
    ///
    /// Bad YAML, or a bad field (named).
    pub fn parse(text: &str, origin: &str, base_dir: PathBuf) -> Result<Self, Error> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| Error::Syntax {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        let mut policies = Vec::with_capacity(raw.policies.len());
        let mut names = HashSet::new();
        for (index, entry) in raw.policies.into_iter().enumerate() {
            let policy_name = entry
                .get("name")
                .and_then(serde_yaml::Value::as_str)
                .map_or_else(|| format!("#{}", index + 1), str::to_owned);
            let field_error = |field: &str, message: String| Error::Field {
                path: origin.to_owned(),
                policy: policy_name.clone(),
                field: field.to_owned(),
                message,
            };
            let policy: PolicyConfig = serde_path_to_error::deserialize(entry).map_err(|e| {
                let field = e.path().to_string();
                let field = if field == "." {
                    "(entry)".to_owned()
                } else {
                    field
                };
                field_error(&field, e.into_inner().to_string())
            })?;
            check(&policy, &field_error)?;
            if !names.insert(policy.name.clone()) {
                return Err(field_error(
                    "name",
                    "another policy has this name; names must be unique".into(),
                ));
            }
            policies.push(policy);
        }
        if raw.quota.reservation_ttl_seconds == 0 {
            return Err(Error::Syntax {
                path: origin.to_owned(),
                message: "quota.reservationTtlSeconds must be at least 1".into(),
            });
        }
        Ok(Config {
            policies,
            quota: raw.quota,
            origin: origin.to_owned(),
            generation: generation(text),
            base_dir,
        })
    }

    /// Every kind some policy reads: its grants, and Namespaces when a
    /// policy matches by namespace selector.
    pub fn context_kinds(&self) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = self.policies.iter().flat_map(PolicyConfig::reads).collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }

    /// The directory relative paths of the configuration are read from.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// Where the module of `policy` comes from.
    pub fn module_source(&self, policy: &PolicyConfig) -> ModuleSource {
        if let Some(name) = policy.module.strip_prefix("builtin:") {
            return ModuleSource::Builtin(name.to_owned());
        }
        if let Some(path) = policy.module.strip_prefix("opa:") {
            return ModuleSource::Opa(self.base_dir.join(path));
        }
        match policy.module.strip_prefix("kubewarden:") {
            Some(path) => ModuleSource::Kubewarden(self.base_dir.join(path)),
            None => ModuleSource::File(self.base_dir.join(&policy.module)),
        }
    }
}

/// The generation of a configuration text.
pub fn generation(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(&sha2::Sha256::digest(text)[..6])
}

fn check(policy: &PolicyConfig, error: &impl Fn(&str, String) -> Error) -> Result<(), Error> {
    let valid_name = !policy.name.is_empty()
        && policy.name.len() <= 63
        && policy
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid_name {
        return Err(error(
            "name",
            "must be 1 to 63 lowercase letters, digits or '-'".into(),
        ));
    }
    if policy.module.trim().is_empty() {
        return Err(error(
            "module",
            "is empty: write builtin:<name> or a path to a .wasm file".into(),
        ));
    }
    if let Some(path) = policy.module.strip_prefix("opa:") {
        if path.trim().is_empty() {
            return Err(error(
                "module",
                "opa: names no file: write opa:PATH to a policy.wasm or an `opa build -t wasm` bundle.tar.gz".into(),
            ));
        }
        if policy.mutating {
            return Err(error(
                "mutating",
                "an OPA module only validates: its result set denies or allows, it changes nothing"
                    .into(),
            ));
        }
    }
    let component_file = !["builtin:", "opa:", "kubewarden:"]
        .iter()
        .any(|prefix| policy.module.starts_with(prefix));
    if policy.wasi && !component_file {
        return Err(error(
            "wasi",
            "only a component file (module: PATH) may be offered WASI; built-in and OPA policies need none, and Kubewarden modules always get WASI preview 1".into(),
        ));
    }
    if policy
        .module
        .strip_prefix("kubewarden:")
        .is_some_and(|path| path.trim().is_empty())
    {
        return Err(error(
            "module",
            "kubewarden: names no file: write kubewarden:PATH to a Kubewarden policy.wasm".into(),
        ));
    }
    if let Some(name) = policy.module.strip_prefix("builtin:")
        && !crate::builtin::NAMES.contains(&name)
    {
        return Err(error(
            "module",
            format!(
                "no built-in policy {name:?}; built-ins are: {}",
                crate::builtin::NAMES.join(", ")
            ),
        ));
    }
    if !(1..=MAX_TIMEOUT_MS).contains(&policy.timeout_ms) {
        return Err(error(
            "timeoutMs",
            format!(
                "{} is out of range: use 1 to {MAX_TIMEOUT_MS}",
                policy.timeout_ms
            ),
        ));
    }
    let max_mb = crate::engine::MAX_MEMORY_BYTES >> 20;
    if !(1..=max_mb).contains(&policy.memory_limit_mb) {
        return Err(error(
            "memoryLimitMb",
            format!(
                "{} is out of range: use 1 to {max_mb}",
                policy.memory_limit_mb
            ),
        ));
    }
    for (field, values) in [
        ("match.apiGroups", &policy.matches.api_groups),
        ("match.kinds", &policy.matches.kinds),
    ] {
        if values.is_empty() {
            return Err(error(
                field,
                "is empty, so the policy would never run: list them, or write [\"*\"] for all"
                    .into(),
            ));
        }
    }
    if policy.matches.operations.is_empty() {
        return Err(error(
            "match.operations",
            "is empty, so the policy would never run: list CREATE, UPDATE, …".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, Error> {
        Config::parse(text, "test.yaml", PathBuf::from("/etc/tollgate"))
    }

    #[test]
    fn parses_a_full_entry_with_defaults_filled_in() {
        let config = parse(
            "policies:\n- name: regs\n  module: builtin:image-registries\n  settings: {denyLatest: true}\n  match: {kinds: [Pod], namespaceSelector: {matchLabels: {team: a}}}\n",
        )
        .unwrap();
        let policy = &config.policies[0];
        assert_eq!(policy.mode, Mode::Enforce);
        assert_eq!(policy.failure_policy, FailurePolicy::Fail);
        assert_eq!(policy.timeout_ms, 100);
        assert_eq!(
            policy.matches.operations,
            vec![Operation::Create, Operation::Update]
        );
        assert_eq!(policy.matches.api_groups, vec!["*"]);
        assert_eq!(policy.settings, serde_json::json!({"denyLatest": true}));
        assert_eq!(
            config.module_source(policy),
            ModuleSource::Builtin("image-registries".into())
        );
    }

    #[test]
    fn relative_module_paths_are_relative_to_the_file() {
        let config = parse("policies:\n- name: a\n  module: mods/a.wasm\n- name: b\n  module: opa:opa/bundle.tar.gz\n- name: c\n  module: kubewarden:kw/policy.wasm\n").unwrap();
        assert_eq!(
            config.module_source(&config.policies[0]),
            ModuleSource::File(PathBuf::from("/etc/tollgate/mods/a.wasm"))
        );
        assert_eq!(
            config.module_source(&config.policies[1]),
            ModuleSource::Opa(PathBuf::from("/etc/tollgate/opa/bundle.tar.gz"))
        );
        assert_eq!(
            config.module_source(&config.policies[2]),
            ModuleSource::Kubewarden(PathBuf::from("/etc/tollgate/kw/policy.wasm"))
        );
        let text = parse("policies:\n- name: a\n  module: 'kubewarden: '\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("kubewarden: names no file"), "{text}");
    }

    #[test]
    fn an_opa_module_names_a_file_and_only_validates() {
        let text = parse("policies:\n- name: a\n  module: 'opa:'\n")
            .unwrap_err()
            .to_string();
        assert!(text.contains("module: opa: names no file"), "{text}");
        let text = parse("policies:\n- name: a\n  module: opa:p.wasm\n  mutating: true\n")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("mutating: an OPA module only validates"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_field_names_file_policy_and_field() {
        let err = parse(
            "policies:\n- name: regs\n  module: builtin:image-registries\n  mode: enforcing\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("test.yaml: policy \"regs\": mode: unknown variant `enforcing`"),
            "{text}"
        );
        let err =
            parse("policies:\n- name: regs\n  module: x.wasm\n  match: {operations: [CREAT]}\n")
                .unwrap_err();
        assert!(err.to_string().starts_with(
            "test.yaml: policy \"regs\": match.operations[0]: unknown variant `CREAT`"
        ));
    }

    #[test]
    fn unknown_fields_and_out_of_range_limits_are_refused() {
        let err = parse("policies:\n- name: a\n  module: a.wasm\n  timeout: 5\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `timeout`"), "{err}");
        for field in ["apiGroups", "kinds"] {
            let err = parse(&format!(
                "policies:\n- name: a\n  module: a.wasm\n  match: {{{field}: []}}\n"
            ))
            .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "test.yaml: policy \"a\": match.{field}: is empty, so the policy would never run: list them, or write [\"*\"] for all"
                )
            );
        }
        let err = parse("policies:\n- name: a\n  module: a.wasm\n  timeoutMs: 0\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.yaml: policy \"a\": timeoutMs: 0 is out of range: use 1 to 30000"
        );
    }

    #[test]
    fn unknown_builtins_and_duplicate_names_are_refused() {
        let err = parse("policies:\n- name: a\n  module: builtin:nope\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("no built-in policy \"nope\"; built-ins are: gatekeeper, gpu-placement, gpu-quota, image-registries, network-guard, pod-security, resource-defaults, workload-priority"),
            "{err}"
        );
        let err = parse("policies:\n- name: a\n  module: a.wasm\n- name: a\n  module: b.wasm\n")
            .unwrap_err();
        assert!(err.to_string().contains("names must be unique"));
    }

    #[test]
    fn entries_without_a_name_are_named_by_position() {
        let err = parse("policies:\n- module: a.wasm\n").unwrap_err();
        assert!(
            err.to_string().starts_with("test.yaml: policy \"#1\": "),
            "{err}"
        );
    }

    #[test]
    fn yaml_that_is_not_a_config_is_a_syntax_error() {
        assert!(matches!(parse("- just a list"), Err(Error::Syntax { .. })));
        assert!(matches!(parse("policies: [\n"), Err(Error::Syntax { .. })));
    }

    #[test]
    fn selectors_in_the_object_form_are_checked_and_named() {
        let text = "policies:\n- name: regs\n  module: builtin:image-registries\n  settings: {denyLatest: true}\n  match: {kinds: [Pod], objectSelector: {matchExpressions: [{key: tier, operator: In}]}}\n";
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.contains("match.objectSelector") && error.contains("In needs values"),
            "{error}"
        );
    }
}
