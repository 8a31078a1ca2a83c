//! `gatekeeper`: OPA Gatekeeper ConstraintTemplates and their Constraints,
//! judged as Gatekeeper's admission webhook judges them.
//!
//! The host reads the template and constraints at load (`settings:
//! {template, constraints}`), checks each constraint's parameters against
//! the template's schema, and compiles the template's Rego once into a
//! regorus VM program; this policy gets the program and the constraints as
//! its settings, and reads them (the program loaded, the parameters as Rego
//! values) when an instance is prepared, off the request path. Per request
//! it reads the request into Rego values once, selects the constraints whose
//! `spec.match` holds, runs the program's `violation` rule for each with
//! Gatekeeper's input (`input.review`, `input.parameters`), and turns
//! violations into Gatekeeper's messages (`[constraint] msg`) by each
//! constraint's enforcement action: `deny` refuses, `warn` warns, `dryrun`
//! records an audit annotation.

mod constraint;
mod input;

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use regorus::Value;
use regorus::rvm::program::{DeserializationResult, Program};
use regorus::rvm::vm::RegoVM;
use serde::Deserialize;
use tollgate_sdk::{Policy, Request, Verdict, context};

use constraint::{Action, Constraint, Subject};

/// The audit annotation that records dry-run violations.
const DRYRUN_ANNOTATION: &str = "gatekeeper.tollgate.dev/dryrun-violations";

/// The settings, as the host prepares them from the template and
/// constraints, with the program loaded.
#[derive(Deserialize)]
#[serde(try_from = "Stored")]
pub struct Settings {
    /// The template's name, for messages.
    pub template: String,
    /// The template's Rego compiled into a regorus VM program.
    pub program: Arc<Program>,
    /// The template's constraints.
    pub constraints: Vec<Constraint>,
    /// The kinds served in `data.inventory`, for a template that reads it.
    pub inventory: Vec<Inventoried>,
}

/// The settings as the host writes them.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Stored {
    template: String,
    /// The program, serialized by regorus, in base64.
    program: String,
    constraints: Vec<Constraint>,
    #[serde(default)]
    inventory: Vec<Inventoried>,
}

impl TryFrom<Stored> for Settings {
    type Error = String;

    fn try_from(stored: Stored) -> Result<Self, String> {
        Ok(Settings {
            program: program(&stored.program)?,
            template: stored.template,
            constraints: stored.constraints,
            inventory: stored.inventory,
        })
    }
}

/// A kind of the inventory.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventoried {
    /// `v1`, `networking.k8s.io/v1`, …
    pub api_version: String,
    /// `Service`, `Ingress`, …
    pub kind: String,
}

/// The policy.
pub struct Gatekeeper;

impl Policy for Gatekeeper {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.constraints.is_empty() {
            return Err(format!(
                "template {:?} has no constraints, so it checks nothing: list constraints",
                settings.template
            ));
        }
        Ok(())
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        Self::evaluate_text(&review_text(request), settings)
    }

    fn evaluate_text(text: &str, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        // Read once, for matching and as the templates' input: nearly every
        // request the webhook sends matches a constraint.
        let review = input::read(text)?;
        let envelope = Envelope::of(&review);
        let subject = envelope.subject();
        let mut labels: Option<BTreeMap<String, String>> = None;
        let mut selected = Vec::new();
        for constraint in &settings.constraints {
            let Some(action) = constraint.webhook_action() else {
                continue;
            };
            let namespace_labels = || {
                if labels.is_none() {
                    labels = Some(envelope.namespace_labels()?);
                }
                Ok(labels.clone().unwrap_or_default())
            };
            if constraint.matches.selects(&subject, namespace_labels)? {
                selected.push((constraint, action));
            }
        }
        if selected.is_empty() {
            return Ok(Verdict::allow());
        }

        let mut vm = RegoVM::new();
        vm.load_program(settings.program.clone());
        if !settings.inventory.is_empty() {
            vm.set_data(inventory(&settings.inventory)?)
                .map_err(|e| format!("data.inventory: {e}"))?;
        }
        let mut found: BTreeMap<Action, Vec<String>> = BTreeMap::new();
        for (constraint, action) in selected {
            vm.set_input(Value::from(BTreeMap::from([
                (Value::from("review"), review.clone()),
                (Value::from("parameters"), constraint.parameters.clone()),
            ])));
            let result = vm
                .execute()
                .map_err(|e| format!("template {:?}: {e}", settings.template))?;
            found
                .entry(action)
                .or_default()
                .extend(violations(&result).map(|msg| format!("[{}] {msg}", constraint.name)));
        }

        let mut verdict = match found.remove(&Action::Deny) {
            Some(denials) if !denials.is_empty() => Verdict::deny(denials.join("\n")),
            _ => Verdict::allow(),
        };
        for warning in found.remove(&Action::Warn).unwrap_or_default() {
            verdict = verdict.warn(warning);
        }
        if let Some(dry) = found.remove(&Action::Dryrun).filter(|d| !d.is_empty()) {
            verdict = verdict.annotate(DRYRUN_ANNOTATION, dry.join("\n"));
        }
        Ok(verdict)
    }
}

tollgate_sdk::export!(Gatekeeper);

/// The program of the settings, decoded and loaded.
fn program(base64: &str) -> Result<Arc<Program>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64)
        .map_err(|e| format!("program: not base64: {e}"))?;
    match Program::deserialize_binary(&bytes).map_err(|e| format!("program: {e}"))? {
        DeserializationResult::Complete(program) => Ok(Arc::new(program)),
        DeserializationResult::Partial(_) => Err(
            "program: compiled by another regorus version; reload the configuration to compile it again"
                .into(),
        ),
    }
}

/// `data` with the cluster's objects of `kinds` in Gatekeeper's layout:
/// `inventory.namespace[ns][apiVersion][kind][name]` and
/// `inventory.cluster[apiVersion][kind][name]`.
fn inventory(kinds: &[Inventoried]) -> tollgate_sdk::Result<Value> {
    let mut namespaced = serde_json::Map::new();
    let mut cluster = serde_json::Map::new();
    for kind in kinds {
        let objects: Vec<serde_json::Value> =
            context::list_as(&kind.api_version, &kind.kind, "", "")?;
        for object in objects {
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let scope = match object["metadata"]["namespace"].as_str() {
                Some(namespace) if !namespace.is_empty() => namespaced
                    .entry(namespace)
                    .or_insert_with(|| serde_json::json!({}))
                    .as_object_mut()
                    .expect("an object"),
                _ => &mut cluster,
            };
            scope
                .entry(kind.api_version.as_str())
                .or_insert_with(|| serde_json::json!({}))[&kind.kind][&name] = object;
        }
    }
    let data = serde_json::json!({"inventory": {"namespace": namespaced, "cluster": cluster}});
    Ok(Value::from_json_str(&data.to_string()).map_err(|e| format!("data.inventory: {e}"))?)
}

/// The messages of a `violation` result: a set of `{"msg": …}` objects.
fn violations(result: &Value) -> impl Iterator<Item = String> + '_ {
    let items: Vec<&Value> = match result {
        Value::Set(set) => set.iter().collect(),
        Value::Array(array) => array.iter().collect(),
        _ => Vec::new(),
    };
    items.into_iter().map(|item| match &item["msg"] {
        Value::String(msg) => msg.to_string(),
        _ => item.to_json_str().unwrap_or_default(),
    })
}

/// What matching reads of an AdmissionRequest, borrowed from its values.
struct Envelope<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: &'a str,
    object: Option<Metadata<'a>>,
    old_object: Option<Metadata<'a>>,
}

/// What matching reads of an object's metadata.
struct Metadata<'a> {
    name: &'a str,
    labels: BTreeMap<String, String>,
}

/// A string field's text; empty when it is missing or not a string.
fn text(value: &Value) -> &str {
    value.as_string().map_or("", |s| s)
}

impl<'a> Metadata<'a> {
    /// The metadata of `object`, when it is an object.
    fn of(object: &'a Value) -> Option<Self> {
        object.as_object().ok()?;
        let metadata = &object["metadata"];
        let labels = metadata["labels"].as_object().map_or_else(
            |_| BTreeMap::new(),
            |labels| {
                labels
                    .iter()
                    .filter_map(|(k, v)| {
                        Some((
                            k.as_string().ok()?.to_string(),
                            v.as_string().ok()?.to_string(),
                        ))
                    })
                    .collect()
            },
        );
        Some(Metadata {
            name: text(&metadata["name"]),
            labels,
        })
    }
}

impl<'a> Envelope<'a> {
    /// What matching reads of `review`; a missing field reads as empty.
    fn of(review: &'a Value) -> Self {
        Envelope {
            group: text(&review["kind"]["group"]),
            kind: text(&review["kind"]["kind"]),
            name: text(&review["name"]),
            namespace: text(&review["namespace"]),
            object: Metadata::of(&review["object"]),
            old_object: Metadata::of(&review["oldObject"]),
        }
    }

    fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.kind == "Namespace"
    }

    fn subject(&self) -> Subject<'_> {
        let object_name = self
            .object
            .as_ref()
            .or(self.old_object.as_ref())
            .map(|o| o.name)
            .filter(|n| !n.is_empty());
        let name = object_name.unwrap_or(self.name);
        Subject {
            group: self.group,
            kind: self.kind,
            name,
            // A Namespace is matched by its own name, as Gatekeeper does.
            namespace: if self.is_namespace() {
                name
            } else {
                self.namespace
            },
            namespaced: !self.namespace.is_empty(),
            labels: [
                self.object.as_ref().map(|o| &o.labels),
                self.old_object.as_ref().map(|o| &o.labels),
            ],
        }
    }

    /// The labels of the request's namespace (a Namespace's own).
    fn namespace_labels(&self) -> tollgate_sdk::Result<BTreeMap<String, String>> {
        if self.is_namespace() {
            return Ok(self
                .object
                .as_ref()
                .or(self.old_object.as_ref())
                .map(|o| o.labels.clone())
                .unwrap_or_default());
        }
        let namespace: Option<Labelled> = context::get_as("v1", "Namespace", "", self.namespace)?;
        namespace.map(|n| n.metadata.labels).ok_or_else(|| {
            format!(
                "namespace {:?} is not in the cluster context, so a constraint's namespaceSelector cannot be matched",
                self.namespace
            )
            .into()
        })
    }
}

/// A cluster object as a namespace selector reads it: its labels only.
#[derive(Deserialize)]
struct Labelled {
    #[serde(default)]
    metadata: Labels,
}

#[derive(Default, Deserialize)]
struct Labels {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// An AdmissionRequest's JSON text, rebuilt from a parsed request.
fn review_text(request: &Request<'_>) -> String {
    let raw = |text: Option<&str>| {
        text.and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .unwrap_or(serde_json::Value::Null)
    };
    serde_json::json!({
        "uid": request.uid,
        "kind": {"group": request.kind.group, "version": request.kind.version, "kind": request.kind.kind},
        "name": request.name,
        "namespace": request.namespace,
        "operation": request.operation,
        "userInfo": {"username": request.user_info.username, "groups": request.user_info.groups},
        "dryRun": request.dry_run,
        "subResource": request.sub_resource,
        "object": raw(request.raw_object()),
        "oldObject": raw(request.raw_old_object()),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use serde_json::{Value as Json, json};
    use tollgate_sdk::testing::{self, Cluster};

    use super::*;

    /// Settings with the required-labels template compiled as the host
    /// compiles templates, and `constraints`.
    fn settings(constraints: Json) -> String {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine
            .add_policy(
                "t.rego".into(),
                r#"package t
violation[{"msg": msg}] {
  required := input.parameters.labels[_]
  not input.review.object.metadata.labels[required]
  msg := sprintf("missing label %v", [required])
}"#
                .into(),
            )
            .unwrap();
        let compiled = engine
            .compile_with_entrypoint(&regorus::Rc::from("data.t.violation"))
            .unwrap();
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &compiled,
            &["data.t.violation"],
        )
        .unwrap();
        json!({"template": "t", "constraints": constraints,
            "program": base64::engine::general_purpose::STANDARD.encode(program.serialize_binary().unwrap())})
        .to_string()
    }

    fn pod(namespace: &str, labels: Json) -> String {
        testing::review(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": namespace, "labels": labels}, "spec": {}}))
    }

    fn verdict(request: &str, settings: &str) -> Verdict {
        let cluster = Rc::new(Cluster::new::<Gatekeeper>(
            vec![
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"env": "prod"}}}),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "labels": {"env": "dev"}}}),
            ],
            settings,
        ));
        testing::with_host(cluster, || {
            testing::evaluate::<Gatekeeper>(request, settings).unwrap()
        })
    }

    #[test]
    fn each_enforcement_action_does_what_gatekeeper_does_at_the_webhook() {
        let settings = settings(json!([
            {"name": "deny-team", "parameters": {"labels": ["team"]}},
            {"name": "warn-owner", "enforcementAction": "warn", "parameters": {"labels": ["owner"]}},
            {"name": "try-cost", "enforcementAction": "dryrun", "parameters": {"labels": ["cost"]}},
        ]));
        let verdict = verdict(&pod("dev", json!({})), &settings);
        assert_eq!(
            verdict.message.as_deref(),
            Some("[deny-team] missing label team")
        );
        assert_eq!(verdict.warnings, ["[warn-owner] missing label owner"]);
        assert_eq!(
            verdict.audit_annotations,
            [(
                DRYRUN_ANNOTATION.to_owned(),
                "[try-cost] missing label cost".to_owned()
            )]
        );
        let labelled = pod("dev", json!({"team": "a", "owner": "b", "cost": "c"}));
        let clean = super::tests::verdict(&labelled, &settings);
        assert!(clean.allowed && clean.warnings.is_empty() && clean.audit_annotations.is_empty());
    }

    #[test]
    fn only_matching_constraints_run() {
        let settings = settings(json!([
            {"name": "prod-only", "match": {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
             "parameters": {"labels": ["team"]}},
            {"name": "deployments", "match": {"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]},
             "parameters": {"labels": ["team"]}},
        ]));
        assert!(verdict(&pod("dev", json!({})), &settings).allowed);
        assert_eq!(
            verdict(&pod("prod", json!({})), &settings)
                .message
                .as_deref(),
            Some("[prod-only] missing label team")
        );
        // A namespace the context does not hold is an error, not a guess.
        let cluster = Rc::new(Cluster::new::<Gatekeeper>(vec![], &settings));
        let error = testing::with_host(cluster, || {
            testing::evaluate::<Gatekeeper>(&pod("nowhere", json!({})), &settings).unwrap_err()
        });
        assert!(
            error
                .0
                .contains("namespace \"nowhere\" is not in the cluster context")
        );
    }

    #[test]
    fn referential_templates_read_the_granted_kinds_in_gatekeepers_layout() {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(true);
        engine
            .add_policy(
                "u.rego".into(),
                r#"package u
violation[{"msg": msg}] {
  host := input.review.object.spec.rules[_].host
  other := data.inventory.namespace[ns]["networking.k8s.io/v1"]["Ingress"][name]
  other.spec.rules[_].host == host
  name != input.review.object.metadata.name
  msg := sprintf("host %v is taken by ingress %v/%v", [host, ns, name])
}"#
                .into(),
            )
            .unwrap();
        let compiled = engine
            .compile_with_entrypoint(&regorus::Rc::from("data.u.violation"))
            .unwrap();
        let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
            &compiled,
            &["data.u.violation"],
        )
        .unwrap();
        let settings = json!({"template": "u", "constraints": [{"name": "unique-host"}],
            "inventory": [{"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"}],
            "program": base64::engine::general_purpose::STANDARD.encode(program.serialize_binary().unwrap())})
        .to_string();
        let ingress = |namespace: &str, name: &str, host: &str| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": {"name": name, "namespace": namespace}, "spec": {"rules": [{"host": host}]}})
        };
        let cluster = Rc::new(Cluster::new::<Gatekeeper>(
            vec![ingress("shop", "web", "shop.example.com")],
            &settings,
        ));
        let request = testing::review(ingress("blog", "site", "shop.example.com"));
        let verdict = testing::with_host(cluster.clone(), || {
            testing::evaluate::<Gatekeeper>(&request, &settings).unwrap()
        });
        assert_eq!(
            verdict.message.as_deref(),
            Some("[unique-host] host shop.example.com is taken by ingress shop/web")
        );
        let request = testing::review(ingress("blog", "site", "blog.example.com"));
        assert!(
            testing::with_host(cluster, || testing::evaluate::<Gatekeeper>(
                &request, &settings
            )
            .unwrap())
            .allowed
        );
    }

    #[test]
    fn settings_without_constraints_or_with_a_broken_program_are_refused() {
        let empty = settings(json!([]));
        assert!(
            testing::validate_settings::<Gatekeeper>(&empty)
                .unwrap_err()
                .contains("has no constraints")
        );
        let broken =
            json!({"template": "t", "program": "AAAA", "constraints": [{"name": "c"}]}).to_string();
        let error = testing::validate_settings::<Gatekeeper>(&broken).unwrap_err();
        assert!(error.starts_with("invalid settings: program: "), "{error}");
    }
}
