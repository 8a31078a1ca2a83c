//! A mutating Kubewarden policy, written as Kubewarden's Rust template writes
//! one: objects get the labels of the settings they lack.

use std::collections::BTreeMap;

use kubewarden_policy_sdk::request::ValidationRequest;
use kubewarden_policy_sdk::settings::Validatable;
use kubewarden_policy_sdk::wapc_guest::prelude::*;
use kubewarden_policy_sdk::{
    accept_request, mutate_request, protocol_version_guest, reject_request, validate_settings,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The labels to add.
#[derive(Serialize, Deserialize, Default, Debug)]
#[serde(default)]
struct Settings {
    labels: BTreeMap<String, String>,
}

impl Validatable for Settings {
    fn validate(&self) -> Result<(), String> {
        if self.labels.is_empty() {
            return Err("labels is empty: nothing to add".into());
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
    let request: ValidationRequest<Settings> = ValidationRequest::new(payload)?;
    let mut object = request.request.object;
    let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) else {
        return reject_request(Some("the object has no metadata".into()), None, None, None);
    };
    let Some(labels) = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
    else {
        return reject_request(
            Some("metadata.labels is not a map".into()),
            None,
            None,
            None,
        );
    };
    let mut changed = false;
    for (key, value) in request.settings.labels {
        if !labels.contains_key(&key) {
            labels.insert(key, Value::String(value));
            changed = true;
        }
    }
    if changed {
        mutate_request(object)
    } else {
        accept_request()
    }
}
