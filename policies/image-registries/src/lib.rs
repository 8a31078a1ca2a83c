//! `image-registries`: every container image (init, regular, ephemeral) of a
//! Pod or of the pod templates in a workload must come from an allowed
//! registry, and optionally carry an explicit tag other than `latest`.
//!
//! Images are compared in their normalized form: `nginx` is
//! `docker.io/library/nginx`, `team/app` is `docker.io/team/app`, as the
//! container runtime resolves them.

use std::borrow::Cow;

use serde::Deserialize;
use tollgate_sdk::pod::model::Text;
use tollgate_sdk::pod::{ContainerLists, Located, TemplatePathRule, TemplatePaths};
use tollgate_sdk::{Policy, Request, Verdict};

/// The policy's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    /// Registry prefixes images may come from, e.g. `registry.k8s.io/`.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Refuse `:latest` and untagged images (a digest counts as pinned).
    #[serde(default)]
    pub deny_latest: bool,
    /// Where pod specs live in kinds the SDK does not know.
    #[serde(default)]
    pub template_paths: Vec<TemplatePathRule>,
}

/// The policy.
pub struct ImageRegistries;

impl Policy for ImageRegistries {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.allowed_registries.is_empty() && !settings.deny_latest {
            return Err("allowedRegistries is empty and denyLatest is false, so the policy checks nothing: list registries such as \"registry.k8s.io/\" or set denyLatest: true".into());
        }
        if let Some(bad) = settings
            .allowed_registries
            .iter()
            .find(|r| !r.contains('/'))
        {
            return Err(format!(
                "allowedRegistries entry {bad:?} must end in '/' (write \"{bad}/\"), so that it cannot match a longer host name"
            ));
        }
        Ok(())
    }

    fn evaluate(request: &Request<'_>, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let Some(object) = request.raw_object() else {
            return Ok(Verdict::allow());
        };
        let paths = TemplatePaths::with(&settings.template_paths);
        let specs = paths.pod_specs_in(&request.kind.group, &request.kind.kind, object)?;
        Ok(check(&specs, settings))
    }

    fn evaluate_text(request: &str, settings: &Settings) -> tollgate_sdk::Result<Verdict> {
        let paths = TemplatePaths::with(&settings.template_paths);
        let (_, specs) = Request::parse_with(request, |kind| {
            paths.pod_specs_seed(&kind.group, &kind.kind)
        })?;
        Ok(check(&specs.unwrap_or_default(), settings))
    }
}

/// The verdict on the containers of every pod spec.
fn check(specs: &Located<ContainerLists<Container<'_>>>, settings: &Settings) -> Verdict {
    let mut problems = Vec::new();
    for (_, lists) in specs {
        for (kind, _, container) in lists.iter() {
            let (name, Some(image)) = (
                container.name.as_str(),
                container.image.as_ref().map(Text::as_str),
            ) else {
                continue;
            };
            let normalized = normalize(image);
            if !settings.allowed_registries.is_empty()
                && !settings
                    .allowed_registries
                    .iter()
                    .any(|prefix| normalized.starts_with(prefix.as_str()))
            {
                problems.push(format!(
                    "{} {name:?} uses image {image:?}, which is not from an allowed registry ({})",
                    kind.noun(),
                    settings.allowed_registries.join(", ")
                ));
            }
            if settings.deny_latest {
                match tag(image) {
                    Tag::Digest | Tag::Named(_) => {}
                    Tag::Latest => problems.push(format!(
                        "{} {name:?} uses image {image:?}: the tag latest is not allowed, pin a version or digest",
                        kind.noun()
                    )),
                    Tag::Missing => problems.push(format!(
                        "{} {name:?} uses image {image:?} without a tag (that means latest): pin a version or digest",
                        kind.noun()
                    )),
                }
            }
        }
    }
    if problems.is_empty() {
        Verdict::allow()
    } else {
        Verdict::deny(problems.join("; "))
    }
}

/// The fields of a container this policy reads: a projection of the SDK's
/// Pod model, so the rest of each container is skipped unparsed.
#[derive(Deserialize)]
struct Container<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    image: Option<Text<'a>>,
}

tollgate_sdk::export!(ImageRegistries);

/// The fully qualified form of an image reference.
fn normalize(image: &str) -> Cow<'_, str> {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            Cow::Borrowed(image)
        }
        Some(_) => Cow::Owned(format!("docker.io/{image}")),
        None => Cow::Owned(format!("docker.io/library/{image}")),
    }
}

/// How an image reference pins its content.
#[derive(Debug, PartialEq)]
enum Tag<'a> {
    /// `@sha256:…`
    Digest,
    /// `:latest`
    Latest,
    /// Neither tag nor digest.
    Missing,
    /// Any other tag.
    Named(&'a str),
}

fn tag(image: &str) -> Tag<'_> {
    if image.contains('@') {
        return Tag::Digest;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) => Tag::Latest,
        Some((_, tag)) => Tag::Named(tag),
        None => Tag::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_sdk::testing;

    const SETTINGS: &str =
        r#"{"allowedRegistries":["registry.k8s.io/","nvcr.io/"],"denyLatest":true}"#;

    fn pod(images: &[(&str, &str)]) -> String {
        let containers: Vec<_> = images
            .iter()
            .map(|(n, i)| json!({"name": n, "image": i}))
            .collect();
        testing::review(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": containers}}),
        )
    }

    #[test]
    fn allows_images_from_allowed_registries_with_tags() {
        let verdict = testing::evaluate::<ImageRegistries>(
            &pod(&[("a", "nvcr.io/nvidia/pytorch:24.05-py3")]),
            SETTINGS,
        );
        assert!(verdict.unwrap().allowed);
    }

    #[test]
    fn denies_other_registries_naming_container_and_image() {
        let verdict =
            testing::evaluate::<ImageRegistries>(&pod(&[("web", "quay.io/x/y:1")]), SETTINGS)
                .unwrap();
        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.unwrap(),
            "container \"web\" uses image \"quay.io/x/y:1\", which is not from an allowed registry (registry.k8s.io/, nvcr.io/)"
        );
    }

    #[test]
    fn docker_hub_short_names_are_normalized() {
        let settings = r#"{"allowedRegistries":["docker.io/library/"]}"#;
        assert!(
            testing::evaluate::<ImageRegistries>(&pod(&[("a", "nginx:1.27")]), settings)
                .unwrap()
                .allowed
        );
        assert!(
            !testing::evaluate::<ImageRegistries>(&pod(&[("a", "evil/nginx:1")]), settings)
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn denies_latest_and_untagged_but_accepts_digests_and_registry_ports() {
        let verdict = testing::evaluate::<ImageRegistries>(
            &pod(&[
                ("a", "nvcr.io/x:latest"),
                ("b", "nvcr.io/x"),
                ("c", "nvcr.io/x@sha256:abc"),
            ]),
            SETTINGS,
        )
        .unwrap();
        let message = verdict.message.unwrap();
        assert!(
            message.contains("container \"a\" uses image \"nvcr.io/x:latest\": the tag latest")
        );
        assert!(message.contains("container \"b\" uses image \"nvcr.io/x\" without a tag"));
        assert!(!message.contains("\"c\""));
        assert_eq!(tag("localhost:5000/x"), Tag::Missing);
    }

    #[test]
    fn checks_init_and_ephemeral_containers_of_deployment_templates() {
        let request = testing::review(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"initContainers": [{"name": "init", "image": "busybox:1"}],
                "containers": [{"name": "ok", "image": "registry.k8s.io/pause:3.9"}],
                "ephemeralContainers": [{"name": "dbg", "image": "docker.io/busybox:1"}]}}}}),
        );
        let message = testing::evaluate::<ImageRegistries>(&request, SETTINGS)
            .unwrap()
            .message
            .unwrap();
        assert!(message.starts_with("init container \"init\" uses image \"busybox:1\""));
        assert!(message.contains("ephemeral container \"dbg\""));
    }

    #[test]
    fn settings_that_check_nothing_or_match_too_much_are_refused() {
        assert!(
            testing::validate_settings::<ImageRegistries>("{}")
                .unwrap_err()
                .contains("checks nothing")
        );
        assert!(
            testing::validate_settings::<ImageRegistries>(r#"{"allowedRegistries":["nvcr.io"]}"#)
                .unwrap_err()
                .contains("must end in '/'")
        );
        assert!(testing::validate_settings::<ImageRegistries>(r#"{"denyLatest":"yes"}"#).is_err());
    }
}
