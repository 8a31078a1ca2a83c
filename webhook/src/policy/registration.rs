//! The webhook configurations that register a policy configuration with the
//! apiserver: `rules` from the policies' `match`, so the apiserver calls
//! Tollgate only for what some policy wants, and one webhook per failure
//! policy, so a fail-open policy never blocks admission when Tollgate is
//! unreachable.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations,
    ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::GroupVersionKind;

use super::config::{Config, FailurePolicy, Operation, PolicyConfig};

/// Where the apiserver reaches Tollgate, and what it must skip.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name of both configurations.
    pub name: String,
    /// The Service (name, namespace, port), or else…
    pub service: Option<(String, String, i32)>,
    /// …a base URL (`https://host:port`).
    pub url: Option<String>,
    /// Namespaces never sent (kube-system, Tollgate's own).
    pub skip_namespaces: Vec<String>,
    /// Tollgate's own service account (`system:serviceaccount:NS:NAME`),
    /// whose requests are never sent.
    pub skip_user: Option<String>,
    /// The apiserver's wait for an answer.
    pub timeout_seconds: i32,
}

/// The two configurations; `None` where no policy of that side exists.
#[derive(Debug, Clone, Default)]
pub struct Registration {
    /// For the mutating policies.
    pub mutating: Option<MutatingWebhookConfiguration>,
    /// For the validating policies.
    pub validating: Option<ValidatingWebhookConfiguration>,
}

/// One webhook's shared parts.
struct Webhook {
    name: String,
    client_config: WebhookClientConfig,
    failure_policy: String,
    match_conditions: Option<Vec<MatchCondition>>,
    namespace_selector: Option<LabelSelector>,
    rules: Vec<RuleWithOperations>,
}

/// The configurations for `config`.
pub fn register(config: &Config, target: &Target) -> Registration {
    let webhooks = |mutating: bool| -> Vec<Webhook> {
        [FailurePolicy::Fail, FailurePolicy::Ignore]
            .into_iter()
            .filter_map(|failure| {
                let policies: Vec<&PolicyConfig> = config
                    .policies
                    .iter()
                    .filter(|p| p.mutating == mutating && p.failure_policy == failure)
                    .collect();
                (!policies.is_empty()).then(|| webhook(target, mutating, failure, &policies))
            })
            .collect()
    };
    let metadata = || ObjectMeta {
        name: Some(target.name.clone()),
        labels: Some([("app.kubernetes.io/name".to_owned(), "tollgate".to_owned())].into()),
        ..ObjectMeta::default()
    };
    let mutating = webhooks(true);
    let validating = webhooks(false);
    Registration {
        mutating: (!mutating.is_empty()).then(|| MutatingWebhookConfiguration {
            metadata: metadata(),
            webhooks: Some(
                mutating
                    .into_iter()
                    .map(|w| MutatingWebhook {
                        admission_review_versions: vec!["v1".into()],
                        client_config: w.client_config,
                        failure_policy: Some(w.failure_policy),
                        match_conditions: w.match_conditions,
                        match_policy: Some("Equivalent".into()),
                        name: w.name,
                        namespace_selector: w.namespace_selector,
                        object_selector: None,
                        // A later mutating webhook may change what an
                        // earlier policy mutated: the apiserver calls again.
                        reinvocation_policy: Some("IfNeeded".into()),
                        rules: Some(w.rules),
                        side_effects: "NoneOnDryRun".into(),
                        timeout_seconds: Some(target.timeout_seconds),
                    })
                    .collect(),
            ),
        }),
        validating: (!validating.is_empty()).then(|| ValidatingWebhookConfiguration {
            metadata: metadata(),
            webhooks: Some(
                validating
                    .into_iter()
                    .map(|w| ValidatingWebhook {
                        admission_review_versions: vec!["v1".into()],
                        client_config: w.client_config,
                        failure_policy: Some(w.failure_policy),
                        match_conditions: w.match_conditions,
                        match_policy: Some("Equivalent".into()),
                        name: w.name,
                        namespace_selector: w.namespace_selector,
                        object_selector: None,
                        rules: Some(w.rules),
                        side_effects: "NoneOnDryRun".into(),
                        timeout_seconds: Some(target.timeout_seconds),
                    })
                    .collect(),
            ),
        }),
    }
}

fn webhook(
    target: &Target,
    mutating: bool,
    failure: FailurePolicy,
    policies: &[&PolicyConfig],
) -> Webhook {
    let (side, failure_segment, failure_policy) = match (mutating, failure) {
        (true, FailurePolicy::Fail) => ("mutate", "fail", "Fail"),
        (true, FailurePolicy::Ignore) => ("mutate", "ignore", "Ignore"),
        (false, FailurePolicy::Fail) => ("validate", "fail", "Fail"),
        (false, FailurePolicy::Ignore) => ("validate", "ignore", "Ignore"),
    };
    let path = format!("/{side}/{failure_segment}");
    let client_config = match (&target.service, &target.url) {
        (_, Some(url)) => WebhookClientConfig {
            url: Some(format!("{}{path}", url.trim_end_matches('/'))),
            ..WebhookClientConfig::default()
        },
        (Some((name, namespace, port)), None) => WebhookClientConfig {
            service: Some(ServiceReference {
                name: name.clone(),
                namespace: namespace.clone(),
                path: Some(path),
                port: Some(*port),
            }),
            ..WebhookClientConfig::default()
        },
        (None, None) => WebhookClientConfig::default(),
    };
    Webhook {
        name: format!("{failure_segment}.{side}.tollgate.dev"),
        client_config,
        failure_policy: failure_policy.into(),
        match_conditions: target.skip_user.as_ref().map(|user| {
            vec![MatchCondition {
                name: "not-tollgate-itself".into(),
                expression: format!("request.userInfo.username != '{user}'"),
            }]
        }),
        namespace_selector: (!target.skip_namespaces.is_empty()).then(|| LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "kubernetes.io/metadata.name".into(),
                operator: "NotIn".into(),
                values: Some(target.skip_namespaces.clone()),
            }]),
            match_labels: None,
        }),
        rules: rules(policies),
    }
}

/// What a rule is besides its resources: API groups, operations, scope.
type Shape = (Vec<String>, Vec<&'static str>, &'static str);

/// One rule per distinct (groups, operations, scope), with every resource
/// the policies of that shape name.
fn rules(policies: &[&PolicyConfig]) -> Vec<RuleWithOperations> {
    let mut shapes: BTreeMap<Shape, BTreeSet<String>> = BTreeMap::new();
    for policy in policies {
        let matches = &policy.matches;
        let groups: BTreeSet<String> = matches.api_groups.iter().cloned().collect();
        let groups: Vec<String> = if groups.contains("*") {
            vec!["*".into()]
        } else {
            groups.into_iter().collect()
        };
        let operations: BTreeSet<&'static str> =
            matches.operations.iter().map(|o| operation(*o)).collect();
        // Only namespaced objects can match a namespace list.
        let scope = if matches.namespaces.is_empty() {
            "*"
        } else {
            "Namespaced"
        };
        // The resource, and each subresource the policy asks for.
        let resources = matches.kinds.iter().flat_map(|kind| {
            let plural = resource(kind);
            let subresources = matches
                .subresources
                .iter()
                .map(move |sub| format!("{}/{sub}", resource(kind)));
            std::iter::once(plural).chain(subresources)
        });
        shapes
            .entry((groups, operations.into_iter().collect(), scope))
            .or_default()
            .extend(resources);
    }
    shapes
        .into_iter()
        .map(
            |((groups, operations, scope), resources)| RuleWithOperations {
                api_groups: Some(groups),
                api_versions: Some(vec!["*".into()]),
                operations: Some(operations.into_iter().map(str::to_owned).collect()),
                resources: Some(if resources.contains("*") {
                    vec!["*".into()]
                } else {
                    resources.into_iter().collect()
                }),
                scope: Some(scope.into()),
            },
        )
        .collect()
}

fn operation(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// The resource of a kind: its lower-case plural, as the apiserver (and
/// every CRD of the field) names it.
fn resource(kind: &str) -> String {
    if kind == "*" {
        return kind.into();
    }
    kube::api::ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", kind)).plural
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            name: "tollgate".into(),
            service: Some(("tollgate".into(), "tollgate-system".into(), 443)),
            url: None,
            skip_namespaces: vec!["kube-system".into(), "tollgate-system".into()],
            skip_user: Some("system:serviceaccount:tollgate-system:tollgate".into()),
            timeout_seconds: 10,
        }
    }

    fn parse(yaml: &str) -> Config {
        Config::parse(yaml, "test", std::path::PathBuf::new()).unwrap()
    }

    #[test]
    fn one_webhook_per_side_and_failure_policy_with_rules_from_match() {
        let config = parse(
            r#"
policies:
  - name: defaults
    module: builtin:resource-defaults
    mutating: true
    match: {apiGroups: ["", apps], kinds: [Pod, Deployment], operations: [CREATE]}
  - name: psa
    module: builtin:pod-security
    match: {apiGroups: [""], kinds: [Pod], operations: [CREATE, UPDATE]}
  - name: netpol
    module: builtin:pod-security
    failurePolicy: ignore
    match: {apiGroups: [networking.k8s.io], kinds: [NetworkPolicy], namespaces: [team-a]}
  - name: debug
    module: builtin:pod-security
    match: {apiGroups: [""], kinds: [Pod], operations: [UPDATE], subresources: [ephemeralcontainers]}
"#,
        );
        let registration = register(&config, &target());
        let mutating = registration.mutating.unwrap();
        let webhooks = mutating.webhooks.unwrap();
        assert_eq!(webhooks.len(), 1, "no fail-open mutating policy");
        let hook = &webhooks[0];
        assert_eq!(hook.name, "fail.mutate.tollgate.dev");
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hook.reinvocation_policy.as_deref(), Some("IfNeeded"));
        assert_eq!(hook.side_effects, "NoneOnDryRun");
        let service = hook.client_config.service.as_ref().unwrap();
        assert_eq!(service.path.as_deref(), Some("/mutate/fail"));
        let rules = hook.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].api_groups, Some(vec!["".into(), "apps".into()]));
        assert_eq!(
            rules[0].resources,
            Some(vec!["deployments".into(), "pods".into()])
        );
        assert_eq!(rules[0].operations, Some(vec!["CREATE".into()]));

        let validating = registration.validating.unwrap().webhooks.unwrap();
        let update_rule = validating[0]
            .rules
            .as_ref()
            .unwrap()
            .iter()
            .find(|r| r.operations == Some(vec!["UPDATE".into()]))
            .unwrap();
        assert_eq!(
            update_rule.resources,
            Some(vec!["pods".into(), "pods/ephemeralcontainers".into()])
        );
        let names: Vec<_> = validating.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["fail.validate.tollgate.dev", "ignore.validate.tollgate.dev"]
        );
        let open = &validating[1];
        assert_eq!(open.failure_policy.as_deref(), Some("Ignore"));
        let rule = &open.rules.as_ref().unwrap()[0];
        assert_eq!(rule.resources, Some(vec!["networkpolicies".into()]));
        assert_eq!(rule.scope.as_deref(), Some("Namespaced"));
        assert_eq!(
            open.match_conditions.as_ref().unwrap()[0].expression,
            "request.userInfo.username != 'system:serviceaccount:tollgate-system:tollgate'"
        );
        let selector = open.namespace_selector.as_ref().unwrap();
        let requirement = &selector.match_expressions.as_ref().unwrap()[0];
        assert_eq!(requirement.operator, "NotIn");
    }

    #[test]
    fn a_url_replaces_the_service_and_wildcards_stay_wildcards() {
        let config = parse(
            "policies:\n  - name: all\n    module: builtin:pod-security\n    match: {kinds: ['*']}\n",
        );
        let mut target = target();
        target.url = Some("https://10.0.0.5:8443/".into());
        let validating = register(&config, &target).validating.unwrap();
        let hook = &validating.webhooks.unwrap()[0];
        assert_eq!(
            hook.client_config.url.as_deref(),
            Some("https://10.0.0.5:8443/validate/fail")
        );
        assert!(hook.client_config.service.is_none());
        let rule = &hook.rules.as_ref().unwrap()[0];
        assert_eq!(rule.api_groups, Some(vec!["*".into()]));
        assert_eq!(rule.resources, Some(vec!["*".into()]));
        assert!(register(&config, &target).mutating.is_none());
    }
}
