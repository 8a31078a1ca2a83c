//! `resource-defaults` (mutating): containers without CPU or memory requests
//! (and, optionally, limits) get the defaults from settings. What the user set
//! is never changed, and a default that would make the container invalid is
//! skipped: no default request where a limit is set (the apiserver copies the
//! limit), no default limit below the container's own request.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};
use tollgate_sdk::pod::model::{Amount, Resources, Text};
use tollgate_sdk::pod::{ContainerKind, ContainerLists, Located, TemplatePathRule, TemplatePaths};
use tollgate_sdk::{Policy, Request, Verdict, quantity};

/// The policy's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Default requests, e.g. `{cpu: 100m, memory: 128Mi}`.
    #[serde(default, deserialize_with = "quantity::deserialize_map")]
    pub requests: BTreeMap<String, String>,
    /// Default limits.
    #[serde(default, deserialize_with = "quantity::deserialize_map")]
    pub limits: BTreeMap<String, String>,
    /// Where pod specs live in kinds the SDK does not know.
    #[serde(default)]
    pub template_paths: Vec<TemplatePathRule>,
}

/// The policy.
pub struct ResourceDefaults;

impl Policy for ResourceDefaults {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.requests.is_empty() && settings.limits.is_empty() {
            return Err("neither requests nor limits is set, so the policy adds nothing: set e.g. requests: {cpu: 100m, memory: 128Mi}".into());
        }
        for (field, map) in [
            ("requests", &settings.requests),
            ("limits", &settings.limits),
        ] {
            for (resource, amount) in map {
                if quantity::parse(amount).is_none() {
                    return Err(format!(
                        "{field}.{resource}: {amount:?} is not a quantity (write e.g. 100m, 1, 512Mi)"
                    ));
                }
            }
        }
        for (resource, request) in &settings.requests {
            if let Some(limit) = settings.limits.get(resource)
                && quantity::parse(request) > quantity::parse(limit)
            {
                return Err(format!(
                    "requests.{resource} ({request}) exceeds limits.{resource} ({limit}): lower the request or raise the limit"
                ));
            }
        }
        Ok(())
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let paths = TemplatePaths::with(&settings.template_paths);
        if !may_add(request, &paths, || request.raw_object())? {
            return Ok(Verdict::allow());
        }
        let Some(raw_object) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        let paths = TemplatePaths::with(&settings.template_paths);
        let specs = paths.pod_specs_in(&request.kind.group, &request.kind.kind, raw_object)?;
        complete(&specs, settings, || Ok(raw_object))
    }

    fn evaluate_text(request: &str, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let paths = TemplatePaths::with(&settings.template_paths);
        let (parsed, specs) = Request::parse_with(request, |kind| {
            paths.pod_specs_seed(&kind.group, &kind.kind)
        })?;
        // The whole object is read again only for an UPDATE.
        let whole = || Request::parse(request).ok().and_then(|r| r.raw_object());
        if !may_add(&parsed, &paths, whole)? {
            return Ok(Verdict::allow());
        }
        let Some(specs) = specs else {
            return Ok(Verdict::allow());
        };
        // The whole object is needed only to add something: read it then.
        complete(&specs, settings, || {
            Request::parse(request)?
                .raw_object()
                .ok_or_else(|| tollgate_sdk::Error("the request lost its object".into()))
        })
    }
}

/// Whether defaults may be added: on CREATE, and on an UPDATE that changes
/// a template that may change (never a fixed one, never a rollout of ours
/// alone); `object` gives the new object's text.
fn may_add<'a>(
    request: &Request<'_>,
    paths: &TemplatePaths,
    object: impl FnOnce() -> Option<&'a str>,
) -> tollgate_sdk::Result<bool> {
    if !paths.editable(&request.kind.group, &request.kind.kind) {
        return Ok(false);
    }
    match request.operation.as_str() {
        "CREATE" => Ok(true),
        "UPDATE" => match object() {
            Some(new) => paths.may_add_on_update(
                &request.kind.group,
                &request.kind.kind,
                request.raw_old_object(),
                new,
            ),
            None => Ok(false),
        },
        _ => Ok(false),
    }
}

/// Decides on a light parse of the containers, and builds the whole object
/// (from `object`) only when something is to be added.
fn complete<'a>(
    specs: &Located<ContainerLists<Container<'_>>>,
    settings: &Settings,
    object: impl FnOnce() -> tollgate_sdk::Result<&'a str>,
) -> tollgate_sdk::Result<Verdict> {
    let mut additions = Vec::new();
    let mut warnings = Vec::new();
    for (pointer, lists) in specs {
        for (kind, index, container) in lists.iter() {
            // Ephemeral containers may not set resources.
            if kind == ContainerKind::Ephemeral {
                continue;
            }
            let at = format!("{pointer}/{}/{index}", kind.field());
            for (field, resource, amount) in defaults_for(kind, container, settings, &mut warnings)
            {
                additions.push((at.clone(), field, resource, amount));
            }
        }
    }
    let verdict = if additions.is_empty() {
        Verdict::allow()
    } else {
        let mut object: Value = serde_json::from_str(object()?)?;
        for (at, field, resource, amount) in additions {
            let container = object
                .pointer_mut(&at)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| tollgate_sdk::Error(format!("no container at {at}")))?;
            let resources = container
                .entry("resources")
                .or_insert_with(|| Value::Object(Map::new()));
            let list = resources
                .as_object_mut()
                .ok_or_else(|| tollgate_sdk::Error(format!("{at}/resources is not an object")))?
                .entry(field)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(list) = list.as_object_mut() {
                list.insert(resource.to_owned(), Value::String(amount.to_owned()));
            }
        }
        Verdict::mutate(object)
    };
    Ok(warnings.into_iter().fold(verdict, Verdict::warn))
}

tollgate_sdk::export!(ResourceDefaults);

/// The fields of a container this policy reads: a projection of the SDK's
/// Pod model, so the rest of each container is skipped unparsed.
#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    resources: Option<Resources<'a>>,
}

impl<'a> Container<'a> {
    fn request(&self, resource: &str) -> Option<&Amount<'a>> {
        self.resources.as_ref()?.request(resource)
    }

    fn limit(&self, resource: &str) -> Option<&Amount<'a>> {
        self.resources.as_ref()?.limit(resource)
    }
}

/// The (field, resource, amount) defaults this container lacks.
fn defaults_for<'s>(
    kind: ContainerKind,
    container: &Container<'_>,
    settings: &'s Settings,
    warnings: &mut Vec<String>,
) -> Vec<(&'static str, &'s str, &'s str)> {
    let mut add = Vec::new();
    for (resource, default) in &settings.requests {
        if container.request(resource).is_none() && container.limit(resource).is_none() {
            add.push(("requests", resource.as_str(), default.as_str()));
        }
    }
    for (resource, default) in &settings.limits {
        if container.limit(resource).is_some() {
            continue;
        }
        let request = container
            .request(resource)
            .and_then(Amount::value)
            .or_else(|| {
                settings
                    .requests
                    .get(resource)
                    .and_then(|r| quantity::parse(r))
            });
        if request.is_some_and(|request| Some(request) > quantity::parse(default)) {
            warnings.push(format!(
                "{} {:?}: its {resource} request exceeds the default limit {default}, so no limit was added",
                kind.noun(),
                container.name.as_str()
            ));
            continue;
        }
        add.push(("limits", resource.as_str(), default.as_str()));
    }
    add
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_sdk::testing;

    const SETTINGS: &str =
        r#"{"requests":{"cpu":"100m","memory":"128Mi"},"limits":{"memory":"256Mi"}}"#;

    fn pod(containers: Value) -> String {
        testing::review(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": containers}}),
        )
    }

    #[test]
    fn adds_defaults_to_containers_without_resources() {
        let verdict = testing::evaluate::<ResourceDefaults>(
            &pod(json!([{"name": "a", "image": "x"}])),
            SETTINGS,
        )
        .unwrap();
        let object = verdict.mutated().unwrap();
        assert_eq!(
            object["spec"]["containers"][0]["resources"],
            json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}})
        );
    }

    #[test]
    fn never_overwrites_what_the_user_set() {
        let containers = json!([{"name": "a", "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "1Gi"}}}]);
        let verdict = testing::evaluate::<ResourceDefaults>(&pod(containers), SETTINGS).unwrap();
        // The cpu request stays; the memory limit without a request gets no
        // default request (the apiserver copies the limit): nothing to add.
        assert!(verdict.allowed);
        assert_eq!(verdict.mutated_object, None);
    }

    #[test]
    fn fully_specified_pods_get_no_mutation() {
        let containers = json!([{"name": "a", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}]);
        let verdict = testing::evaluate::<ResourceDefaults>(&pod(containers), SETTINGS).unwrap();
        assert!(verdict.allowed);
        assert_eq!(verdict.mutated_object, None);
    }

    #[test]
    fn applying_to_its_own_output_changes_nothing() {
        let first =
            testing::evaluate::<ResourceDefaults>(&pod(json!([{"name": "a"}])), SETTINGS).unwrap();
        let second = testing::evaluate::<ResourceDefaults>(
            &testing::review(first.mutated().unwrap()),
            SETTINGS,
        )
        .unwrap();
        assert_eq!(second.mutated_object, None);
    }

    #[test]
    fn skips_a_default_limit_below_the_users_request_with_a_warning() {
        let containers = json!([{"name": "big", "resources": {"requests": {"memory": "1Gi"}}}]);
        let verdict = testing::evaluate::<ResourceDefaults>(&pod(containers), SETTINGS).unwrap();
        assert_eq!(
            verdict.warnings,
            vec![
                "container \"big\": its memory request exceeds the default limit 256Mi, so no limit was added"
            ]
        );
    }

    #[test]
    fn mutates_init_containers_of_cronjob_templates_but_not_ephemeral_ones() {
        let request = testing::review(
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"initContainers": [{"name": "i"}],
                "containers": [{"name": "m"}], "ephemeralContainers": [{"name": "e"}]}}}}}}),
        );
        let object = testing::evaluate::<ResourceDefaults>(&request, SETTINGS)
            .unwrap()
            .mutated()
            .unwrap();
        let spec = &object["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert!(spec["initContainers"][0]["resources"]["requests"].is_object());
        assert!(spec["containers"][0]["resources"]["requests"].is_object());
        assert!(spec["ephemeralContainers"][0].get("resources").is_none());
    }

    #[test]
    fn numbers_are_quantities_too() {
        let verdict = testing::evaluate::<ResourceDefaults>(
            &pod(json!([{"name": "a"}])),
            r#"{"requests":{"cpu":1}}"#,
        );
        let object = verdict.unwrap().mutated().unwrap();
        assert_eq!(
            object["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        assert!(
            testing::validate_settings::<ResourceDefaults>(r#"{"requests":{"cpu":true}}"#).is_err()
        );
    }

    #[test]
    fn refuses_settings_that_are_not_quantities_or_inconsistent() {
        let err = testing::validate_settings::<ResourceDefaults>(r#"{"requests":{"cpu":"lots"}}"#)
            .unwrap_err();
        assert_eq!(
            err,
            "requests.cpu: \"lots\" is not a quantity (write e.g. 100m, 1, 512Mi)"
        );
        let err = testing::validate_settings::<ResourceDefaults>(
            r#"{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("requests.cpu (2) exceeds limits.cpu (1)"));
    }
}
