//! A validating Kubewarden policy, written as Kubewarden's Rust template
//! writes one: objects must carry the labels the settings require, and, when
//! `namespaceLabel` is set, the request's Namespace (read through the host's
//! `kubernetes` capability) must carry that label.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Namespace;
use kubewarden_policy_sdk::host_capabilities::kubernetes::{get_resource, GetResourceRequest};
use kubewarden_policy_sdk::request::ValidationRequest;
use kubewarden_policy_sdk::settings::Validatable;
use kubewarden_policy_sdk::wapc_guest::prelude::*;
use kubewarden_policy_sdk::{
    accept_request, logging, protocol_version_guest, reject_request, validate_settings,
};
use serde::{Deserialize, Serialize};
use slog::{info, o, Logger};

/// What the policy checks.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default, rename_all = "camelCase")]
struct Settings {
    /// Label keys every object must carry.
    required_labels: BTreeSet<String>,
    /// A label key the object's Namespace must carry.
    namespace_label: Option<String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.required_labels.is_empty() && self.namespace_label.is_none() {
            return Err(
                "requiredLabels is empty and namespaceLabel is unset: nothing to check".into(),
            );
        }
        if self.required_labels.iter().any(String::is_empty) {
            return Err("requiredLabels holds an empty label key".into());
        }
        Ok(())
    }
}

#[no_mangle]
pub extern "C" fn wapc_init() {
    register_function("validate", validate);
    register_function("validate_settings", validate_settings::<Settings>);
    register_function("protocol_version", protocol_version_guest);
}

fn validate(payload: &[u8]) -> CallResult {
    let log = Logger::root(
        logging::KubewardenDrain::new(),
        o!("policy" => "kw-require-labels"),
    );
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let labels = request
        .request
        .object
        .pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object);
    let missing: Vec<&str> = request
        .settings
        .required_labels
        .iter()
        .filter(|key| !labels.is_some_and(|labels| labels.contains_key(*key)))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        info!(log, "rejecting"; "missing" => missing.join(","));
        return reject_request(
            Some(format!("missing required labels: {}", missing.join(", "))),
            Some(422),
            None,
            Some(vec!["labels are required by kw-require-labels".into()]),
        );
    }
    if let Some(key) = &request.settings.namespace_label {
        let namespace: Namespace = get_resource(&GetResourceRequest {
            api_version: "v1".into(),
            kind: "Namespace".into(),
            name: request.request.namespace.clone(),
            namespace: None,
            disable_cache: false,
            field_masks: None,
        })?;
        let has = namespace
            .metadata
            .labels
            .is_some_and(|labels| labels.contains_key(key));
        if !has {
            return reject_request(
                Some(format!(
                    "namespace {} lacks the label {key}",
                    request.request.namespace
                )),
                None,
                None,
                None,
            );
        }
    }
    accept_request()
}
