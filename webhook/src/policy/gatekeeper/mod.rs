//! `builtin:gatekeeper`: the ConstraintTemplate and Constraints a policy
//! entry names (`settings: {template, constraints}`, files or inline, the
//! documents `kubectl apply` takes for Gatekeeper), read and checked at
//! load, and the template's Rego compiled once into the program the
//! `gatekeeper` policy runs in its sandbox. The policy's settings become
//! `{template, program, constraints}`.

mod rego;
mod schema;

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::Kind;

/// Gatekeeper's admission target.
const TARGET: &str = "admission.k8s.gatekeeper.sh";

/// The settings a user writes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wanted {
    template: Document,
    constraints: Vec<Document>,
}

/// A file path (relative to the configuration), or the document inline.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Path(String),
    Inline(Value),
}

impl Document {
    /// The documents it holds (a file may hold several), and how messages
    /// name them.
    fn read(&self, base_dir: &Path) -> Result<(Vec<Value>, String), String> {
        match self {
            Document::Inline(value) => Ok((vec![value.clone()], "(inline)".to_owned())),
            Document::Path(path) => {
                let path = base_dir.join(path);
                let name = path.display().to_string();
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {name}: {e}"))?;
                let documents = serde_yaml::Deserializer::from_str(&text)
                    .map(|document| {
                        Value::deserialize(document).map_err(|e| format!("{name}: {e}"))
                    })
                    .filter(|document| !matches!(document, Ok(Value::Null)))
                    .collect::<Result<_, _>>()?;
                Ok((documents, name))
            }
        }
    }
}

/// Reads and checks the template and constraints of `settings`, compiles
/// the template, and returns the settings the policy gets, as JSON text.
/// `grants`: the kinds the policy may read (a constraint's
/// `namespaceSelector` needs Namespaces; a template that reads
/// `data.inventory` gets the granted kinds there, as Gatekeeper syncs them).
///
/// # Errors
///
/// What is wrong, naming the file and field.
pub fn prepare(settings: &Value, base_dir: &Path, grants: &[Kind]) -> Result<String, String> {
    let namespaces_granted = grants.contains(&Kind::namespace());
    let wanted = Wanted::deserialize(settings).map_err(|e| {
        format!("{e}: write settings: {{template: PATH, constraints: [PATH, ...]}} (paths relative to the configuration, or the documents inline)")
    })?;
    let (documents, origin) = wanted.template.read(base_dir)?;
    let template = documents
        .into_iter()
        .find(|d| d["kind"] == "ConstraintTemplate")
        .ok_or_else(|| format!("template {origin}: holds no ConstraintTemplate"))?;
    let name = template["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let kind = template["spec"]["crd"]["spec"]["names"]["kind"]
        .as_str()
        .ok_or_else(|| format!("template {origin}: spec.crd.spec.names.kind is missing"))?
        .to_owned();
    let schema = &template["spec"]["crd"]["spec"]["validation"]["openAPIV3Schema"];
    let source = source(&template).map_err(|e| format!("template {origin}: {e}"))?;
    let referential = std::iter::once(source.rego)
        .chain(source.libs.iter().copied())
        .any(|rego| rego.contains("data.inventory"));
    if referential && grants.is_empty() {
        return Err(format!(
            "template {origin}: it reads data.inventory (the objects Gatekeeper syncs): grant the kinds it reads, e.g. context: [{{apiVersion: v1, kind: Service}}]"
        ));
    }
    let program = rego::compile(&source).map_err(|e| format!("template {origin}: {e}"))?;

    let mut constraints = Vec::new();
    for document in &wanted.constraints {
        let (documents, origin) = document.read(base_dir)?;
        for constraint in documents {
            constraints.push(
                constraint_settings(&constraint, &kind, schema, namespaces_granted)
                    .map_err(|e| format!("constraint {origin}: {e}"))?,
            );
        }
    }
    if constraints.is_empty() {
        return Err(format!(
            "template {name:?} has no constraints: list at least one"
        ));
    }
    let inventory: Vec<Value> = grants
        .iter()
        .filter(|_| referential)
        .map(|k| json!({"apiVersion": k.api_version, "kind": k.kind}))
        .collect();
    Ok(json!({
        "template": name,
        "program": base64::engine::general_purpose::STANDARD.encode(program),
        "constraints": constraints,
        "inventory": inventory,
    })
    .to_string())
}

/// The template's Rego for Gatekeeper's admission target: the `Rego`
/// engine's source in `code`, else the target's own `rego` and `libs`.
fn source(template: &Value) -> Result<rego::Source<'_>, String> {
    let target = template["spec"]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["target"] == TARGET)
        .ok_or_else(|| format!("spec.targets has no target {TARGET}"))?;
    let (body, v1) = match target["code"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["engine"] == "Rego")
    {
        Some(code) => (&code["source"], code["source"]["version"] == "v1"),
        None => (target, false),
    };
    let rego = body["rego"].as_str().ok_or_else(|| {
        format!("target {TARGET} has no Rego (only CEL, which this policy does not run)")
    })?;
    let libs = body["libs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|lib| lib.as_str().ok_or("libs: every library is Rego text"))
        .collect::<Result<_, _>>()?;
    Ok(rego::Source { rego, libs, v1 })
}

/// One constraint as the policy's settings hold it, checked.
fn constraint_settings(
    constraint: &Value,
    kind: &str,
    schema: &Value,
    namespaces_granted: bool,
) -> Result<Value, String> {
    let name = constraint["metadata"]["name"]
        .as_str()
        .ok_or("metadata.name is missing")?;
    if constraint["kind"] != kind {
        return Err(format!(
            "{name:?} is a {}, not a {kind} (the template's kind)",
            constraint["kind"]
        ));
    }
    let spec = &constraint["spec"];
    let action = spec["enforcementAction"].as_str().unwrap_or("deny");
    if !["deny", "dryrun", "warn", "scoped"].contains(&action) {
        return Err(format!(
            "{name:?}: spec.enforcementAction {action:?} must be deny, dryrun, warn or scoped"
        ));
    }
    if !spec["match"]["namespaceSelector"].is_null() && !namespaces_granted {
        return Err(format!(
            "{name:?}: spec.match.namespaceSelector needs the namespaces' labels: add context: [{{apiVersion: v1, kind: Namespace}}] to the policy"
        ));
    }
    let parameters = if spec["parameters"].is_null() {
        json!({})
    } else {
        spec["parameters"].clone()
    };
    if !schema.is_null() {
        schema::check(schema, &parameters, "spec.parameters")
            .map_err(|e| format!("{name:?}: {e}"))?;
    }
    let mut prepared = json!({
        "name": name,
        "enforcementAction": action,
        "parameters": parameters,
    });
    for (from, to) in [
        ("match", "match"),
        ("scopedEnforcementActions", "scopedEnforcementActions"),
    ] {
        if !spec[from].is_null() {
            prepared[to] = spec[from].clone();
        }
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata: {name: k8srequiredlabels}
spec:
  crd:
    spec:
      names: {kind: K8sRequiredLabels}
      validation:
        openAPIV3Schema:
          type: object
          properties:
            labels: {type: array, items: {type: string}}
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8srequiredlabels
        violation[{"msg": msg}] {
          required := input.parameters.labels[_]
          not input.review.object.metadata.labels[required]
          msg := sprintf("missing label %v", [required])
        }
"#;

    fn constraint(extra: &str) -> Value {
        serde_yaml::from_str(&format!(
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sRequiredLabels\nmetadata: {{name: need-team}}\nspec:\n  parameters: {{labels: [team]}}\n{extra}"
        ))
        .unwrap()
    }

    fn prepared(
        template: Value,
        constraints: Vec<Value>,
        grants: &[Kind],
    ) -> Result<Value, String> {
        let settings = json!({"template": template, "constraints": constraints});
        prepare(&settings, Path::new("."), grants).map(|text| serde_json::from_str(&text).unwrap())
    }

    fn template() -> Value {
        serde_yaml::from_str(TEMPLATE).unwrap()
    }

    #[test]
    fn a_template_and_its_constraints_become_a_program_and_checked_constraints() {
        let settings = prepared(
            template(),
            vec![constraint("  enforcementAction: warn\n")],
            &[],
        )
        .unwrap();
        assert_eq!(settings["template"], "k8srequiredlabels");
        assert!(settings["program"].as_str().unwrap().len() > 100);
        assert_eq!(
            settings["constraints"],
            json!([{"name": "need-team", "enforcementAction": "warn", "parameters": {"labels": ["team"]}}])
        );
        assert_eq!(
            settings["inventory"],
            json!([]),
            "the template reads no inventory"
        );
    }

    #[test]
    fn a_template_that_reads_the_inventory_gets_the_granted_kinds() {
        let mut unique = template();
        unique["spec"]["targets"][0]["rego"] = json!(
            "package k8srequiredlabels\nviolation[{\"msg\": \"taken\"}] {\n  data.inventory.namespace[_][\"v1\"][\"Service\"][input.review.object.metadata.name]\n}\n"
        );
        assert!(
            prepared(unique.clone(), vec![constraint("")], &[])
                .unwrap_err()
                .contains("it reads data.inventory (the objects Gatekeeper syncs): grant the kinds it reads")
        );
        let settings =
            prepared(unique, vec![constraint("")], &[Kind::new("v1", "Service")]).unwrap();
        assert_eq!(
            settings["inventory"],
            json!([{"apiVersion": "v1", "kind": "Service"}])
        );
    }

    #[test]
    fn what_is_wrong_is_named() {
        let error = |template: Value, constraints: Vec<Value>| {
            prepared(template, constraints, &[]).unwrap_err()
        };
        assert!(error(template(), vec![]).contains("has no constraints"));
        let mut other = constraint("");
        other["kind"] = json!("K8sAllowedRepos");
        assert!(
            error(template(), vec![other])
                .contains("\"need-team\" is a \"K8sAllowedRepos\", not a K8sRequiredLabels")
        );
        let mut bad = constraint("");
        bad["spec"]["parameters"] = json!({"labels": "team"});
        assert_eq!(
            error(template(), vec![bad]),
            "constraint (inline): \"need-team\": spec.parameters.labels: expected array, got \"team\""
        );
        assert!(
            error(template(), vec![constraint("  enforcementAction: block\n")])
                .contains("must be deny, dryrun, warn or scoped")
        );
        let selecting = constraint("  match: {namespaceSelector: {matchLabels: {env: prod}}}\n");
        assert!(
            error(template(), vec![selecting.clone()])
                .contains("add context: [{apiVersion: v1, kind: Namespace}]")
        );
        assert!(prepared(template(), vec![selecting], &[Kind::namespace()]).is_ok());
        let mut cel_only = template();
        cel_only["spec"]["targets"][0] =
            json!({"target": TARGET, "code": [{"engine": "K8sNativeValidation", "source": {}}]});
        assert!(error(cel_only, vec![constraint("")]).contains("has no Rego (only CEL"));
        let missing = json!({"template": "no/such/template.yaml", "constraints": []});
        assert!(
            prepare(&missing, Path::new("."), &[])
                .unwrap_err()
                .starts_with("cannot read ./no/such/template.yaml")
        );
        assert!(
            prepare(&json!({"template": "x"}), Path::new("."), &[])
                .unwrap_err()
                .contains("missing field `constraints`")
        );
    }
}
